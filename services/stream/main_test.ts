import assert from "node:assert/strict";
import type { ConsumedRecord } from "../../shared/event_log/event_log.ts";
import { MemoryEventLog } from "../../shared/event_log/memory_event_log.ts";
import { partitionForKey } from "../../shared/event_log/murmur2.ts";
import { loadTweetCodec } from "../../shared/events/tweet_event.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { serveApp } from "../../shared/http/serve.ts";
import { delay, waitFor } from "../../shared/testing/wait.ts";
import { configureTracing } from "../../shared/trace/tracing.ts";
import { loadConfig } from "../config.ts";
import { createStreamService } from "./main.ts";
import { createTestIssuer } from "../../shared/testing/test_issuer.ts";
import { assertDescribesEveryRoute } from "../../shared/testing/openapi_assertions.ts";

const issuer = await createTestIssuer();
const admin = await issuer.authorization({ audience: "stream", roles: ["app_admin_role"] });

async function streamService(env: Record<string, string>) {
  configureTracing();
  const eventLog = new MemoryEventLog();
  const service = createStreamService({
    config: loadConfig({ STREAM_WORKER_ID: "7", ...env }),
    context: testContext("stream"),
    eventLog,
    codec: await loadTweetCodec(),
    verifier: issuer.verifier("stream"),
  });
  /** A request as an administrator. */
  const call = (path: string, init: RequestInit = {}) =>
    service.app.request(path, { ...init, headers: { ...admin, ...init.headers } });
  const status = async () => await (await call("/api/v1/stream")).json();
  return { service, eventLog, call, status };
}

async function readAll(eventLog: MemoryEventLog, topic: string): Promise<ConsumedRecord[]> {
  const records: ConsumedRecord[] = [];
  const lag = await eventLog.lag("reader", topic);
  const total = lag.reduce((sum, partition) => sum + partition.highWatermark, 0);
  const member = await eventLog.consume({ groupId: "reader", topics: [topic] }, (batch) => {
    records.push(...batch.records);
    return Promise.resolve();
  });
  await waitFor(`${total} records`, () => Promise.resolve(records.length >= total));
  await member.stop();
  return records;
}

Deno.test("stream produces exactly its count of decodable, keyed, traced tweets", async () => {
  const { service, eventLog, status } = await streamService({
    STREAM_COUNT: "250",
    STREAM_RATE_PER_SECOND: "5000",
  });
  await service.start();
  await waitFor("completion", async () => (await status()).state === "completed");
  const { achievedPerSecond, ...completed } = await status();
  assert.deepEqual(completed, {
    state: "completed",
    produced: 250,
    ratePerSecond: 5000,
    count: 250,
    topic: "twitter-topic",
  });
  // Over the five seconds since the emitter was made: never above the rate asked for.
  assert.ok(achievedPerSecond > 0 && achievedPerSecond <= 5000, `${achievedPerSecond}/s`);
  await service.stop();

  const codec = await loadTweetCodec();
  const records = await readAll(eventLog, "twitter-topic");
  assert.equal(records.length, 250);
  const ids = new Set<bigint>();
  for (const record of records) {
    const tweet = codec.decode(record.value);
    ids.add(tweet.id);
    assert.equal(record.partition, partitionForKey(record.key!, 3));
    assert.match(record.headers.traceparent ?? "", /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    assert.equal(record.timestamp, tweet.createdAt);
    assert.equal(tweet.source, "mock");
  }
  assert.equal(ids.size, 250);
  const traces = new Set(records.map((record) => record.headers.traceparent!.slice(3, 35)));
  assert.equal(traces.size, 250, "every tweet starts its own trace");
  await eventLog.close();
});

Deno.test("stream pauses, resumes and changes rate through its API", async () => {
  const { service, eventLog, call, status } = await streamService({
    STREAM_RATE_PER_SECOND: "200",
    STREAM_AUTO_START: "false",
  });
  await service.start();
  assert.equal((await status()).state, "paused");
  const resumed = await call("/api/v1/stream/resume", { method: "POST" });
  assert.equal((await resumed.json()).state, "running");
  await waitFor("20 tweets", async () => (await status()).produced >= 20);
  const paused = await (await call("/api/v1/stream/pause", { method: "POST" }))
    .json();
  assert.equal(paused.state, "paused");
  await new Promise((resolve) => setTimeout(resolve, 100));
  const afterPause = (await status()).produced;
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal((await status()).produced, afterPause, "nothing is produced while paused");

  const rate = await call("/api/v1/stream/rate", {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ perSecond: 50 }),
  });
  assert.equal(rate.status, 200);
  assert.equal((await rate.json()).ratePerSecond, 50);
  await service.stop();
  assert.equal((await status()).state, "stopped");
  await eventLog.close();
});

