/**
 * Rate limiting at the HTTP edge: one sliding-window policy per middleware,
 * counted in a shared `RateLimitStore` (Redis in production) so that every
 * gateway instance enforces one limit together.
 *
 * When the shared store fails, the middleware keeps serving: it counts in an
 * in-process `fallback` store, admitting its share of the limit (the limit
 * divided by the instances that count it, `sharing`, rounded down, at least
 * 1: together they admit at most the limit, or one request per instance when
 * the limit is smaller than their number), logs one warning for the outage,
 * reports the degraded state through `status()` and `readiness`, and tries the shared
 * store again at most once per `retryIntervalMs` until it answers. A store
 * outage never turns into a 5xx.
 *
 * Response fields follow draft-ietf-httpapi-ratelimit-headers-10 (the named
 * policy form introduced in -08):
 *
 *   RateLimit-Policy: "<policy>";q=<limit>;w=<window seconds>
 *   RateLimit: "<policy>";r=<remaining>;t=<seconds until a unit returns>
 *
 * With a sliding window, quota comes back one unit at a time, so `t` is the
 * time until the oldest counted request leaves the window (when refused, the
 * time until a request would be admitted again, as `Retry-After`).
 */
import type { Context, MiddlewareHandler } from "hono";
import { getConnInfo } from "hono/deno";
import { Deadlines } from "../async/deadlines.ts";
import type { Logger } from "../log/log.ts";
import type { Counter, Gauge, MetricsRegistry } from "../metrics/metrics.ts";
import { MemoryRateLimitStore } from "../rate_limit/memory_rate_limit_store.ts";
import type { RateLimitDecision, RateLimitStore } from "../rate_limit/rate_limit_store.ts";
import { ProblemError, problemResponse } from "./problem.ts";
import { setResponseHeaders } from "./response_headers.ts";
import type { ReadinessCheck } from "./service_app.ts";

/** One limit: at most `limit` requests per key in any `windowMs` milliseconds. */
export interface RateLimitPolicy {
  /**
   * Names the policy in the response fields, the store keys and the metrics:
   * letters, digits, `.`, `_` and `-`.
   */
  readonly name: string;
  /** A positive integer. */
  readonly limit: number;
  /** A positive integer. */
  readonly windowMs: number;
}

/** The logger methods the middleware uses; a service's `Logger` has them. */
export type RateLimitLogger = Pick<Logger, "warn" | "info">;

export interface RateLimitOptions {
  /** Where the requests are counted: the Redis store in production, shared by every instance. */
  readonly store: RateLimitStore;
  /**
   * Counts the requests while `store` fails, so the gateway keeps serving. Its
   * counts are this process's only: during an outage each instance admits its
   * share of the limit (see `sharing`).
   * @default new MemoryRateLimitStore()
   */
  readonly fallback?: RateLimitStore;
  /**
   * How many instances (this one included) enforce the limit together, read
   * on every request counted in process: each admits
   * `max(1, floor(limit / sharing()))` per window while the store fails.
   * @default () => 1
   */
  readonly sharing?: () => number;
  /**
   * What one of the instances is called in the status.
   * @default "instance"
   */
  readonly instanceNoun?: string;
  /**
   * The policy, or a live source of it (read on every request, so a refreshed
   * configuration changes the limit at once); its name must not change.
   */
  readonly policy: RateLimitPolicy | (() => RateLimitPolicy);
  /**
   * Who a request counts against.
   * @default the subject of the access token under `accessToken` in the
   * context (`subject:<sub>`), else the client address (`address:<ip>`): the
   * connection's peer, or with `trustForwardedFor` the last X-Forwarded-For entry
   */
  readonly key?: (c: Context) => string;
  /**
   * Whether the default key trusts X-Forwarded-For: only when exactly one
   * proxy of ours stands in front and appends the peer it saw. Otherwise any
   * client could pick its own key.
   * @default false
   */
  readonly trustForwardedFor?: boolean;
  /** Logs the start and the end of each store outage. */
  readonly logger: RateLimitLogger;
  /** Registers `rate_limit_decisions_total` and `rate_limit_store_fallback`. */
  readonly metrics?: MetricsRegistry;
  /**
   * What the status names when the store fails.
   * @default "Redis"
   */
  readonly storeName?: string;
  /**
   * The least time between two tries of a failing store.
   * @default 1000
   */
  readonly retryIntervalMs?: number;
  /**
   * The longest wait for the store to answer one hit before the fallback
   * counts it (a hit the store records late then counts twice, which errs on
   * the side of limiting).
   * @default 1000
   */
  readonly storeTimeoutMs?: number;
  /**
   * The clock of the retry interval, in milliseconds; tests inject a fake one.
   * @default performance.now (monotonic)
   */
  readonly now?: () => number;
}

