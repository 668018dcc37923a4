import assert from "node:assert/strict";
import type {
  ConsumedRecord,
  ProducerRecord,
  RecordBatch,
  Transaction,
} from "../../shared/event_log/event_log.ts";
import { MemoryEventLog } from "../../shared/event_log/memory_event_log.ts";
import { loadTweetCodec } from "../../shared/events/tweet_event.ts";
import { loadWordCountCodec } from "../../shared/events/word_count_event.ts";
import { parseWindowSize, WordCountProcessor } from "./word_counts.ts";

const tweetCodec = await loadTweetCodec();
const wordCountCodec = await loadWordCountCodec();
const TOPICS = {
  tweets: "tweets",
  repartition: "repartition",
  changelog: "changelog",
  wordCounts: "counts",
  partitions: 1,
};
const NOW = Date.UTC(2026, 10, 24, 10, 1, 30);
const WINDOWS = [parseWindowSize("1m")!, parseWindowSize("1h")!];

class RecordingTransaction implements Transaction {
  readonly sent: { topic: string; records: readonly ProducerRecord[] }[] = [];
  send(topic: string, records: readonly ProducerRecord[]): void {
    this.sent.push({ topic, records });
  }
  to(topic: string): ProducerRecord[] {
    return this.sent.filter((entry) => entry.topic === topic).flatMap((entry) => entry.records);
  }
}

function batch(topic: string, values: readonly ProducerRecord[]): RecordBatch {
  const records: ConsumedRecord[] = values.map((record, offset) => ({
    topic,
    partition: 0,
    offset,
    key: record.key,
    value: record.value,
    headers: {},
    timestamp: NOW,
  }));
  return { topic, partition: 0, records, highWatermark: records.length };
}

function tweet(text: string | null, createdAt: number): ProducerRecord {
  return {
    key: null,
    value: tweetCodec.encode({ id: 1n, userId: 2n, text, createdAt, source: "test" }),
  };
}

async function processor(eventLog: MemoryEventLog, undecodable: ConsumedRecord[] = []) {
  for (const name of [TOPICS.changelog, TOPICS.wordCounts, TOPICS.repartition]) {
    await eventLog.ensureTopic({ name, partitions: 1 });
  }
  const result = new WordCountProcessor({
    eventLog,
    topics: TOPICS,
    windows: WINDOWS,
    tweetCodec,
    wordCountCodec,
    now: () => NOW,
    onUndecodable: (record) => undecodable.push(record),
  });
  await result.restore([{ topic: TOPICS.repartition, partition: 0 }]);
  return result;
}

Deno.test("parseWindowSize reads seconds, minutes, hours and days only", () => {
  assert.deepEqual(parseWindowSize("30s"), { name: "30s", ms: 30_000 });
  assert.deepEqual(parseWindowSize("1d"), { name: "1d", ms: 86_400_000 });
  for (const bad of ["0m", "1", "m", "1w", "-1h", "1.5h"]) {
    assert.equal(parseWindowSize(bad), undefined, bad);
  }
});

Deno.test("word counts: all-time, tumbling windows, trending, changelog and restore", async () => {
  const eventLog = new MemoryEventLog();
  const undecodable: ConsumedRecord[] = [];
  const counter = await processor(eventLog, undecodable);
  const stage1 = new RecordingTransaction();
  await counter.handle(
    batch(TOPICS.tweets, [
      tweet("Kafka, kafka! DENO", NOW),
      tweet("kafka", NOW - 60_000), // the previous minute, same hour
      tweet("kafka", NOW - 3 * 3_600_000), // long ago: all-time only
      tweet(null, NOW),
      { key: null, value: new Uint8Array([1, 2, 3]) },
    ]),
    stage1,
  );
  assert.equal(undecodable.length, 1);
  const repartitioned = stage1.to(TOPICS.repartition);
  // One record per word of the batch, keyed by the word.
  assert.deepEqual(
    repartitioned.map((record) => new TextDecoder().decode(record.key!)).sort(),
    ["deno", "kafka"],
  );

  await counter.handle(batch(TOPICS.repartition, repartitioned), new RecordingTransaction());
  assert.deepEqual(counter.counts("kafka"), {
    word: "kafka",
    count: 4,
    windows: {
      "1m": { start: Date.UTC(2026, 10, 24, 10, 1), count: 2 },
      "1h": { start: Date.UTC(2026, 10, 24, 10), count: 3 },
    },
  });
  assert.equal(counter.counts("never")?.count, 0);
  assert.deepEqual(counter.trending(WINDOWS[0]!, 10), [
    { word: "kafka", count: 2 },
    { word: "deno", count: 1 },
  ]);
  assert.deepEqual(counter.trending(WINDOWS[0]!, 1), [{ word: "kafka", count: 2 }]);

  const commit = new RecordingTransaction();
  counter.flush(commit);
  const events = commit.to(TOPICS.wordCounts).map((record) => wordCountCodec.decode(record.value));
  assert.deepEqual(
    events.map(({ word, count, updatedAt }) => ({ word, count, updatedAt })).sort((a, b) =>
      a.word < b.word ? -1 : 1
    ),
    [{ word: "deno", count: 1n, updatedAt: NOW }, { word: "kafka", count: 4n, updatedAt: NOW }],
  );
  // Nothing changed since: the next commit carries nothing.
  const empty = new RecordingTransaction();
  counter.flush(empty);
  assert.equal(empty.sent.length, 0);

  // A new owner restores the same state from the changelog.
  await eventLog.send(TOPICS.changelog, commit.to(TOPICS.changelog));
  const restored = await processor(eventLog);
  assert.deepEqual(restored.counts("kafka"), counter.counts("kafka"));
  assert.deepEqual(restored.ownedPartitions(), [0]);
  restored.revoke([{ topic: TOPICS.repartition, partition: 0 }]);
  assert.equal(restored.counts("kafka"), undefined);
  assert.deepEqual(restored.ownedPartitions(), []);
  await eventLog.close();
});

