/**
 * The shared rate-limit store: one sorted set per key in Redis, scored by
 * the time of each admitted hit, updated by one Lua script so that a hit is
 * atomic across every gateway instance. The script reads Redis's own clock
 * (`TIME`), so the instances share one clock and their own clocks' skew
 * does not matter. (Redis 7 replicates a script's effects rather than the
 * script, so `TIME` before a write is allowed.)
 */

import type { Redis } from "ioredis";
import { type Context, context, type Link, SpanKind, trace } from "@opentelemetry/api";
import {
  inLeafSpan,
  type SpanAttributes,
  type SpanOptions,
  type Tracer,
} from "../trace/tracing.ts";
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
 * Hits of several keys in one run, each as if they came one after another
 * at the same instant. KEYS: the keys' sorted sets (one entry per key, limit
 * and window). ARGV: the member prefix, then per key its limit, window in ms,
 * hits, and the sequence number of its first member. Scores are microseconds
 * of Redis's clock. Returns per key { hits in the window before these, hits
 * admitted, microseconds until the oldest leaves, microseconds until a hit
 * would be admitted (0 when every hit was admitted) }.
 */
const SLIDING_WINDOW_SCRIPT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local prefix = ARGV[1]
local results = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local base = (i - 1) * 4 + 1
  local limit = tonumber(ARGV[base + 1])
  local window_ms = tonumber(ARGV[base + 2])
  local hits = tonumber(ARGV[base + 3])
  local first = tonumber(ARGV[base + 4])
  local window = window_ms * 1000
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local before = redis.call('ZCARD', key)
  local admitted = math.min(hits, math.max(0, limit - before))
  if admitted > 0 then
    local members = {}
    for j = 0, admitted - 1 do
      members[j * 2 + 1] = now
      members[j * 2 + 2] = prefix .. (first + j)
    end
    redis.call('ZADD', key, unpack(members))
    redis.call('PEXPIRE', key, window_ms)
  end
  local count = before + admitted
  local reset = 0
  if count > 0 then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    reset = tonumber(oldest[2]) + window - now
  end
  local retry = 0
  if admitted < hits then
    local freeing = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    retry = tonumber(freeing[2]) + window - now
  end
  results[i] = { before, admitted, reset, retry }