/** Where a policy's requests are counted right now. */
export type RateLimitStatus =
  | { readonly mode: "shared" }
  | {
    readonly mode: "in-process";
    /**
     * For `/ready`: "Redis unreachable; counting locally: 300 of 600 per 60 s
     * per gateway, 2 gateways".
     */
    readonly detail: string;
    /** What this instance admits per window while it counts alone. */
    readonly localLimit: number;
    /** The instances sharing the limit. */
    readonly instances: number;
    /** The store's last error. */
    readonly error: string;
    /** When the outage began, as an ISO date. */
    readonly since: string;
  };

/** The middleware, with its store status for `/ready`. */
export type RateLimitMiddleware = MiddlewareHandler & {
  status(): RateLimitStatus;
  /**
   * A non-critical check: it fails while requests are counted in process,
   * with `status().detail`, so `/ready` says `degraded` and stays 200. While
   * it fails and the retry interval has passed, it pings the store, so the
   * status recovers even without traffic.
   */
  readonly readiness: ReadinessCheck;
};

const POLICY_NAME = /^[A-Za-z0-9._-]+$/;

interface RateLimitMetrics {
  readonly decisions: Counter;
  readonly fallback: Gauge;
}

/** One set of metrics per registry, shared by every policy registered on it. */
const registeredMetrics = new WeakMap<MetricsRegistry, RateLimitMetrics>();

function rateLimitMetrics(registry: MetricsRegistry): RateLimitMetrics {
  let metrics = registeredMetrics.get(registry);
  if (metrics === undefined) {
    metrics = {
      decisions: registry.counter(
        "rate_limit_decisions_total",
        "Rate-limit decisions, by policy and outcome (allowed or limited).",
      ),
      fallback: registry.gauge(
        "rate_limit_store_fallback",
        "1 while a policy counts requests in process because its shared store fails, else 0.",
      ),
    };
    registeredMetrics.set(registry, metrics);
  }
  return metrics;
}

function checkPolicy(policy: RateLimitPolicy): void {
  if (!POLICY_NAME.test(policy.name)) {
    throw new TypeError(
      `Cannot create rate limit as 'policy.name' must be letters, digits, '.', '_' or '-': current value is ${
        JSON.stringify(policy.name)
      }`,
    );
  }
  for (const field of ["limit", "windowMs"] as const) {
    const value = policy[field];
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(
        `Cannot create rate limit '${policy.name}' as 'policy.${field}' must be a positive integer: current value is ${value}`,
      );
    }
  }
}

function tokenSubject(c: Context): string | undefined {
  const token: unknown = c.get("accessToken");
  if (typeof token !== "object" || token === null || !("subject" in token)) return undefined;
  const { subject } = token;
  return typeof subject === "string" && subject !== "" ? subject : undefined;
}

function clientAddress(c: Context, trustForwardedFor: boolean): string {
  if (trustForwardedFor) {
    const forwarded = c.req.header("x-forwarded-for")?.split(",").at(-1)?.trim();
    if (forwarded !== undefined && forwarded !== "") return forwarded;
  }
  let address: string | undefined;
  try {
    address = getConnInfo(c).remote.address;
  } catch {
    // Not served by Deno.serve: no connection info in the context's env.
  }
  if (address === undefined || address === "") {
    throw new Error(
      `Cannot rate-limit ${c.req.method} ${c.req.path}: the client address is unknown; pass a 'key' function`,
    );
  }
  return address;
}

