import assert from "node:assert/strict";
import type { ServiceInstance } from "../../shared/discovery/service_discovery.ts";
import {
  type Clock,
  type InstanceChange,
  InstanceRegistry,
  type ServiceSnapshot,
} from "./registry.ts";

/** Time that moves only when told to, firing due timers in order. */
class FakeClock implements Clock {
  #now = Date.UTC(2026, 0, 1);
  #nextId = 0;
  readonly #timers = new Map<number, { due: number; callback: () => void }>();

  now(): number {
    return this.#now;
  }

  schedule(callback: () => void, delayMs: number): () => void {
    const id = this.#nextId++;
    this.#timers.set(id, { due: this.#now + delayMs, callback });
    return () => this.#timers.delete(id);
  }

  /** Timers set and not yet fired or cancelled. */
  get pending(): number {
    return this.#timers.size;
  }

  advance(ms: number): void {
    const target = this.#now + ms;
    for (;;) {
      const due = [...this.#timers].filter(([, timer]) => timer.due <= target)
        .sort(([, a], [, b]) => a.due - b.due)[0];
      if (due === undefined) break;
      this.#timers.delete(due[0]);
      this.#now = due[1].due;
      due[1].callback();
    }
    this.#now = target;
  }
}

function instance(id: string, overrides: Partial<ServiceInstance> = {}): ServiceInstance {
  return {
    service: "query",
    instanceId: id,
    baseUrl: `http://127.0.0.1:${8000 + Number(id.replace(/\D/g, "") || 0)}`,
    version: "1.0.0",
    metadata: { zone: "a" },
    ...overrides,
  };
}

function setup(options: { ttlMs?: number; warmupMs?: number } = {}) {
  const clock = new FakeClock();
  const changes: InstanceChange[] = [];
  const registry = new InstanceRegistry({
    ttlMs: options.ttlMs ?? 3000,
    warmupMs: options.warmupMs ?? 0,
    clock,
    onChange: (change) => changes.push(change),
  });
  const snapshots: ServiceSnapshot[] = [];
  registry.subscribe("query", (snapshot) => snapshots.push(snapshot));
  const ids = (snapshot: ServiceSnapshot) => snapshot.instances.map((i) => i.instanceId);
  return { clock, registry, changes, snapshots, ids };
}

Deno.test("registry registers, replaces and deregisters instances, notifying watchers", () => {
  const { clock, registry, changes, snapshots, ids } = setup();
  assert.equal(registry.register(instance("q2")).created, true);
  clock.advance(10);
  const first = registry.register(instance("q1"));
  assert.equal(first.created, true);
  assert.deepEqual(first.instance, {
    ...instance("q1"),
    registeredAt: clock.now(),
    lastHeartbeatAt: clock.now(),
  });
  assert.deepEqual(ids(registry.snapshot("query")), ["q1", "q2"]);
  assert.deepEqual(registry.services(), [{ service: "query", instances: 2 }]);

  clock.advance(100);
  const replaced = registry.register(instance("q1", { version: "1.1.0" }));
  assert.equal(replaced.created, false);
  assert.equal(replaced.instance.registeredAt, first.instance.registeredAt);
  assert.equal(replaced.instance.lastHeartbeatAt, clock.now());
  assert.equal(registry.snapshot("query").instances[0]!.version, "1.1.0");

  const unchanged = snapshots.length;
  registry.register(instance("q1", { version: "1.1.0" }));
  assert.equal(snapshots.length, unchanged, "an identical re-registration is no change");

  assert.equal(registry.deregister("query", "q2")?.instanceId, "q2");
  assert.equal(registry.deregister("query", "q2"), undefined);
  assert.deepEqual(snapshots.map(ids), [["q2"], ["q1", "q2"], ["q1", "q2"], ["q1"]]);
  assert.deepEqual(changes.map((change) => `${change.kind} ${change.instance.instanceId}`), [
    "registered q2",
    "registered q1",
    "replaced q1",
    "replaced q1",
    "deregistered q2",
  ]);
  registry.deregister("query", "q1");
  assert.deepEqual(registry.services(), []);
  registry.close();
});

Deno.test("registry renews known instances and refuses unknown ones", () => {
  const { clock, registry } = setup();
  assert.equal(registry.renew("query", "q1"), undefined);
  registry.register(instance("q1"));
  clock.advance(500);
  assert.equal(registry.renew("query", "q1")?.lastHeartbeatAt, clock.now());
  assert.equal(registry.renew("other", "q1"), undefined);
  registry.close();
});

Deno.test("registry evicts an instance exactly one TTL after its last heartbeat", () => {
  const { clock, registry, changes, snapshots, ids } = setup({ ttlMs: 3000 });
  registry.register(instance("q1"));
  registry.register(instance("q2"));
  clock.advance(2000);
  registry.renew("query", "q1");
  clock.advance(999);
  assert.deepEqual(ids(registry.snapshot("query")), ["q1", "q2"]);
  clock.advance(1);
  assert.deepEqual(ids(registry.snapshot("query")), ["q1"], "q2 is evicted at 3000 ms");
  clock.advance(1999);
  assert.deepEqual(ids(registry.snapshot("query")), ["q1"]);
  clock.advance(1);
  assert.deepEqual(ids(registry.snapshot("query")), [], "q1 is evicted 3000 ms after its renewal");
  assert.deepEqual(
    changes.filter((change) => change.kind === "evicted").map((change) => [
      change.instance.instanceId,
      change.at - change.instance.lastHeartbeatAt,
    ]),
    [["q2", 3000], ["q1", 3000]],
  );
  assert.deepEqual(snapshots.map(ids).slice(-2), [["q1"], []]);
  assert.deepEqual(registry.services(), []);
  registry.close();
});

Deno.test("registry runs one timer at most, and none when it has nothing to evict", () => {
  const { clock, registry } = setup({ ttlMs: 1000 });
  assert.equal(clock.pending, 0);
  for (let i = 0; i < 50; i++) {
    registry.register(instance(`q${i}`));
    clock.advance(7);
    assert.equal(clock.pending, 1);
  }
  for (let step = 0; step < 100; step++) {
    for (let i = 0; i < 25; i++) registry.renew("query", `q${i}`);
    clock.advance(50);
    assert.ok(clock.pending <= 1);
  }
  assert.equal(registry.snapshot("query").instances.length, 25, "the silent half is evicted");
  clock.advance(1000);
  assert.equal(registry.snapshot("query").instances.length, 0);
  assert.equal(clock.pending, 0);
  registry.register(instance("q1"));
  assert.equal(clock.pending, 1);
  registry.close();
  assert.equal(clock.pending, 0, "close() cancels the timer");
  clock.advance(5000);
  assert.equal(registry.snapshot("query").instances.length, 1, "nothing is evicted after close");
});

Deno.test("registry reports its warm-up and tells watchers when it ends", () => {
  const { clock, registry, snapshots } = setup({ ttlMs: 3000, warmupMs: 3000 });
  assert.equal(registry.warmingUp, true);
  assert.equal(clock.pending, 1);
  registry.register(instance("q1"));
  assert.equal(snapshots.at(-1)?.warmingUp, true);
  clock.advance(2000);
  registry.renew("query", "q1");
  clock.advance(1000);
  assert.equal(registry.warmingUp, false);
  assert.deepEqual(snapshots.map((s) => [s.warmingUp, s.instances.length]), [
    [true, 1],
    [false, 1],
  ]);
  assert.equal(registry.snapshot("query").warmingUp, false);
  registry.close();
});

Deno.test("registry unsubscribes listeners and rejects a bad TTL", () => {
  const clock = new FakeClock();
  const registry = new InstanceRegistry({ ttlMs: 1000, warmupMs: 0, clock });
  const seen: number[] = [];
  const unsubscribe = registry.subscribe("query", (s) => seen.push(s.instances.length));
  registry.register(instance("q1"));
  unsubscribe();
  registry.register(instance("q2"));
  assert.deepEqual(seen, [1]);
  registry.close();
  assert.throws(() => new InstanceRegistry({ ttlMs: 0, clock }), RangeError);
  assert.throws(() => new InstanceRegistry({ ttlMs: 10, warmupMs: -1, clock }), RangeError);
});