end
return results
`;

/**
 * Most hits in one run of the script (its members pass through Lua's stack,
 * about 8000 slots); more wait for the next run.
 */
const MAX_HITS_PER_RUN = 1000;

/** One caller's hit, waiting for the run that decides it. */
interface PendingHit {
  readonly key: string;
  readonly limit: number;
  readonly windowMs: number;
  /** The caller's context: the run's span is a child of the first caller's, linked to the others'. */
  readonly caller: Context;
  readonly resolve: (decision: RateLimitDecision) => void;
  readonly reject: (error: unknown) => void;
}

/** The hits of one run with the same key, limit and window. */
interface KeyHits {
  readonly key: string;
  readonly limit: number;
  readonly windowMs: number;
  readonly hits: PendingHit[];
}

/**
 * A rate-limit store on a ready ioredis client, which it takes over: `close`
 * quits the client.
 *
 * Hits made while a run of the script is on its way wait and go together in
 * the next run, one command for all of them: a command per hit (its write
 * through Node compatibility, its reply, its promise) was the largest part of
 * the gateway's cost per request. The limit stays exact: a run is atomic on
 * Redis, and decides its hits of one key as that many hits one after another.
 */
export class RedisRateLimitStore implements RateLimitStore {
  readonly #client: Redis;
  readonly #keyPrefix: string;
  readonly #tracer: Tracer;
  /** The same for every run of the script: built once. */
  readonly #spanOptions: SpanOptions & { readonly attributes: SpanAttributes };
  /** Unique to this store, so that its members never meet another gateway's. */
  readonly #memberPrefix = `${crypto.randomUUID()}:`;
  #memberSequence = 0;
  #pending: PendingHit[] = [];
  #running = false;
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
    return await new Promise<RateLimitDecision>((resolve, reject) => {
      this.#pending.push({
        key: this.#keyPrefix + key,
        limit,
        windowMs,
        caller: context.active(),
        resolve,
        reject,
      });
      // The hits of this turn of the event loop go in the first run together.
      if (!this.#running) {
        this.#running = true;
        queueMicrotask(() => void this.#runPending());
      }
    });
  }

  /** Runs the script for the pending hits, and again for those made meanwhile, until none is left. */
  async #runPending(): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0, MAX_HITS_PER_RUN);
      try {
        await this.#decide(batch);
      } catch (error) {
        for (const hit of batch) hit.reject(error);
      }
    }
    this.#running = false;
  }

  async #decide(batch: readonly PendingHit[]): Promise<void> {
    const groups = new Map<string, KeyHits>();
    for (const hit of batch) {
      const id = `${hit.limit}/${hit.windowMs}/${hit.key}`;
      let group = groups.get(id);
      if (group === undefined) {
        group = { key: hit.key, limit: hit.limit, windowMs: hit.windowMs, hits: [] };
        groups.set(id, group);
      }
      group.hits.push(hit);
    }
    const keys: string[] = [];
    const args: string[] = [this.#memberPrefix];
    for (const group of groups.values()) {
      keys.push(group.key);
      args.push(
        String(group.limit),
        String(group.windowMs),
        String(group.hits.length),
        String(this.#memberSequence),
      );
      this.#memberSequence += group.hits.length;
    }
    const reply = await this.#run(batch, keys, args);
    if (!Array.isArray(reply) || reply.length !== groups.size) {
      throw new Error(`Cannot hit rate limits: the script answered ${JSON.stringify(reply)}`);
    }
    let index = 0;
    for (const group of groups.values()) {
      const result: unknown = reply[index++];
      if (!Array.isArray(result) || result.length !== 4 || !result.every(Number.isSafeInteger)) {
        const error = new Error(
          `Cannot hit rate limit '${group.key.slice(this.#keyPrefix.length)}': the script ` +
            `answered ${JSON.stringify(result)}`,
        );
        for (const hit of group.hits) hit.reject(error);
        continue;
      }
      const [before, admitted, resetUs, retryUs] = result as [number, number, number, number];
      const { limit } = group;
      const resetAfterMs = Math.ceil(resetUs / 1000);
      group.hits.forEach((hit, position) => {
        const allowed = position < admitted;
        hit.resolve({
          allowed,
          limit,
          remaining: allowed ? Math.max(0, limit - before - position - 1) : 0,
          resetAfterMs,
          retryAfterMs: allowed ? 0 : Math.ceil(retryUs / 1000),
        });
      });
    }
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
   * Runs the script as a CLIENT span `EVALSHA sliding_window` of the first
   * caller, linked to the other callers' spans (the keys, which name users,
   * stay out of it).
   */
  #run(batch: readonly PendingHit[], keys: readonly string[], args: readonly string[]) {
    const links: Link[] = [];
    for (let index = 1; index < batch.length; index++) {
      const caller = trace.getSpanContext(batch[index]!.caller);
      if (caller !== undefined) links.push({ context: caller });
    }
    return inLeafSpan(
      this.#tracer,
      "EVALSHA sliding_window",
      {
        ...this.#spanOptions,
        parent: batch[0]!.caller,
        ...(links.length === 0 ? {} : { links }),
        ...(batch.length === 1 ? {} : {
          attributes: { ...this.#spanOptions.attributes, "db.operation.batch.size": batch.length },
        }),
      },
      (span) =>
        this.#runScript(keys, args, () => {
          span.setAttribute("db.operation.name", "EVAL");
        }),
    );
  }

  /** Runs the script by its SHA (loaded once), falling back to EVAL when Redis forgot it. */
  async #runScript(
    keys: readonly string[],
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
      return await this.#client.evalsha(sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith("NOSCRIPT"))) throw error;
      // Redis restarted or its script cache was flushed; EVAL caches it again.
      onFallback();
      return await this.#client.eval(SLIDING_WINDOW_SCRIPT, keys.length, ...keys, ...args);
    }
  }
}
