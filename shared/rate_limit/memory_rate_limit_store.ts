/**
 * The embedded rate-limit store: an exact sliding-window log per key, in
 * this process only. Memory stays bounded: each hit trims its key's expired
 * hits, and at most once per `sweepIntervalMs` a hit sweeps every key and
 * drops those whose hits have all left their window (no timers).
 */

import {
  checkHitArguments,
  type RateLimitDecision,
  type RateLimitStore,
  RateLimitStoreClosedError,
} from "./rate_limit_store.ts";

export interface MemoryRateLimitStoreOptions {
  /**
   * The clock, in milliseconds; it must never go back. Tests inject a fake one.
   * @default performance.now (monotonic)
   */
  readonly now?: () => number;
  /**
   * The least time between two sweeps of every key for expired hits.
   * @default 60_000
   */
  readonly sweepIntervalMs?: number;
}

interface KeyLog {
  /** Times of the admitted hits still in the window, oldest first. */
  readonly hits: number[];
  /** The window of the latest hit, which the sweep uses. */
  windowMs: number;
}

export class MemoryRateLimitStore implements RateLimitStore {
  readonly #now: () => number;
  readonly #sweepIntervalMs: number;
  readonly #logs = new Map<string, KeyLog>();
  #lastSweep: number;
  #closed = false;

  constructor(options: MemoryRateLimitStoreOptions = {}) {
    const { now = () => performance.now(), sweepIntervalMs = 60_000 } = options;
    this.#now = now;
    this.#sweepIntervalMs = sweepIntervalMs;
    this.#lastSweep = now();
  }

  /** How many keys hold hits, for tests of the memory bound. */
  get size(): number {
    return this.#logs.size;
  }

  hit(key: string, limit: number, windowMs: number): Promise<RateLimitDecision> {
    try {
      return Promise.resolve(this.#hit(key, limit, windowMs));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #hit(key: string, limit: number, windowMs: number): RateLimitDecision {
    this.#checkOpen();
    checkHitArguments(key, limit, windowMs);
    const now = this.#now();
    this.#sweepIfDue(now);
    const log = this.#logs.get(key) ?? { hits: [], windowMs };
    log.windowMs = windowMs;
    const { hits } = log;
    // A hit at time t is in the window while now < t + windowMs.
    let expired = 0;
    while (expired < hits.length && hits[expired]! <= now - windowMs) expired++;
    hits.splice(0, expired);
    // An empty window always admits, so a key here always holds a hit.
    const allowed = hits.length < limit;
    if (allowed) hits.push(now);
    this.#logs.set(key, log);
    const count = hits.length;
    return {
      allowed,
      limit,
      remaining: allowed ? limit - count : 0,
      resetAfterMs: Math.ceil(hits[0]! + windowMs - now),
      // Rejected: the window holds count >= limit hits; one is admitted again
      // once count - limit + 1 of them have left.
      retryAfterMs: allowed ? 0 : Math.ceil(hits[count - limit]! + windowMs - now),
    };
  }

  ping(): Promise<void> {
    try {
      this.#checkOpen();
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#logs.clear();
    return Promise.resolve();
  }

  #checkOpen(): void {
    if (this.#closed) throw new RateLimitStoreClosedError();
  }

  #sweepIfDue(now: number): void {
    if (now - this.#lastSweep < this.#sweepIntervalMs) return;
    this.#lastSweep = now;
    for (const [key, log] of this.#logs) {
      const newest = log.hits.at(-1);
      if (newest === undefined || newest <= now - log.windowMs) this.#logs.delete(key);
    }
  }
}
