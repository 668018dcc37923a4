/**
 * RedisRateLimitStore against a real Redis: `deno task engines up redis`, or
 * REDIS_URL. These tests fail, never skip, when Redis is not reachable.
 */
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import { RedisRateLimitStore } from "./redis_rate_limit_store.ts";
import { runRateLimitStoreContract, uniqueKey } from "./rate_limit_store_contract.ts";
import { waitFor } from "../testing/wait.ts";
import { connectRedis, REDIS_URL } from "../testing/redis.ts";
import { SpanKind } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { configureTracing, inSpan, serviceTracer } from "../trace/tracing.ts";

/** Microseconds of Redis's clock, the clock the store uses. */
async function redisTimeUs(client: Redis): Promise<number> {
  const [seconds, micros] = await client.time();
  return Number(seconds) * 1_000_000 + Number(micros);
}

async function elapseOnRedis(client: Redis, ms: number): Promise<void> {
  const start = await redisTimeUs(client);
  await waitFor(
    `${ms} ms to pass on Redis's clock`,
    async () => await redisTimeUs(client) - start >= ms * 1000,
  );
}

runRateLimitStoreContract("RedisRateLimitStore", {
  create: async () => {
    const client = await connectRedis();
    return {
      store: new RedisRateLimitStore(client),
      elapse: (ms) => elapseOnRedis(client, ms),
    };
  },
  fakeClock: false,
  // Long enough that a loaded machine's pauses do not change which hits are admitted.
  windowMs: 1000,
});

Deno.test("RedisRateLimitStore admits exactly the limit across gateway instances", async () => {
  // Two clients, as two gateway processes would have.
  const [first, second] = [
    new RedisRateLimitStore(await connectRedis()),
    new RedisRateLimitStore(await connectRedis()),
  ];
  const admin = await connectRedis();
  try {
    const key = uniqueKey("exact");
    const decisions = await Promise.all(
      Array.from({ length: 500 }, (_, i) => (i % 2 === 0 ? first : second).hit(key, 100, 60_000)),
    );
    assert.equal(decisions.filter((decision) => decision.allowed).length, 100);
    assert.deepEqual(
      decisions.filter((decision) => decision.allowed).map((decision) => decision.remaining)
        .sort((x, y) => x - y),
      Array.from({ length: 100 }, (_, i) => i),
    );
    // Only admitted hits are recorded.
    assert.equal(await admin.zcard(`rate-limit:${key}`), 100);
  } finally {
    await Promise.all([first.close(), second.close(), admin.quit()]);
  }
});

Deno.test("RedisRateLimitStore lets a key expire once its last hit leaves the window", async () => {
  const admin = await connectRedis();
  const store = new RedisRateLimitStore(await connectRedis(), { keyPrefix: "test-rate-limit:" });
  try {
    const key = uniqueKey("expiry");
    await store.hit(key, 5, 300);
    const ttl = await admin.pttl(`test-rate-limit:${key}`);
    assert.ok(ttl > 0 && ttl <= 300, `PTTL ${ttl}`);
    await waitFor(
      "the key to expire",
      async () => await admin.exists(`test-rate-limit:${key}`) === 0,
    );
    assert.equal((await store.hit(key, 5, 300)).remaining, 4);
  } finally {
    await Promise.all([store.close(), admin.quit()]);
  }
});

Deno.test("RedisRateLimitStore loads its script again when Redis forgets it", async () => {
  const admin = await connectRedis();
  const store = new RedisRateLimitStore(await connectRedis());
  try {
    const key = uniqueKey("noscript");
    assert.equal((await store.hit(key, 3, 60_000)).remaining, 2);
    await admin.script("FLUSH");
    assert.equal((await store.hit(key, 3, 60_000)).remaining, 1);
    assert.equal((await store.hit(key, 3, 60_000)).remaining, 0);
  } finally {
    await Promise.all([store.close(), admin.quit()]);
  }
});

Deno.test("RedisRateLimitStore runs its script as a client span of the caller, without the key", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const tracer = serviceTracer("gateway");
  const store = new RedisRateLimitStore(await connectRedis(), { tracer });
  try {
    const key = uniqueKey("traced");
    const traceId = await inSpan(tracer, "GET /api/v1/tweets", {}, async (parent) => {
      await store.hit(key, 3, 60_000);
      return parent.spanContext().traceId;
    });
    const [span] = exporter.getFinishedSpans().filter((span) => span.kind === SpanKind.CLIENT);
    assert.equal(span?.name, "EVALSHA sliding_window");
    assert.equal(span?.spanContext().traceId, traceId);
    assert.equal(span?.attributes["db.system.name"], "redis");
    assert.equal(span?.attributes["db.operation.name"], "EVALSHA");
    assert.equal(span?.attributes["server.port"], Number(new URL(REDIS_URL).port || 6379));
    assert.ok(!JSON.stringify(span?.attributes).includes(key));
  } finally {
    await store.close();
    configureTracing();
  }
});

Deno.test("RedisRateLimitStore decides the hits of one turn in one run, exactly per key, linked to every caller", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const tracer = serviceTracer("gateway");
  const store = new RedisRateLimitStore(await connectRedis(), { tracer });
  try {
    await store.ping();
    const keys = [uniqueKey("batch-a"), uniqueKey("batch-b"), uniqueKey("batch-c")];
    const callers: string[] = [];
    // 30 requests of one turn, ten per key, against a limit of 4.
    const decisions = await Promise.all(
      Array.from(
        { length: 30 },
        (_, index) =>
          inSpan(tracer, "GET /api/v1/tweets", {}, async (parent) => {
            callers.push(parent.spanContext().spanId);
            return {
              key: keys[index % 3]!,
              decision: await store.hit(keys[index % 3]!, 4, 60_000),
            };
          }),
      ),
    );
    for (const key of keys) {
      const ofKey = decisions.filter((entry) => entry.key === key).map((entry) => entry.decision);
      assert.deepEqual(
        ofKey.filter((decision) => decision.allowed).map((decision) => decision.remaining),
        [3, 2, 1, 0],
      );
      assert.ok(ofKey.slice(4).every((decision) => !decision.allowed && decision.remaining === 0));
      assert.ok(ofKey.slice(4).every((decision) => decision.retryAfterMs > 59_000));
    }
    const runs = exporter.getFinishedSpans().filter((span) => span.kind === SpanKind.CLIENT);
    assert.equal(runs.length, 1);
    assert.equal(runs[0]!.attributes["db.operation.batch.size"], 30);
    assert.deepEqual(
      [runs[0]!.parentSpanContext?.spanId, ...runs[0]!.links.map((link) => link.context.spanId)]
        .sort(),
      callers.toSorted(),
    );
    // A later run sees the hits of this one.
    assert.equal((await store.hit(keys[1]!, 4, 60_000)).allowed, false);
    assert.equal(
      exporter.getFinishedSpans().filter((span) => span.kind === SpanKind.CLIENT).length,
      2,
    );
  } finally {
    await store.close();
    configureTracing();
  }
});

Deno.test("connectRedis names the command that starts Redis when it is not reachable", async () => {
  await assert.rejects(
    connectRedis("redis://127.0.0.1:1"),
    (error: unknown) =>
      error instanceof Error &&
      error.message ===
        "Redis is not reachable at redis://127.0.0.1:1: start it with `deno task engines up redis`",
  );
});
