/** Rate-limit counts in Redis (RATE_LIMIT_STORE=redis). */
import { Redis } from "ioredis";
import type { RateLimitStore } from "../../shared/rate_limit/rate_limit_store.ts";
import { RedisRateLimitStore } from "../../shared/rate_limit/redis_rate_limit_store.ts";
import type { Tracer } from "../../shared/trace/tracing.ts";

/** The store at `redisUrl`; its calls are spans of `tracer` (the gateway's). */
export function redisRateLimitStore(redisUrl: string, tracer: Tracer | undefined): RateLimitStore {
  // Connected at once, so the first request finds it ready. Commands fail
  // fast while Redis is down (no offline queue): the gateway then counts
  // in process and its rate limiter logs the outage; ioredis's own error
  // events would only repeat that on every reconnect.
  // No auto-pipelining: the store sends the hits made meanwhile as one command itself.
  const client = new Redis(redisUrl, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
  });
  client.on("error", () => {});
  return new RedisRateLimitStore(client, tracer === undefined ? {} : { tracer });
}
