/**
 * The registry's domain: an in-memory table of service instances, kept alive
 * by heartbeats and evicted when they stop, with change notifications for
 * watchers. Time comes from an injectable clock and drives ONE timer, always
 * set for the next moment the table can change on its own: the earliest
 * expiry, or the end of the warm-up.
 *
 * Warm-up: a registry that just started (or restarted) knows only the
 * instances that re-registered so far; until one TTL has passed every live
 * instance has not necessarily renewed yet. Snapshots say so (`warmingUp`),
 * so clients can keep the instances they knew instead of dropping them, and
 * watchers get a fresh snapshot the moment the warm-up ends.
 */
import type { ServiceInstance } from "../../shared/discovery/service_discovery.ts";

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Calls `callback` once after `delayMs`; the returned function cancels the call. */
  schedule(callback: () => void, delayMs: number): () => void;
}

/**
 * The process clock: epoch milliseconds from the monotonic clock, so a wall
 * clock step (NTP) neither evicts every instance at once nor delays evictions.
 */
export const systemClock: Clock = {
  now: () => Math.round(performance.timeOrigin + performance.now()),
  schedule(callback, delayMs) {
    const timer = setTimeout(callback, delayMs);
    return () => clearTimeout(timer);
  },
};

export interface RegisteredInstance extends ServiceInstance {
  /** When the instance first registered (epoch ms); kept when it registers again. */
  readonly registeredAt: number;
  /** Its last registration or heartbeat (epoch ms). */
  readonly lastHeartbeatAt: number;
}

export interface ServiceSnapshot {
  readonly service: string;
  /** Sorted by instance id. */
  readonly instances: readonly RegisteredInstance[];
  /** The registry started less than a warm-up ago: live instances may still be missing. */
  readonly warmingUp: boolean;
}

export type InstanceChangeKind = "registered" | "replaced" | "deregistered" | "evicted";

/** One change of the table, for logs and metrics. */
export interface InstanceChange {
  readonly kind: InstanceChangeKind;
  readonly instance: RegisteredInstance;
  /** When it happened (epoch ms). */
  readonly at: number;
}

export interface InstanceRegistryOptions {
  /** An instance without a heartbeat for this long is evicted. */
  readonly ttlMs: number;
  /**
   * How long after its creation the registry reports `warmingUp`; 0 for none.
   * @default ttlMs
   */
  readonly warmupMs?: number;
  /** @default systemClock */
  readonly clock?: Clock;
  /** Told of every registration, replacement, deregistration and eviction. */
  readonly onChange?: (change: InstanceChange) => void;
}

export interface Registration {
  readonly instance: RegisteredInstance;
  /** False when the instance id was registered already and has been replaced. */
  readonly created: boolean;
}

export type SnapshotListener = (snapshot: ServiceSnapshot) => void;

function sameRegistration(a: ServiceInstance, b: ServiceInstance): boolean {
  if (a.baseUrl !== b.baseUrl || a.version !== b.version) return false;
  const keys = Object.keys(a.metadata);
  return keys.length === Object.keys(b.metadata).length &&
    keys.every((key) => Object.hasOwn(b.metadata, key) && a.metadata[key] === b.metadata[key]);
}

function byInstanceId(a: RegisteredInstance, b: RegisteredInstance): number {
  return a.instanceId < b.instanceId ? -1 : a.instanceId > b.instanceId ? 1 : 0;
}

export class InstanceRegistry {
  readonly ttlMs: number;
  readonly #clock: Clock;
  readonly #onChange: ((change: InstanceChange) => void) | undefined;
  readonly #warmupEndsAt: number;
  #warmingUp: boolean;
  /** service -> instance id -> instance */
  readonly #services = new Map<string, Map<string, RegisteredInstance>>();
  readonly #listeners = new Map<string, Set<SnapshotListener>>();
  /** When the one timer fires; undefined while none is set. */
  #timerDueAt: number | undefined;
  #cancelTimer: (() => void) | undefined;
  #closed = false;

  constructor(options: InstanceRegistryOptions) {
    const { ttlMs, warmupMs = options.ttlMs, clock = systemClock } = options;
    if (!Number.isInteger(ttlMs) || ttlMs < 1) {
      throw new RangeError(
        `Cannot create the registry as 'ttlMs' must be a positive integer: current value is ${ttlMs}`,
      );
    }
    if (!Number.isInteger(warmupMs) || warmupMs < 0) {
      throw new RangeError(
        `Cannot create the registry as 'warmupMs' must be an integer >= 0: current value is ${warmupMs}`,
      );
    }
    this.ttlMs = ttlMs;
    this.#clock = clock;
    this.#onChange = options.onChange;
    this.#warmingUp = warmupMs > 0;
    this.#warmupEndsAt = clock.now() + warmupMs;
    this.#schedule();
  }

  get warmingUp(): boolean {
    return this.#warmingUp;
  }

