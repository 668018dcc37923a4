/**
 * The wordcount service on the embedded event log: exact counts after
 * 10,000 tweets, the API's answers and problems, and two instances sharing
 * the partitions and answering for every word through forwarding.
 */
import assert from "node:assert/strict";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { MemoryEventLog } from "../../shared/event_log/memory_event_log.ts";
import { loadTweetCodec } from "../../shared/events/tweet_event.ts";
import { loadWordCountCodec } from "../../shared/events/word_count_event.ts";
import { MetricsRegistry } from "../../shared/metrics/metrics.ts";
import { configureTracing, serviceTracer } from "../../shared/trace/tracing.ts";
import { serviceLogger } from "../../shared/log/log.ts";
import type { ServiceContext } from "../../shared/service/service.ts";
import { assertDescribesEveryRoute } from "../../shared/testing/openapi_assertions.ts";
import { TEST_VERSION } from "../../shared/testing/test_context.ts";
import { createTestIssuer } from "../../shared/testing/test_issuer.ts";
import { waitFor } from "../../shared/testing/wait.ts";
import type { EventLog } from "../../shared/event_log/event_log.ts";
import { loadConfig } from "../config.ts";
import { createWordCountService } from "./main.ts";
import {
  apiCounts,
  knownTweets,
  latestCounts,
  MetadataDiscovery,
  sendAll,
  sorted,
} from "./_testing.ts";

const issuer = await createTestIssuer();
const reader = await issuer.authorization({ audience: "wordcount" });
const tweetCodec = await loadTweetCodec();
const wordCountCodec = await loadWordCountCodec();
const config = loadConfig({ WORDCOUNT_COMMIT_INTERVAL_MS: "100", WORDCOUNT_PARTITIONS: "4" });

function context(instanceId: string): ServiceContext {
  return {
    name: "wordcount",
    instanceId,
    version: TEST_VERSION,
    logger: serviceLogger("wordcount", instanceId),
    metrics: new MetricsRegistry(),
    tracer: serviceTracer("wordcount"),
  };
}

function wordcount(eventLog: EventLog, discovery: MetadataDiscovery, instanceId: string) {
  const ctx = context(instanceId);
  const service = createWordCountService({
    config,
    context: ctx,
    eventLog,
    tweetCodec,
    wordCountCodec,
    discovery,
    verifier: issuer.verifier("wordcount"),
  });
  return { service, context: ctx, server: discovery.serve(service, instanceId) };
}

Deno.test("wordcount counts 10,000 tweets exactly on the embedded log", async () => {
  const eventLog = new MemoryEventLog({ retentionMs: 0, retentionRecords: 1_000_000 });
  const discovery = new MetadataDiscovery();
  const { service, context: ctx, server } = wordcount(eventLog, discovery, "wordcount-a");
  try {
    await service.start();
    const { records, expected } = knownTweets(tweetCodec, 10_000);
    await sendAll(eventLog, config.tweets.topic, records);
    await waitFor("the API to answer the exact counts", async () => {
      const counts = await apiCounts(server.url, reader, expected.keys());
      return sorted(counts).join() === sorted(expected).join();
    }, 60_000);
    await waitFor("the word-count topic to hold the exact counts", async () => {
      const latest = await latestCounts(eventLog, wordCountCodec, config);
      return sorted(latest).join() === sorted(expected).join();
    });
    assert.deepEqual(
      sorted(await latestCounts(eventLog, wordCountCodec, config)),
      sorted(expected),
    );

    const never = await fetch(`${server.url}/api/v1/words/neverseen`, { headers: reader });
    const body = await never.json();
    assert.equal(never.status, 200);
    assert.equal(body.count, 0);
    assert.deepEqual(Object.keys(body.windows), ["1m", "1h"]);

    // Every tweet was created just now, so the current hour holds every word (unless
    // the hour turned meanwhile: then the previous one does, and trending is empty).
    const trending = await fetch(`${server.url}/api/v1/words/trending?window=1h&limit=5`, {
      headers: reader,
    });
    const top = await trending.json();
    assert.equal(trending.status, 200);
    assert.equal(top.window, "1h");
    for (const { word, count } of top.words) assert.ok(count <= expected.get(word)!);
    const counts = top.words.map((entry: { count: number }) => entry.count);
    assert.deepEqual(counts, [...counts].sort((a: number, b: number) => b - a));

    const ready = await service.app.request("/ready");
    assert.equal(ready.status, 200);
    const metrics = await ctx.metrics.render();
    assert.match(metrics, /wordcount_commits_total \d+/);
    assert.match(metrics, /wordcount_owned_partitions 4/);
  } finally {
    await service.stop();
    await server.shutdown();
    await eventLog.close();
  }
});

