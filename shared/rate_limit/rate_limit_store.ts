/**
 * The rate-limit store port: an exact sliding-window log per key, so that
 * every gateway instance sharing one store enforces one limit together.
 *
 * Adapters: `MemoryRateLimitStore` (embedded, one process) and
 * `RedisRateLimitStore` (shared, atomic Lua on Redis's clock). Every adapter
 * must pass `rate_limit_store_contract.ts`.
 */

/** The outcome of one hit. Times are whole milliseconds, rounded up. */
export interface RateLimitDecision {
  /** Whether the hit was admitted (and recorded). Rejected hits are not recorded. */
  readonly allowed: boolean;
  /** The limit the hit was checked against. */
  readonly limit: number;
  /** How many more hits the window admits right now, after this one. */
  readonly remaining: number;
  /**
   * Until the oldest admitted hit in the window leaves it (one slot frees);
   * 0 when the window holds no hit.
   */
  readonly resetAfterMs: number;
  /** Until a hit would be admitted again; 0 when this hit was admitted. */
  readonly retryAfterMs: number;
}

export interface RateLimitStore {
  /**
   * Admits the hit iff fewer than `limit` hits were admitted for `key` in the
   * last `windowMs` milliseconds, and records it if so; atomic per key.
   * `limit` and `windowMs` are positive integers (`RangeError` otherwise).
   */
  hit(key: string, limit: number, windowMs: number): Promise<RateLimitDecision>;
  /** Resolves when the store is reachable; rejects with the reason otherwise. */
  ping(): Promise<void>;
  /** Releases the store's resources; later calls reject with `RateLimitStoreClosedError`. */
  close(): Promise<void>;
}

export class RateLimitStoreClosedError extends Error {
  readonly code = "rate-limit-store-closed";
  constructor() {
    super("Cannot use the rate-limit store: it is closed");
    this.name = "RateLimitStoreClosedError";
  }
}

/** Throws `RangeError` unless `limit` and `windowMs` are positive safe integers. */
export function checkHitArguments(key: string, limit: number, windowMs: number): void {
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new RangeError(
      `Cannot hit rate limit '${key}' as 'limit' must be a positive integer: current value is ${limit}`,
    );
  }
  if (!Number.isSafeInteger(windowMs) || windowMs < 1) {
    throw new RangeError(
      `Cannot hit rate limit '${key}' as 'windowMs' must be a positive integer: current value is ${windowMs}`,
    );
  }
}
