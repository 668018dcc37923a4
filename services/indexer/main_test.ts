import assert from "node:assert/strict";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { DEAD_LETTER_HEADERS } from "../../shared/event_log/dead_letter.ts";
import type { ConsumedRecord } from "../../shared/event_log/event_log.ts";
import { MemoryEventLog } from "../../shared/event_log/memory_event_log.ts";
import { encodeLongKey } from "../../shared/event_log/murmur2.ts";
import { loadTweetCodec, type TweetEvent } from "../../shared/events/tweet_event.ts";
import { MemorySearchIndex } from "../../shared/search_index/memory_search_index.ts";
import type { SearchIndex, TweetDocument } from "../../shared/search_index/search_index.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { waitFor } from "../../shared/testing/wait.ts";
import { configureTracing } from "../../shared/trace/tracing.ts";
import { loadConfig } from "../config.ts";
import { createIndexerService } from "./main.ts";

const TOPIC = "twitter-topic";

function tweet(id: bigint, text: string): TweetEvent {
  return { id, userId: 9223372036854775807n, text, createdAt: 1_700_000_000_000, source: "mock" };
}

async function indexer(index: SearchIndex = new MemorySearchIndex()) {
  const eventLog = new MemoryEventLog({ retryBackoffMs: 10 });
  const context = testContext("indexer");
  const service = createIndexerService({
    config: loadConfig({}),
    context,
    eventLog,
    index,
    codec: await loadTweetCodec(),
  });
  await service.start();
  return { service, eventLog, index, context };
}

Deno.test("indexer indexes tweets by id and commits their offsets", async () => {
  const { service, eventLog, index, context } = await indexer();
  const codec = await loadTweetCodec();
  await eventLog.send(
    TOPIC,
    [1n, 2n, 9223372036854775807n, 2n].map((id) => ({
      key: encodeLongKey(id),
      value: codec.encode(tweet(id, `tweet ${id}`)),
    })),
  );
  await waitFor("3 documents", async () => (await index.count()) === 3);
  await waitFor(
    "no lag",
    async () => (await eventLog.lag("twitter-indexer", TOPIC)).every((p) => p.lag === 0),
  );
  assert.deepEqual(await index.get("9223372036854775807"), {
    id: "9223372036854775807",
    userId: "9223372036854775807",
    text: "tweet 9223372036854775807",
    createdAt: 1_700_000_000_000,
    source: "mock",
  });
  const metrics = await context.metrics.render();
  assert.match(metrics, /indexer_events_total\{outcome="indexed"\} 3/);
  assert.match(
    metrics,
    /event_log_consumer_lag\{group="twitter-indexer",partition="\d",topic="twitter-topic"\} 0/,
  );
  await service.stop();
  await eventLog.close();
});

Deno.test("indexer sends undecodable events to the dead-letter topic and moves on", async () => {
  const { service, eventLog, index } = await indexer();
  const codec = await loadTweetCodec();
  const key = encodeLongKey(1n);
  await eventLog.send(TOPIC, [
    { key, value: new TextEncoder().encode("not avro"), headers: { origin: "test" } },
    { key, value: codec.encode(tweet(5n, "after the bad one")) },
  ]);
  await waitFor("the good event indexed", async () => (await index.count()) === 1);
  const dead: ConsumedRecord[] = [];
  const reader = await eventLog.consume(
    { groupId: "dlq-reader", topics: ["twitter-topic.dlq"] },
    (batch) => {
      dead.push(...batch.records);
      return Promise.resolve();
    },
  );
  await waitFor("one dead letter", () => Promise.resolve(dead.length === 1));
  await reader.stop();
  const [letter] = dead;
  assert.deepEqual(letter?.value, new TextEncoder().encode("not avro"));
  assert.equal(letter?.headers.origin, "test");
  assert.equal(letter?.headers[DEAD_LETTER_HEADERS.errorCode], "event-decode");
  assert.match(letter?.headers[DEAD_LETTER_HEADERS.errorMessage] ?? "", /Cannot decode event/);
  assert.equal(letter?.headers[DEAD_LETTER_HEADERS.topic], TOPIC);
  assert.equal(letter?.headers[DEAD_LETTER_HEADERS.offset], "0");
  await service.stop();
  await eventLog.close();
});

/** An index that fails its first writes, as an overloaded engine would. */
class FlakyIndex extends MemorySearchIndex {
  failuresLeft = 3;
  override upsert(documents: readonly TweetDocument[]): Promise<void> {
    if (this.failuresLeft > 0) {
      this.failuresLeft--;
      return Promise.reject(new Error("index unavailable"));
    }
    return super.upsert(documents);
  }
}

Deno.test("indexer retries a failed write and commits only after it succeeds", async () => {
  const flaky = new FlakyIndex();
  const { service, eventLog, context } = await indexer(flaky);
  const codec = await loadTweetCodec();
  await eventLog.send(TOPIC, [{ key: encodeLongKey(3n), value: codec.encode(tweet(3n, "x")) }]);
  await waitFor("the write to succeed", async () => (await flaky.count()) === 1);
  await waitFor(
    "the commit",
    async () => (await eventLog.lag("twitter-indexer", TOPIC)).every((p) => p.lag === 0),
  );
  assert.equal(flaky.failuresLeft, 0);
  assert.match(await context.metrics.render(), /indexer_batch_failures_total 3/);
  await service.stop();
  await eventLog.close();
});

Deno.test("indexer continues the producer's trace for each tweet", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const { service, eventLog, index } = await indexer();
  const codec = await loadTweetCodec();
  const traceId = "0af7651916cd43dd8448eb211c80319c";
  await eventLog.send(TOPIC, [{
    key: encodeLongKey(8n),
    value: codec.encode(tweet(8n, "traced")),
    headers: { traceparent: `00-${traceId}-b7ad6b7169203331-01` },
  }]);
  await waitFor("the document", async () => (await index.count()) === 1);
  await service.stop();
  await eventLog.close();
  const span = exporter.getFinishedSpans().find((span) => span.name === `process ${TOPIC}`);
  assert.equal(span?.spanContext().traceId, traceId);
  assert.equal(span?.parentSpanContext?.spanId, "b7ad6b7169203331");
  assert.equal(span?.attributes["tweet.id"], "8");
  configureTracing();
});