function seconds(ms: number): number {
  return Math.ceil(ms / 1000);
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** An instance's share of `limit` among `instances`: rounded down, at least 1. */
export function localShare(limit: number, instances: number): number {
  const count = Number.isFinite(instances) && instances >= 1 ? Math.floor(instances) : 1;
  return Math.max(1, Math.floor(limit / count));
}

/**
 * Gives up on work that takes longer than `ms` (rejecting with "`what` did not
 * answer within `ms` ms", up to a tenth of `ms` late), one timer for every
 * pending call (`Deadlines`).
 */
function deadlines(ms: number, what: string): <T>(work: Promise<T>) => Promise<T> {
  const pending = new Deadlines(ms);
  return <T>(work: Promise<T>) =>
    new Promise<T>((resolve, reject) => {
      const done = pending.start(() => reject(new Error(`${what} did not answer within ${ms} ms`)));
      work.then((value) => {
        done();
        resolve(value);
      }, (error) => {
        done();
        reject(error);
      });
    });
}

/** Limits requests to `options.policy`, counted in `options.store`. */
export function rateLimit(options: RateLimitOptions): RateLimitMiddleware {
  const {
    store,
    fallback = new MemoryRateLimitStore(),
    policy,
    trustForwardedFor = false,
    logger,
    storeName = "Redis",
    retryIntervalMs = 1000,
    storeTimeoutMs = 1000,
    now = () => performance.now(),
    sharing = () => 1,
    instanceNoun = "instance",
  } = options;
  const livePolicy = typeof policy === "function" ? policy : () => policy;
  const { name } = livePolicy();
  checkPolicy(livePolicy());
  const key = options.key ?? ((c: Context) => {
    const subject = tokenSubject(c);
    return subject === undefined
      ? `address:${clientAddress(c, trustForwardedFor)}`
      : `subject:${subject}`;
  });
  const metrics = options.metrics === undefined ? undefined : rateLimitMetrics(options.metrics);
  const sharers = () => {
    const count = sharing();
    return Number.isFinite(count) && count >= 1 ? Math.floor(count) : 1;
  };
  metrics?.fallback.set({ policy: name }, 0);

  /** Set while the store fails. */
  let outage: { readonly started: number; readonly since: Date; error: string } | undefined;
  /** When the store was last tried during the outage. */
  let lastTry = 0;

  function tryStoreNow(): boolean {
    if (outage === undefined) return true;
    const time = now();
    if (time - lastTry < retryIntervalMs) return false;
    // Set before the try, so concurrent requests do not all try at once.
    lastTry = time;
    return true;
  }

  function storeFailed(error: unknown): void {
    lastTry = now();
    if (outage !== undefined) {
      outage.error = errorMessage(error);
      return;
    }
    outage = { started: lastTry, since: new Date(), error: errorMessage(error) };
    metrics?.fallback.set({ policy: name }, 1);
    logger.warn("Rate limits served in process: {store} unreachable for policy {policy}", {
      store: storeName,
      policy: name,
      error,
    });
  }

  function storeAnswered(): void {
    if (outage === undefined) return;
    const outageMs = Math.round(now() - outage.started);
    outage = undefined;
    metrics?.fallback.set({ policy: name }, 0);
    logger.info("Rate limits shared again: {store} answers for policy {policy}", {
      store: storeName,
      policy: name,
      outageMs,
    });
  }

  const inTime = deadlines(storeTimeoutMs, `The ${storeName} rate-limit store`);

  async function decide(
    storeKey: string,
    { limit, windowMs }: RateLimitPolicy,
  ): Promise<RateLimitDecision> {
    if (tryStoreNow()) {
      try {
        const decision = await inTime(store.hit(storeKey, limit, windowMs));
        storeAnswered();
        return decision;
      } catch (error) {
        storeFailed(error);
      }
    }
    return await fallback.hit(storeKey, localShare(limit, sharers()), windowMs);
  }

  async function rateLimitMiddleware(c: Context, next: () => Promise<void>) {
    const current = livePolicy();
    const { limit, windowMs } = current;
    const decision = await decide(`${name}:${key(c)}`, current);
    // Counted in process, the policy this instance enforces is its share.
    const enforced = outage === undefined ? limit : localShare(limit, sharers());
    const untilAdmittedMs = decision.allowed ? decision.resetAfterMs : decision.retryAfterMs;
    const fields = {
      "RateLimit-Policy": `"${name}";q=${enforced};w=${seconds(windowMs)}`,
      "RateLimit": `"${name}";r=${decision.remaining};t=${seconds(untilAdmittedMs)}`,
    };
    metrics?.decisions.inc({ policy: name, outcome: decision.allowed ? "allowed" : "limited" });
    if (!decision.allowed) {
      const problem = new ProblemError({
        status: 429,
        code: "rate-limited",
        title: "Too many requests",
        detail: `Rate limit '${name}' allows ${enforced} requests in ${
          seconds(windowMs)
        } seconds; retry after ${seconds(decision.retryAfterMs)} seconds`,
        extensions: { policy: name },
        headers: { ...fields, "Retry-After": String(Math.max(1, seconds(decision.retryAfterMs))) },
      });
      return problemResponse(problem, c.req.path);
    }
    await next();
    setResponseHeaders(c, fields);
  }

  function status(): RateLimitStatus {
    if (outage === undefined) return { mode: "shared" };
    const { limit, windowMs } = livePolicy();
    const instances = sharers();
    const localLimit = localShare(limit, instances);
    return {
      mode: "in-process",
      detail: `${storeName} unreachable; counting locally: ${localLimit} of ${limit} per ${
        seconds(windowMs)
      } s per ${instanceNoun}, ${instances} ${instanceNoun}${instances === 1 ? "" : "s"}`,
      localLimit,
      instances,
      error: outage.error,
      since: outage.since.toISOString(),
    };
  }

  const readiness: ReadinessCheck = {
    name: `rate-limit:${name}`,
    critical: false,
    async check() {
      if (outage !== undefined && tryStoreNow()) {
        try {
          await store.ping();
          storeAnswered();
        } catch (error) {
          storeFailed(error);
        }
      }
      const current = status();
      if (current.mode === "in-process") {
        throw new Error(`${current.detail}: ${current.error}`);
      }
    },
  };

  return Object.assign(rateLimitMiddleware, { status, readiness });
}