Deno.test("wordcount answers bad requests with problems and needs a token", async () => {
  const eventLog = new MemoryEventLog();
  const discovery = new MetadataDiscovery();
  const { service, server } = wordcount(eventLog, discovery, "wordcount-problems");
  try {
    const get = (path: string, headers: HeadersInit = reader) =>
      fetch(`${server.url}${path}`, { headers });
    // Not started: no partition is restored anywhere, so no answer may be a zero.
    const unknown = await get("/api/v1/words/kafka");
    assert.equal(unknown.status, 503);
    assert.equal(unknown.headers.get("retry-after"), "1");
    assert.equal((await unknown.json()).type, "urn:twitterapi:problem:partition-unavailable");
    assert.equal((await get("/api/v1/words/trending")).status, 503);
    const ready = await service.app.request("/ready");
    assert.equal(ready.status, 503);
    await ready.body?.cancel();

    for (const path of ["/api/v1/words/two%20words", "/api/v1/words/%21%21"]) {
      const response = await get(path);
      assert.equal(response.status, 400, path);
      assert.equal((await response.json()).type, "urn:twitterapi:problem:invalid-parameter");
    }
    for (const query of ["window=5m", "limit=0", "limit=101", "limit=ten"]) {
      const response = await get(`/api/v1/words/trending?${query}`);
      assert.equal(response.status, 400, query);
      await response.body?.cancel();
    }
    const anonymous = await get("/api/v1/words/kafka", {});
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
  } finally {
    await service.stop();
    await server.shutdown();
    await eventLog.close();
  }
});

Deno.test("wordcount describes every route it serves, and its schemas validate", async () => {
  const eventLog = new MemoryEventLog();
  const discovery = new MetadataDiscovery();
  const { service, server } = wordcount(eventLog, discovery, "wordcount-openapi");
  try {
    const description = await assertDescribesEveryRoute(service.app);
    const trending = (description.paths as Record<string, Record<string, unknown>>)[
      "/api/v1/words/trending"
    ]!.get as { parameters: { name: string; schema: Record<string, unknown> }[] };
    const window = trending.parameters.find((parameter) => parameter.name === "window")!;
    assert.deepEqual(window.schema.enum, config.wordcount.windows);
    const response = await service.app.request("/api/v1/words/trending?window=5m&limit=1e3", {
      headers: reader,
    });
    assert.equal(response.status, 400);
    assert.deepEqual((await response.json()).errors, [
      {
        parameter: "window",
        detail: `must be one of ${config.wordcount.windows.join(", ")}, got '5m'`,
      },
      { parameter: "limit", detail: "must be an integer from 1 to 100" },
    ]);
  } finally {
    await service.stop();
    await server.shutdown();
    await eventLog.close();
  }
});