Deno.test("stream rejects bad rate requests with 4xx problem+json", async () => {
  const { service, eventLog, call } = await streamService({ STREAM_AUTO_START: "false" });
  const put = (body: string, type = "application/json") =>
    call("/api/v1/stream/rate", {
      method: "PUT",
      headers: { "content-type": type },
      body,
    });
  for (
    const [body, parameter] of [
      ['{"perSecond": 0}', "body.perSecond"],
      ['{"perSecond": 10001}', "body.perSecond"],
      ['{"perSecond": 1.5}', "body.perSecond"],
      ['{"perSecond": "10"}', "body.perSecond"],
      ["{}", "body.perSecond"],
      ["[1]", "body"],
    ] as const
  ) {
    const response = await put(body);
    assert.equal(response.status, 400, body);
    assert.equal(response.headers.get("content-type"), "application/problem+json");
    const problem = await response.json();
    assert.equal(problem.type, "urn:twitterapi:problem:invalid-parameter");
    assert.deepEqual(problem.errors.map((error: { parameter: string }) => error.parameter), [
      parameter,
    ]);
  }
  const malformed = await put("{");
  assert.equal(malformed.status, 400);
  assert.equal((await malformed.json()).type, "urn:twitterapi:problem:invalid-body");
  const wrongType = await put('{"perSecond": 5}', "text/plain");
  assert.equal(wrongType.status, 415);
  await wrongType.body?.cancel();
  await service.stop();
  await eventLog.close();
});

Deno.test("stream refuses to resume once its count is produced", async () => {
  const { service, eventLog, call, status } = await streamService({
    STREAM_COUNT: "5",
    STREAM_RATE_PER_SECOND: "1000",
  });
  await service.start();
  await waitFor("completion", async () => (await status()).state === "completed");
  const response = await call("/api/v1/stream/resume", { method: "POST" });
  assert.equal(response.status, 409);
  assert.equal((await response.json()).type, "urn:twitterapi:problem:stream-completed");
  await service.stop();
  await eventLog.close();
});

Deno.test("stream keeps its rate", async () => {
  const { service, eventLog, status } = await streamService({
    STREAM_RATE_PER_SECOND: "100",
  });
  await service.start();
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, 500));
  const produced = (await status()).produced;
  const elapsed = (performance.now() - started) / 1000;
  await service.stop();
  // Counts, not timings: the emitter never runs ahead of its rate.
  assert.ok(produced <= Math.ceil(elapsed * 100) + 1, `${produced} in ${elapsed}s`);
  assert.ok(produced > 0);
  await eventLog.close();
});

Deno.test("stream sends the tweets falling due within its linger together", async () => {
  const { service, eventLog, status } = await streamService({
    STREAM_RATE_PER_SECOND: "1000",
    STREAM_LINGER_MS: "50",
  });
  let sends = 0;
  const send = eventLog.send.bind(eventLog);
  eventLog.send = (topic, records) => {
    sends++;
    return send(topic, records);
  };
  const started = performance.now();
  await service.start();
  await waitFor("a few sends", () => Promise.resolve(sends >= 4));
  await service.stop();
  const elapsedMs = performance.now() - started;
  const produced = (await status()).produced;
  // Counts: no send starts within 50 ms of the one before.
  assert.ok(sends <= Math.ceil(elapsedMs / 50) + 1, `${sends} sends in ${elapsedMs} ms`);
  assert.ok(produced > sends, `${produced} tweets in ${sends} sends`);
  await eventLog.close();
});

