/**
 * The shared rate-limit store: one sorted set per key in Redis, scored by
 * the time of each admitted hit, updated by one Lua script so that a hit is
 * atomic across every gateway instance. The script reads Redis's own clock
 * (`TIME`), so the instances share one clock and their own clocks' skew
 * does not matter. (Redis 7 replicates a script's effects rather than the
 * script, so `TIME` before a write is allowed.)
 */

import type { Redis } from "ioredis";
import { SpanKind, trace } from "@opentelemetry/api";
import { inLeafSpan, type SpanOptions, type Tracer } from "../trace/tracing.ts";
import {
  checkHitArguments,
  type RateLimitDecision,
  type RateLimitStore,
  RateLimitStoreClosedError,
} from "./rate_limit_store.ts";

export interface RedisRateLimitStoreOptions {
  /**
   * Prefix of every Redis key the store writes.
   * @default "rate-limit:"
   */
  readonly keyPrefix?: string;
  /**
   * The calling service's tracer: each run of the script is a CLIENT span.
   * @default the API's global tracer (a no-op unless one is registered)
   */
  readonly tracer?: Tracer;
}

/**
 * KEYS[1]: the key's sorted set. ARGV: limit, window in ms, a unique member.
 * Scores are microseconds of Redis's clock. Returns { allowed (1 or 0),
 * hits in the window, microseconds until the oldest leaves, microseconds
 * until a hit would be admitted (0 when admitted) }.
 */
const SLIDING_WINDOW_SCRIPT = `
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local window = window_ms * 1000
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window_ms)
  count = count + 1
  allowed = 1
end
local reset = 0
if count > 0 then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  reset = tonumber(oldest[2]) + window - now
end
local retry = 0
if allowed == 0 then
  local freeing = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  retry = tonumber(freeing[2]) + window - now
end
return { allowed, count, reset, retry }
`;

/**
 * A rate-limit store on a ready ioredis client, which it takes over: `close`
 * quits the client.
 */
export class RedisRateLimitStore implements RateLimitStore {
  readonly #client: Redis;
  readonly #keyPrefix: string;
  readonly #tracer: Tracer;
  /** The same for every run of the script: built once. */
  readonly #spanOptions: SpanOptions;
  #sha: Promise<string> | undefined;
  #closed = false;

  constructor(client: Redis, options: RedisRateLimitStoreOptions = {}) {
    const { keyPrefix = "rate-limit:" } = options;
    this.#client = client;
    this.#keyPrefix = keyPrefix;
    this.#tracer = options.tracer ?? trace.getTracer("twitterapi");
    const { host, port } = client.options;
    this.#spanOptions = {
      kind: SpanKind.CLIENT,
      attributes: {
        "db.system.name": "redis",
        "db.operation.name": "EVALSHA",
        "db.stored_procedure.name": "sliding_window",
        ...(host === undefined ? {} : { "server.address": host }),
        ...(port === undefined ? {} : { "server.port": port }),
      },
    };
  }

  async hit(key: string, limit: number, windowMs: number): Promise<RateLimitDecision> {
    this.#checkOpen();
    checkHitArguments(key, limit, windowMs);
    const reply = await this.#run(this.#keyPrefix + key, [
      String(limit),
      String(windowMs),
      crypto.randomUUID(),
    ]);
    if (!Array.isArray(reply) || reply.length !== 4 || !reply.every(Number.isSafeInteger)) {
      throw new Error(
        `Cannot hit rate limit '${key}': the script answered ${JSON.stringify(reply)}`,
      );
    }
    const [allowed, count, resetUs, retryUs] = reply as [number, number, number, number];
    return {
      allowed: allowed === 1,
      limit,
      remaining: allowed === 1 ? Math.max(0, limit - count) : 0,
      resetAfterMs: Math.ceil(resetUs / 1000),
      retryAfterMs: Math.ceil(retryUs / 1000),
    };
  }

  async ping(): Promise<void> {
    this.#checkOpen();
    const answer = await this.#client.ping();
    if (answer !== "PONG") throw new Error(`Cannot ping Redis: it answered ${answer}`);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#client.status === "ready") {
      await this.#client.quit().catch(() => this.#client.disconnect());
    } else {
      this.#client.disconnect();
    }
  }

  #checkOpen(): void {
    if (this.#closed) throw new RateLimitStoreClosedError();
  }

  /**
   * Runs the script as a CLIENT span `EVALSHA sliding_window` (the key,
   * which names a user, stays out of it).
   */
  #run(redisKey: string, args: readonly string[]): Promise<unknown> {
    return inLeafSpan(
      this.#tracer,
      "EVALSHA sliding_window",
      this.#spanOptions,
      (span) =>
        this.#runScript(redisKey, args, () => {
          span.setAttribute("db.operation.name", "EVAL");
        }),
    );
  }

  /** Runs the script by its SHA (loaded once), falling back to EVAL when Redis forgot it. */
  async #runScript(
    redisKey: string,
    args: readonly string[],
    onFallback: () => void,
  ): Promise<unknown> {
    this.#sha ??= this.#client.script("LOAD", SLIDING_WINDOW_SCRIPT) as Promise<string>;
    let sha: string;
    try {
      sha = await this.#sha;
    } catch (error) {
      this.#sha = undefined;
      throw error;
    }
    try {
      return await this.#client.evalsha(sha, 1, redisKey, ...args);
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith("NOSCRIPT"))) throw error;
      // Redis restarted or its script cache was flushed; EVAL caches it again.
      onFallback();
      return await this.#client.eval(SLIDING_WINDOW_SCRIPT, 1, redisKey, ...args);
    }
  }
}