Deno.test("two wordcount instances share the partitions and answer for every word", async () => {
  const eventLog = new MemoryEventLog({ retentionMs: 0, retentionRecords: 1_000_000 });
  const discovery = new MetadataDiscovery();
  const a = wordcount(eventLog, discovery, "wordcount-a");
  const b = wordcount(eventLog, discovery, "wordcount-b");
  try {
    await a.service.start();
    const { records, expected } = knownTweets(tweetCodec, 10_000, 7);
    await sendAll(eventLog, config.tweets.topic, records.slice(0, 4000));
    // The second instance joins mid-stream and takes over half of the partitions.
    await b.service.start();
    await sendAll(eventLog, config.tweets.topic, records.slice(4000));
    const owned = async () =>
      (await discovery.instances("wordcount")).map((i) => i.metadata["wordcount-partitions"]);
    await waitFor("both instances to own partitions", async () => {
      const partitions = await owned();
      return partitions.every((list) => list !== "") &&
        partitions.join(",").split(",").length === 4;
    });
    for (const instance of [a, b]) {
      await waitFor(`${instance.context.instanceId} to answer every word exactly`, async () => {
        const counts = await apiCounts(instance.server.url, reader, expected.keys());
        return sorted(counts).join() === sorted(expected).join();
      }, 60_000);
    }
    const trending = await Promise.all([a, b].map(async ({ server }) => {
      const response = await fetch(`${server.url}/api/v1/words/trending?window=1h&limit=100`, {
        headers: reader,
      });
      assert.equal(response.status, 200);
      return (await response.json()).words;
    }));
    assert.deepEqual(trending[0], trending[1]);
    await waitFor("the word-count topic to hold the exact counts", async () => {
      const latest = await latestCounts(eventLog, wordCountCodec, config);
      return sorted(latest).join() === sorted(expected).join();
    });

    // When one leaves, the other restores its partitions from the changelog and answers alone.
    await b.service.stop();
    await b.server.shutdown();
    await waitFor("the remaining instance to own every partition", async () => {
      const [only] = await discovery.instances("wordcount");
      return only?.metadata["wordcount-partitions"] === "0,1,2,3";
    });
    assert.deepEqual(
      sorted(await apiCounts(a.server.url, reader, expected.keys())),
      sorted(expected),
    );
  } finally {
    await b.service.stop();
    await a.service.stop();
    await a.server.shutdown();
    await b.server.shutdown();
    await eventLog.close();
  }
});

Deno.test("wordcount continues each tweet's trace through the repartition topic into the word counts", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const eventLog = new MemoryEventLog();
  const discovery = new MetadataDiscovery();
  const { service, server } = wordcount(eventLog, discovery, "wordcount-traced");
  const traceIds = ["0af7651916cd43dd8448eb211c80319c", "1bf7651916cd43dd8448eb211c80319d"];
  // Words of their own per tweet, so each update continues exactly one tweet's trace.
  const texts = ["alpha beta", "gamma"];
  try {
    await service.start();
    for (const [i, text] of texts.entries()) {
      await eventLog.send(config.tweets.topic, [{
        key: null,
        value: tweetCodec.encode({
          id: BigInt(i + 1),
          userId: 1n,
          text,
          createdAt: Date.now(),
          source: "test",
        }),
        headers: { traceparent: `00-${traceIds[i]}-b7ad6b7169203331-01` },
      }]);
    }
    const updates = new Map<string, string>();
    const reader = await eventLog.consume(
      { groupId: "trace-reader", topics: [config.wordCounts.topic] },
      (batch) => {
        for (const record of batch.records) {
          updates.set(wordCountCodec.decode(record.value).word, record.headers.traceparent!);
        }
        return Promise.resolve();
      },
    );
    await waitFor("an update of every word", () => Promise.resolve(updates.size === 3));
    await reader.stop();
    for (const [i, text] of texts.entries()) {
      for (const word of text.split(" ")) {
        assert.equal(updates.get(word)?.split("-")[1], traceIds[i], word);
      }
    }
  } finally {
    await service.stop();
    await server.shutdown();
    await eventLog.close();
    configureTracing();
  }
  const spans = exporter.getFinishedSpans();
  for (const traceId of traceIds) {
    const names = new Set(
      spans.filter((span) => span.spanContext().traceId === traceId).map((span) => span.name),
    );
    for (
      const name of [
        `process ${config.tweets.topic}`,
        `send ${config.wordcount.repartitionTopic}`,
        `process ${config.wordcount.repartitionTopic}`,
        `send ${config.wordcount.changelogTopic}`,
        `send ${config.wordCounts.topic}`,
      ]
    ) {
      assert.ok(names.has(name), `${traceId} has ${name}`);
    }
  }
  assert.ok(spans.every((span) => span.resource.attributes["service.name"] === "wordcount"));
});