Deno.test("stream keeps at most its sends in flight and produces exactly its count", async () => {
  const { service, eventLog, status } = await streamService({
    STREAM_COUNT: "40",
    // A tweet or two due per send: the count takes many sends.
    STREAM_RATE_PER_SECOND: "1000",
    STREAM_LINGER_MS: "0",
    STREAM_MAX_SENDS_IN_FLIGHT: "3",
  });
  // Each send waits for the test to let it through.
  const held: (() => void)[] = [];
  let mostHeld = 0;
  const send = eventLog.send.bind(eventLog);
  eventLog.send = async (topic, records) => {
    await new Promise<void>((resolve) => {
      held.push(resolve);
      mostHeld = Math.max(mostHeld, held.length);
    });
    return await send(topic, records);
  };
  await service.start();
  await waitFor("three sends held", () => Promise.resolve(held.length === 3));
  assert.equal(
    (await status()).produced,
    0,
    "nothing counts as produced before it is acknowledged",
  );
  while ((await status()).state !== "completed") {
    held.shift()?.();
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  assert.equal(mostHeld, 3);
  await service.stop();
  const records = await readAll(eventLog, "twitter-topic");
  assert.equal(records.length, 40);
  assert.equal((await status()).produced, 40);
  await eventLog.close();
});

/**
 * The stream served over a real socket, producing at `perSecond` while the
 * test calls it: resolves to the statuses it answered.
 */
async function callWhileProducing(perSecond: number, env: Record<string, string> = {}) {
  const { service, eventLog } = await streamService({ STREAM_AUTO_START: "false", ...env });
  const server = serveApp(service.app, { hostname: "127.0.0.1", port: 0 });
  // Over a socket and timers: an emitter that only awaited the embedded log's microtasks
  // would leave neither a turn, and these requests would never complete.
  const call = async (path: string, init: RequestInit = {}) => {
    const response = await fetch(`${server.url}${path}`, {
      ...init,
      headers: { ...admin, "content-type": "application/json", ...init.headers },
    });
    assert.equal(response.status, 200, path);
    return await response.json();
  };
  try {
    await service.start();
    await call("/api/v1/stream/rate", { method: "PUT", body: JSON.stringify({ perSecond }) });
    await call("/api/v1/stream/resume", { method: "POST" });
    const statuses = [];
    for (let i = 0; i < 20; i++) {
      const health = await fetch(`${server.url}/health`);
      assert.equal(health.status, 200);
      await health.body?.cancel();
      statuses.push(await call("/api/v1/stream"));
      await delay(20);
    }
    assert.equal((await call("/api/v1/stream/pause", { method: "POST" })).state, "paused");
    return statuses;
  } finally {
    await service.stop();
    await server.shutdown();
    await eventLog.close();
  }
}

Deno.test("stream keeps answering over HTTP while it produces at its highest accepted rate", async () => {
  const maxRate = loadConfig({}).stream.maxRatePerSecond;
  const statuses = await callWhileProducing(maxRate);
  for (const status of statuses) {
    assert.equal(status.state, "running");
    assert.equal(status.ratePerSecond, maxRate);
    assert.ok(status.achievedPerSecond <= maxRate, `${status.achievedPerSecond}/s`);
  }
  assert.ok(statuses.at(-1).produced > statuses[0].produced);
});

Deno.test("stream sheds a rate it cannot reach, answering meanwhile, and reports what it achieves", async () => {
  const unreachable = 10_000_000;
  const statuses = await callWhileProducing(unreachable, {
    STREAM_MAX_RATE_PER_SECOND: String(unreachable),
  });
  const last = statuses.at(-1);
  assert.ok(last.produced > statuses[0].produced);
  assert.equal(last.ratePerSecond, unreachable);
  assert.ok(
    last.achievedPerSecond > 0 && last.achievedPerSecond < unreachable,
    `${last.achievedPerSecond}/s`,
  );
});

Deno.test("stream's API needs an administrator's token for the stream audience", async () => {
  const { service, eventLog } = await streamService({ STREAM_AUTO_START: "false" });
  const request = (headers: Record<string, string>) =>
    service.app.request("/api/v1/stream/pause", { method: "POST", headers });

  const anonymous = await request({});
  assert.equal(anonymous.status, 401);
  assert.equal(anonymous.headers.get("www-authenticate"), 'Bearer realm="twitterapi"');
  assert.equal((await anonymous.json()).type, "urn:twitterapi:problem:unauthorized");

  const user = await request(await issuer.authorization({ audience: "stream" }));
  assert.equal(user.status, 403);
  assert.equal((await user.json()).requiredRoles[0], "app_admin_role");

  const otherAudience = await request(
    await issuer.authorization({ audience: "query", roles: ["app_admin_role"] }),
  );
  assert.equal(otherAudience.status, 401);
  assert.match(otherAudience.headers.get("www-authenticate") ?? "", /does not include stream/);
  await otherAudience.body?.cancel();

  const health = await service.app.request("/health");
  assert.equal(health.status, 200);
  await health.body?.cancel();
  await service.stop();
  await eventLog.close();
});

Deno.test("stream's /openapi.json is valid OpenAPI 3.1 describing every route it serves", async () => {
  const { service, eventLog } = await streamService({
    STREAM_AUTO_START: "false",
    STREAM_MAX_RATE_PER_SECOND: "2000",
  });
  const description = await assertDescribesEveryRoute(service.app);
  const schemas = (description.components as { schemas: Record<string, unknown> }).schemas;
  assert.deepEqual(schemas.StreamRate, {
    type: "object",
    properties: {
      perSecond: { type: "integer", minimum: 1, maximum: 2000, example: 50 },
    },
    required: ["perSecond"],
  });
  await service.stop();
  await eventLog.close();
});
