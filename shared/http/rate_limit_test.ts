/**
 * rateLimit() through `app.request()`. The tests of two gateway instances
 * need a real Redis (`deno task engines up redis`, or REDIS_URL); they fail,
 * never skip, when it is not reachable.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { Redis } from "ioredis";
import { MetricsRegistry } from "../metrics/metrics.ts";
import { MemoryRateLimitStore } from "../rate_limit/memory_rate_limit_store.ts";
import type { RateLimitDecision, RateLimitStore } from "../rate_limit/rate_limit_store.ts";
import { RedisRateLimitStore } from "../rate_limit/redis_rate_limit_store.ts";
import { PROBLEM_CONTENT_TYPE, problemType } from "./problem.ts";
import {
  localShare,
  rateLimit,
  type RateLimitLogger,
  type RateLimitMiddleware,
  type RateLimitOptions,
} from "./rate_limit.ts";
import { connectRedis } from "../testing/redis.ts";

/** A policy name no other test run uses, so runs on a shared Redis never meet. */
function uniquePolicy(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
}

interface RecordingLogger extends RateLimitLogger {
  readonly warnings: unknown[][];
  readonly infos: unknown[][];
}

function recordingLogger(): RecordingLogger {
  const warnings: unknown[][] = [];
  const infos: unknown[][] = [];
  return {
    warnings,
    infos,
    warn: (...args: unknown[]) => {
      warnings.push(args);
      return Promise.resolve();
    },
    info: (...args: unknown[]) => {
      infos.push(args);
      return Promise.resolve();
    },
  };
}

/** A clock that moves only when told. */
function fakeClock(): { now: () => number; elapse(ms: number): void } {
  let time = 1_000_000;
  return { now: () => time, elapse: (ms) => void (time += ms) };
}

/** A store that fails while `broken`, counting the hits it was asked for. */
class SwitchableStore implements RateLimitStore {
  broken = false;
  hits = 0;
  pings = 0;
  constructor(readonly inner: RateLimitStore) {}

  hit(key: string, limit: number, windowMs: number): Promise<RateLimitDecision> {
    this.hits++;
    if (this.broken) return Promise.reject(new Error("Connection is closed."));
    return this.inner.hit(key, limit, windowMs);
  }