  /** Adds the instance, or replaces the one with its id; either way it counts as a heartbeat. */
  register(instance: ServiceInstance): Registration {
    const now = this.#clock.now();
    let table = this.#services.get(instance.service);
    if (table === undefined) {
      table = new Map();
      this.#services.set(instance.service, table);
    }
    const previous = table.get(instance.instanceId);
    const registered: RegisteredInstance = {
      service: instance.service,
      instanceId: instance.instanceId,
      baseUrl: instance.baseUrl,
      version: instance.version,
      metadata: Object.freeze({ ...instance.metadata }),
      registeredAt: previous?.registeredAt ?? now,
      lastHeartbeatAt: now,
    };
    table.set(instance.instanceId, registered);
    this.#onChange?.({
      kind: previous === undefined ? "registered" : "replaced",
      instance: registered,
      at: now,
    });
    if (previous === undefined || !sameRegistration(previous, registered)) {
      this.#notify(instance.service);
    }
    this.#schedule();
    return { instance: registered, created: previous === undefined };
  }

  /** Records a heartbeat; undefined when the instance is unknown (evicted, or never registered here). */
  renew(service: string, instanceId: string): RegisteredInstance | undefined {
    const table = this.#services.get(service);
    const previous = table?.get(instanceId);
    if (table === undefined || previous === undefined) return undefined;
    const renewed = { ...previous, lastHeartbeatAt: this.#clock.now() };
    table.set(instanceId, renewed);
    return renewed;
  }

  /** Removes the instance; undefined when it is unknown. */
  deregister(service: string, instanceId: string): RegisteredInstance | undefined {
    const table = this.#services.get(service);
    const removed = table?.get(instanceId);
    if (table === undefined || removed === undefined) return undefined;
    this.#remove(table, removed);
    this.#onChange?.({ kind: "deregistered", instance: removed, at: this.#clock.now() });
    this.#notify(service);
    return removed;
  }

  snapshot(service: string): ServiceSnapshot {
    const instances = [...(this.#services.get(service)?.values() ?? [])].sort(byInstanceId);
    return { service, instances, warmingUp: this.#warmingUp };
  }

  /** Every service with at least one instance, by name. */
  services(): { service: string; instances: number }[] {
    return [...this.#services].map(([service, table]) => ({ service, instances: table.size }))
      .sort((a, b) => a.service < b.service ? -1 : a.service > b.service ? 1 : 0);
  }

  /**
   * Calls `listener` with the service's snapshot after every change of its
   * instances (and when the warm-up ends); heartbeats alone are no change.
   * Returns the function that unsubscribes.
   */
  subscribe(service: string, listener: SnapshotListener): () => void {
    let listeners = this.#listeners.get(service);
    if (listeners === undefined) {
      listeners = new Set();
      this.#listeners.set(service, listeners);
    }
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0 && this.#listeners.get(service) === listeners) {
        this.#listeners.delete(service);
      }
    };
  }

  /** Cancels the timer: nothing is evicted any more. The table stays readable. */
  close(): void {
    this.#closed = true;
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    this.#timerDueAt = undefined;
  }

  #remove(table: Map<string, RegisteredInstance>, instance: RegisteredInstance): void {
    table.delete(instance.instanceId);
    if (table.size === 0) this.#services.delete(instance.service);
  }

  #notify(service: string): void {
    const listeners = this.#listeners.get(service);
    if (listeners === undefined) return;
    const snapshot = this.snapshot(service);
    for (const listener of [...listeners]) listener(snapshot);
  }

  /**
   * Sets the timer for the next deadline unless one is set: a registration's
   * deadline is never earlier than a pending one, and a heartbeat only moves
   * deadlines later, so a pending timer is at worst early, never late.
   */
  #schedule(): void {
    if (this.#closed || this.#timerDueAt !== undefined) return;
    let next = this.#warmingUp ? this.#warmupEndsAt : Infinity;
    for (const table of this.#services.values()) {
      for (const instance of table.values()) {
        next = Math.min(next, instance.lastHeartbeatAt + this.ttlMs);
      }
    }
    if (next === Infinity) return;
    this.#timerDueAt = next;
    this.#cancelTimer = this.#clock.schedule(
      () => this.#sweep(),
      Math.max(0, next - this.#clock.now()),
    );
  }

  #sweep(): void {
    this.#timerDueAt = undefined;
    this.#cancelTimer = undefined;
    if (this.#closed) return;
    const now = this.#clock.now();
    const changed = new Set<string>();
    for (const table of [...this.#services.values()]) {
      for (const instance of [...table.values()]) {
        if (instance.lastHeartbeatAt + this.ttlMs > now) continue;
        this.#remove(table, instance);
        changed.add(instance.service);
        this.#onChange?.({ kind: "evicted", instance, at: now });
      }
    }
    if (this.#warmingUp && now >= this.#warmupEndsAt) {
      this.#warmingUp = false;
      for (const service of this.#listeners.keys()) changed.add(service);
    }
    for (const service of changed) this.#notify(service);
    this.#schedule();
  }
}