/** Stage 1's output for tweets `from` to `to` (inclusive) of tweet partition `partition`. */
async function repartitioned(
  counter: WordCountProcessor,
  partition: number,
  texts: readonly string[],
  from: number,
  to: number,
): Promise<ProducerRecord[]> {
  const records: ConsumedRecord[] = [];
  for (let offset = from; offset <= to; offset++) {
    const { value } = tweet(texts[offset]!, NOW);
    records.push({
      topic: TOPICS.tweets,
      partition,
      offset,
      key: null,
      value,
      headers: {},
      timestamp: NOW,
    });
  }
  const transaction = new RecordingTransaction();
  await counter.handle(
    { topic: TOPICS.tweets, partition, records, highWatermark: to + 1 },
    transaction,
  );
  return transaction.to(TOPICS.repartition);
}

Deno.test("word counts: tweets repartitioned twice by two producers count once, also after a restore", async () => {
  const eventLog = new MemoryEventLog();
  const counter = await processor(eventLog);
  // Two tweet partitions; "kafka" is in every tweet, twice in some.
  const first = [
    "kafka deno",
    "kafka kafka",
    "kafka streams",
    "kafka",
    "kafka deno deno",
    "kafka",
    "kafka once",
    "kafka",
  ];
  const second = ["kafka java", "kafka kafka java", "kafka"];
  // Producer A commits offsets 0-3 and 4-7 of the first partition; producer B
  // read the committed offset 0 while A's second commit was in flight and
  // batches differently: 0-5, then 6-7. Both process the second partition whole.
  const a1 = await repartitioned(counter, 0, first, 0, 3);
  const a2 = await repartitioned(counter, 0, first, 4, 7);
  const b1 = await repartitioned(counter, 0, first, 0, 5);
  const b2 = await repartitioned(counter, 0, first, 6, 7);
  const aSecond = await repartitioned(counter, 1, second, 0, 2);
  const bSecond = await repartitioned(counter, 1, second, 0, 2);
  // Each producer's records in its order, the two interleaved.
  for (const records of [a1, b1, a2, b2, bSecond, aSecond]) {
    await counter.handle(batch(TOPICS.repartition, records), new RecordingTransaction());
  }
  const expected = { kafka: 13, deno: 3, streams: 1, once: 1, java: 2 };
  const counts = () =>
    Object.fromEntries(Object.keys(expected).map((word) => [word, counter.counts(word)?.count]));
  assert.deepEqual(counts(), expected);
  assert.equal(counter.counts("kafka")?.windows["1m"]?.count, 13);

  // The applied offsets are state: a new owner restored from the changelog
  // skips the same records delivered again, and has nothing to commit.
  const commit = new RecordingTransaction();
  counter.flush(commit);
  await eventLog.send(TOPICS.changelog, commit.to(TOPICS.changelog));
  const restored = await processor(eventLog);
  for (const records of [b1, a1, a2, b2, aSecond, bSecond]) {
    await restored.handle(batch(TOPICS.repartition, records), new RecordingTransaction());
  }
  assert.deepEqual(
    Object.fromEntries(Object.keys(expected).map((word) => [word, restored.counts(word)?.count])),
    expected,
  );
  const nothing = new RecordingTransaction();
  restored.flush(nothing);
  assert.equal(nothing.sent.length, 0);

  // Tweets after the applied ones still count.
  first.push("kafka deno");
  await restored.handle(
    batch(TOPICS.repartition, await repartitioned(restored, 0, first, 8, 8)),
    new RecordingTransaction(),
  );
  assert.equal(restored.counts("kafka")?.count, 14);
  assert.equal(restored.counts("deno")?.count, 4);
  await eventLog.close();
});