  ping(): Promise<void> {
    this.pings++;
    return this.broken ? Promise.reject(new Error("Connection is closed.")) : this.inner.ping();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/**
 * An app with the middleware in front of `GET /` (a raw Response, so the
 * fields must be added to a response the middleware did not build). A test
 * token's subject comes from the `x-test-subject` header.
 */
function limitedApp(
  options: RateLimitOptions,
): { app: Hono; limiter: RateLimitMiddleware; handled: () => number } {
  const limiter = rateLimit(options);
  let handled = 0;
  const app = new Hono();
  app.use("*", async function testToken(c, next) {
    const subject = c.req.header("x-test-subject");
    if (subject !== undefined) c.set("accessToken" as never, { subject } as never);
    await next();
  });
  app.use("*", limiter);
  app.get("/", () => {
    handled++;
    return new Response("ok");
  });
  return { app, limiter, handled: () => handled };
}

/** The env Deno.serve gives a handler, read by `getConnInfo`. */
function fromAddress(hostname: string): { remoteAddr: Deno.NetAddr } {
  return { remoteAddr: { hostname, port: 40_000, transport: "tcp" } };
}

/** The statuses of responses, in order, their bodies discarded. */
async function statuses(responses: (Response | Promise<Response>)[]): Promise<number[]> {
  return await Promise.all(responses.map(async (response) => {
    const res = await response;
    await res.body?.cancel();
    return res.status;
  }));
}

Deno.test("rateLimit() adds RateLimit-Policy and RateLimit fields to admitted responses", async () => {
  const clock = fakeClock();
  const { app } = limitedApp({
    store: new MemoryRateLimitStore({ now: clock.now }),
    policy: { name: "api", limit: 3, windowMs: 60_000 },
    key: () => "client",
    logger: recordingLogger(),
  });
  const first = await app.request("/");
  assert.equal(first.status, 200);
  assert.equal(await first.text(), "ok");
  assert.equal(first.headers.get("RateLimit-Policy"), '"api";q=3;w=60');
  assert.equal(first.headers.get("RateLimit"), '"api";r=2;t=60');
  assert.equal(first.headers.get("Retry-After"), null);
  clock.elapse(15_000);
  const second = await app.request("/");
  await second.body?.cancel();
  // The first request leaves the window 45 s from now.
  assert.equal(second.headers.get("RateLimit"), '"api";r=1;t=45');
});

Deno.test("rateLimit() refuses with 429 problem+json and Retry-After at the limit", async () => {
  const clock = fakeClock();
  const { app, handled } = limitedApp({
    store: new MemoryRateLimitStore({ now: clock.now }),
    policy: { name: "tweets.write", limit: 2, windowMs: 60_000 },
    key: () => "client",
    logger: recordingLogger(),
  });
  assert.deepEqual(await statuses([app.request("/"), app.request("/")]), [200, 200]);
  clock.elapse(20_500);
  const refused = await app.request("/items?x=1");
  assert.equal(refused.status, 429);
  assert.equal(refused.headers.get("content-type"), PROBLEM_CONTENT_TYPE);
  // 39.5 s until the first request leaves the window, rounded up.
  assert.equal(refused.headers.get("Retry-After"), "40");
  assert.equal(refused.headers.get("RateLimit-Policy"), '"tweets.write";q=2;w=60');
  assert.equal(refused.headers.get("RateLimit"), '"tweets.write";r=0;t=40');
  const body = await refused.json();
  assert.equal(body.type, problemType("rate-limited"));
  assert.equal(body.status, 429);
  assert.equal(body.instance, "/items");
  assert.equal(body.policy, "tweets.write");
  assert.match(body.detail, /'tweets\.write' allows 2 requests in 60 seconds/);
  assert.equal(handled(), 2, "a refused request never reaches the handler");

  clock.elapse(39_500);
  // Both requests have left the window.
  assert.deepEqual(
    await statuses([app.request("/"), app.request("/"), app.request("/")]),
    [200, 200, 429],
  );
});

Deno.test("rateLimit() counts each token subject on its own", async () => {
  const { app } = limitedApp({
    store: new MemoryRateLimitStore(),
    policy: { name: "per-user", limit: 2, windowMs: 60_000 },
    logger: recordingLogger(),
  });
  const as = (subject: string) =>
    app.request("/", { headers: { "x-test-subject": subject } }, fromAddress("10.0.0.1"));
  assert.deepEqual(await statuses([as("alice"), as("alice"), as("alice")]), [200, 200, 429]);
  // Bob shares Alice's address but not her count.
  assert.deepEqual(await statuses([as("bob"), as("bob"), as("bob")]), [200, 200, 429]);
  // Nor do anonymous requests from that address.
  assert.equal((await app.request("/", {}, fromAddress("10.0.0.1"))).status, 200);
});

Deno.test("rateLimit() keys anonymous requests by the connection's address, not X-Forwarded-For", async () => {
  const { app } = limitedApp({
    store: new MemoryRateLimitStore(),
    policy: { name: "anonymous", limit: 1, windowMs: 60_000 },
    logger: recordingLogger(),
  });
  const from = (address: string, forwardedFor?: string) =>
    app.request(
      "/",
      { headers: forwardedFor === undefined ? {} : { "x-forwarded-for": forwardedFor } },
      fromAddress(address),
    );
  assert.deepEqual(await statuses([from("10.0.0.1"), from("10.0.0.2")]), [200, 200]);
  // A client cannot pick a fresh key by forging the header.
  assert.deepEqual(
    await statuses([from("10.0.0.1", "198.51.100.7"), from("10.0.0.2", "198.51.100.8")]),
    [429, 429],
  );
});

Deno.test("rateLimit() keys by the last X-Forwarded-For entry only with trustForwardedFor", async () => {
  const { app } = limitedApp({
    store: new MemoryRateLimitStore(),
    policy: { name: "behind-proxy", limit: 1, windowMs: 60_000 },
    trustForwardedFor: true,
    logger: recordingLogger(),
  });
  const viaProxy = (forwardedFor?: string) =>
    app.request(
      "/",
      { headers: forwardedFor === undefined ? {} : { "x-forwarded-for": forwardedFor } },
      fromAddress("10.0.0.254"),
    );
  assert.deepEqual(
    await statuses([viaProxy("203.0.113.1"), viaProxy("203.0.113.2"), viaProxy("203.0.113.1")]),
    [200, 200, 429],
  );
  // The proxy appends the peer it saw: what the client wrote before it does not count.
  assert.equal((await viaProxy("203.0.113.99, 203.0.113.1")).status, 429);
  // Without the header, the connection's address.
  assert.deepEqual(await statuses([viaProxy(), viaProxy()]), [200, 429]);
});

Deno.test("rateLimit() refuses a policy that is not valid", () => {
  const base = { store: new MemoryRateLimitStore(), logger: recordingLogger() };
  assert.throws(
    () => rateLimit({ ...base, policy: { name: 'a"b', limit: 1, windowMs: 1000 } }),
    (error: unknown) => error instanceof TypeError && error.message.includes("policy.name"),
  );
  for (const [limit, windowMs, field] of [[0, 1000, "limit"], [1, 1.5, "windowMs"]] as const) {
    assert.throws(
      () => rateLimit({ ...base, policy: { name: "p", limit, windowMs } }),
      (error: unknown) => error instanceof RangeError && error.message.includes(`policy.${field}`),
    );
  }
});

Deno.test("rateLimit() counts decisions in its metrics, shared by every policy", async () => {
  const metrics = new MetricsRegistry();
  const store = new MemoryRateLimitStore();
  const logger = recordingLogger();
  const first = limitedApp({
    store,
    policy: { name: "first", limit: 1, windowMs: 60_000 },
    key: () => "k",
    logger,
    metrics,
  });
  const second = limitedApp({
    store,
    policy: { name: "second", limit: 2, windowMs: 60_000 },
    key: () => "k",
    logger,
    metrics,
  });
  await statuses([first.app.request("/"), first.app.request("/"), second.app.request("/")]);
  const rendered = await metrics.render();
  assert.match(rendered, /^rate_limit_decisions_total\{outcome="allowed",policy="first"\} 1$/m);
  assert.match(rendered, /^rate_limit_decisions_total\{outcome="limited",policy="first"\} 1$/m);
  assert.match(rendered, /^rate_limit_decisions_total\{outcome="allowed",policy="second"\} 1$/m);
  assert.match(rendered, /^rate_limit_store_fallback\{policy="first"\} 0$/m);
  assert.match(rendered, /^rate_limit_store_fallback\{policy="second"\} 0$/m);
});

Deno.test("rateLimit() admits exactly the limit across two gateway instances sharing Redis", async () => {
  const name = uniquePolicy("exact");
  // Each instance with its own client, as two gateway processes would have.
  const stores = [
    new RedisRateLimitStore(await connectRedis()),
    new RedisRateLimitStore(await connectRedis()),
  ];
  const gateways = stores.map((store) =>
    limitedApp({
      store,
      policy: { name, limit: 50, windowMs: 60_000 },
      key: () => "one-client",
      logger: recordingLogger(),
      // A loaded machine must not send hits to the in-process fallback.
      storeTimeoutMs: 30_000,
    })
  );
  try {
    const responses = await Promise.all(
      Array.from({ length: 300 }, (_, i) => gateways[i % 2]!.app.request("/")),
    );
    const admitted = responses.filter((response) => response.status === 200);
    const refused = responses.filter((response) => response.status === 429);
    assert.equal(admitted.length, 50);
    assert.equal(refused.length, 250);
    assert.deepEqual(
      admitted.map((response) => Number(/;r=(\d+);/.exec(response.headers.get("RateLimit")!)?.[1]))
        .sort((x, y) => x - y),
      Array.from({ length: 50 }, (_, i) => i),
    );
    for (const response of refused) {
      assert.ok(Number(response.headers.get("Retry-After")) >= 1);
      assert.match(response.headers.get("RateLimit")!, new RegExp(`^"${name}";r=0;t=\\d+$`));
    }
    // Neither instance fell back to counting in process.
    assert.ok(gateways.every((gateway) => gateway.limiter.status().mode === "shared"));
    await Promise.all(responses.map((response) => response.body?.cancel()));
  } finally {
    await Promise.all(stores.map((store) => store.close()));
  }
});

Deno.test("rateLimit() serves from the fallback while Redis is unreachable", async () => {
  // Nothing listens on port 1: every command fails at once.
  const client = new Redis("redis://127.0.0.1:1", {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  client.on("error", () => {});
  const store = new RedisRateLimitStore(client);
  const logger = recordingLogger();
  const metrics = new MetricsRegistry();
  const { app, limiter } = limitedApp({
    store,
    policy: { name: uniquePolicy("fallback"), limit: 2, windowMs: 60_000 },
    key: () => "client",
    logger,
    metrics,
  });
  try {
    assert.deepEqual(limiter.status(), { mode: "shared" });
    const answered = await statuses(Array.from({ length: 5 }, () => app.request("/")));
    assert.deepEqual(answered.sort(), [200, 200, 429, 429, 429]);
    const refused = await app.request("/");
    assert.equal(refused.status, 429);
    assert.ok(Number(refused.headers.get("Retry-After")) >= 1);
    assert.equal(refused.headers.get("content-type"), PROBLEM_CONTENT_TYPE);
    await refused.body?.cancel();

    const status = limiter.status();
    assert.equal(status.mode, "in-process");
    assert.equal(
      status.mode === "in-process" && status.detail,
      "Redis unreachable; counting locally: 2 of 2 per 60 s per instance, 1 instance",
    );
    await assert.rejects(
      limiter.readiness.check(),
      (error: unknown) =>
        error instanceof Error &&
        error.message.startsWith(
          "Redis unreachable; counting locally: 2 of 2 per 60 s per instance, 1 instance: ",
        ),
    );
    assert.equal(logger.warnings.length, 1, "one warning for the outage");
    assert.match(String(logger.warnings[0]?.[0]), /Rate limits served in process/);
    assert.match(await metrics.render(), /^rate_limit_store_fallback\{policy="fallback-\w+"\} 1$/m);
  } finally {
    await store.close();
  }
});

Deno.test("two gateways with Redis unreachable admit at most the limit together, each its share as gateways come and go", async () => {
  const clients = [0, 1].map(() => {
    // Nothing listens on port 1: every command fails at once.
    const client = new Redis("redis://127.0.0.1:1", {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    });
    client.on("error", () => {});
    return client;
  });
  const stores = clients.map((client) => new RedisRateLimitStore(client));
  let gateways = 2;
  const name = uniquePolicy("shared-fallback");
  const apps = stores.map((store) =>
    limitedApp({
      store,
      policy: { name, limit: 7, windowMs: 60_000 },
      key: () => "client",
      logger: recordingLogger(),
      sharing: () => gateways,
      instanceNoun: "gateway",
    })
  );
  try {
    const answered = await Promise.all(
      apps.map(({ app }) => statuses(Array.from({ length: 6 }, () => app.request("/")))),
    );
    // 7 / 2 rounded down: 3 each, 6 together (at most the limit).
    assert.deepEqual(answered.map((codes) => codes.filter((code) => code === 200).length), [3, 3]);
    const [first] = apps;
    const status = first!.limiter.status();
    assert.equal(
      status.mode === "in-process" && status.detail,
      "Redis unreachable; counting locally: 3 of 7 per 60 s per gateway, 2 gateways",
    );
    const refused = await first!.app.request("/");
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get("RateLimit-Policy"), `"${name}";q=3;w=60`);
    await refused.body?.cancel();

    // The other gateway left: the one still running admits the whole limit.
    gateways = 1;
    const alone = await statuses(Array.from({ length: 6 }, () => first!.app.request("/")));
    assert.equal(alone.filter((code) => code === 200).length, 4, "7 in all, 3 already counted");
    const aloneStatus = first!.limiter.status();
    assert.equal(
      aloneStatus.mode === "in-process" && aloneStatus.detail,
      "Redis unreachable; counting locally: 7 of 7 per 60 s per gateway, 1 gateway",
    );
  } finally {
    await Promise.all(stores.map((store) => store.close()));
  }
});

Deno.test("a share of the limit is rounded down and at least 1", () => {
  assert.equal(localShare(600, 2), 300);
  assert.equal(localShare(7, 2), 3);
  assert.equal(localShare(2, 3), 1);
  assert.equal(localShare(5, 0), 5);
});

Deno.test("rateLimit() tries a failing store at most once a second and recovers", async () => {
  const clock = fakeClock();
  const store = new SwitchableStore(new MemoryRateLimitStore({ now: clock.now }));
  const fallback = new MemoryRateLimitStore({ now: clock.now });
  const logger = recordingLogger();
  const metrics = new MetricsRegistry();
  const { app, limiter } = limitedApp({
    store,
    fallback,
    policy: { name: "recovery", limit: 100, windowMs: 60_000 },
    key: () => "client",
    logger,
    metrics,
    now: clock.now,
  });
  assert.equal((await app.request("/")).status, 200);
  assert.equal(store.hits, 1);

  store.broken = true;
  assert.equal((await app.request("/")).status, 200, "answered from the fallback");
  assert.deepEqual(await statuses(Array.from({ length: 10 }, () => app.request("/"))), [
    ...Array(10).fill(200),
  ]);
  assert.equal(store.hits, 2, "the store is not tried again within the interval");
  assert.equal(limiter.status().mode, "in-process");
  clock.elapse(999);
  await statuses([app.request("/"), app.request("/")]);
  assert.equal(store.hits, 2);
  clock.elapse(1);
  await statuses([app.request("/"), app.request("/"), app.request("/")]);
  assert.equal(store.hits, 3, "one try once the interval has passed, however many requests");
  assert.equal(logger.warnings.length, 1, "one warning for the whole outage");
  assert.equal(logger.infos.length, 0);

  store.broken = false;
  clock.elapse(1000);
  const recovered = await app.request("/");
  await recovered.body?.cancel();
  assert.equal(recovered.status, 200);
  // Counted in the store again, which saw none of the outage's requests: its
  // oldest hit is the one from before the outage, 2 s ago.
  assert.equal(recovered.headers.get("RateLimit"), '"recovery";r=98;t=58');
  assert.deepEqual(limiter.status(), { mode: "shared" });
  await limiter.readiness.check();
  assert.equal(logger.infos.length, 1, "the recovery is logged");
  assert.match(String(logger.infos[0]?.[0]), /Rate limits shared again/);
  assert.match(await metrics.render(), /^rate_limit_store_fallback\{policy="recovery"\} 0$/m);
  await statuses([app.request("/"), app.request("/")]);
  assert.equal(store.hits, 6, "every request is counted in the store again");

  // A second outage is reported again.
  store.broken = true;
  await statuses([app.request("/")]);
  assert.equal(logger.warnings.length, 2);
  await store.close();
  await fallback.close();
});

Deno.test("rateLimit() readiness recovers by pinging the store, without traffic", async () => {
  const clock = fakeClock();
  const store = new SwitchableStore(new MemoryRateLimitStore());
  const logger = recordingLogger();
  const { app, limiter } = limitedApp({
    store,
    policy: { name: "idle", limit: 5, windowMs: 60_000 },
    key: () => "client",
    logger,
    now: clock.now,
  });
  store.broken = true;
  assert.equal((await app.request("/")).status, 200);
  await assert.rejects(limiter.readiness.check());
  assert.equal(store.pings, 0, "no ping within the interval");
  store.broken = false;
  clock.elapse(1000);
  await limiter.readiness.check();
  assert.equal(store.pings, 1);
  assert.deepEqual(limiter.status(), { mode: "shared" });
  assert.equal(logger.infos.length, 1);
  await store.close();
});

Deno.test("rateLimit() falls back when the store does not answer in time", async () => {
  const hanging: RateLimitStore = {
    hit: () => new Promise<never>(() => {}),
    ping: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
  const logger = recordingLogger();
  const { app, limiter } = limitedApp({
    store: hanging,
    policy: { name: "hanging", limit: 1, windowMs: 60_000 },
    key: () => "client",
    logger,
    storeTimeoutMs: 50,
  });
  const response = await app.request("/");
  await response.body?.cancel();
  assert.equal(response.status, 200);
  const status = limiter.status();
  assert.equal(status.mode, "in-process");
  assert.match(status.mode === "in-process" ? status.error : "", /did not answer within 50 ms/);
  assert.equal(logger.warnings.length, 1);
});

Deno.test("rateLimit() fails a request whose client address is unknown, naming the fix", async () => {
  const { app } = limitedApp({
    store: new MemoryRateLimitStore(),
    policy: { name: "no-address", limit: 1, windowMs: 60_000 },
    logger: recordingLogger(),
  });
  const errors: unknown[] = [];
  app.onError((error, c) => {
    errors.push(error);
    return c.text("error", 500);
  });
  await (await app.request("/")).body?.cancel();
  assert.match(String(errors[0]), /client address is unknown; pass a 'key' function/);
});
