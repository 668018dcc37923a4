/**
 * KafkaEventLog against a real broker: the shared contract plus what only a
 * real Kafka shows. The broker is `KAFKA_BROKERS` (comma-separated) or the
 * one `deno task engines up kafka` starts; when it is unreachable every test
 * fails with that advice, none is skipped.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { ConfigResourceTypes, Kafka, logLevel, Partitioners } from "kafkajs";
import type {
  BatchHandler,
  EventLog,
  PartitionLag,
  ProducerRecord,
  RecordMetadata,
  TopicSpec,
} from "./event_log.ts";
import { EventLogClosedError, UnknownTopicError } from "./event_log.ts";
import {
  collector,
  keyedRecords,
  runCompressedDeliveryTest,
  runEventLogContract,
  text,
  textOf,
  uniqueName,
  waitForAssignment,
  waitForNoLag,
} from "./event_log_contract.ts";
import { createKafkaClient, type KafkaLogEntry } from "./kafka_client.ts";
import { KafkaEventLog, type KafkaEventLogOptions } from "./kafka_event_log.ts";
import { encodeLongKey, partitionForKey } from "./murmur2.ts";
import { delay, waitFor } from "../testing/wait.ts";

const BROKERS = Deno.env.get("KAFKA_BROKERS") ?? "127.0.0.1:19092";
const brokers = BROKERS.split(",").map((broker) => broker.trim()).filter(Boolean);

/** A client that fails at once instead of retrying, for set-up and clean-up. */
function quickClient(): Kafka {
  return new Kafka({
    brokers,
    clientId: "kafka-event-log-test",
    connectionTimeout: 2000,
    requestTimeout: 10_000,
    retry: { retries: 0 },
    logLevel: logLevel.NOTHING,
  });
}

let reachable: Promise<void> | undefined;

/** Fails (once per file, cached) with how to start Kafka when it does not answer. */
function assertReachable(): Promise<void> {
  reachable ??= (async () => {
    const admin = quickClient().admin();
    try {
      await admin.connect();
      await admin.describeCluster();
    } catch (error) {
      throw new Error(
        `Kafka is not reachable at ${BROKERS}: start it with \`deno task engines up kafka\` (${
          error instanceof Error ? error.message : String(error)
        })`,
      );
    } finally {
      await admin.disconnect();
    }
  })();
  return reachable;
}

function client(): Kafka {
  return createKafkaClient({ brokers });
}

/**
 * The adapter under test, deleting the topics it created when closed so that
 * repeated runs leave the shared broker as they found it.
 */
class CleanLog implements EventLog {
  readonly #log: KafkaEventLog;
  readonly #topics = new Set<string>();

  constructor(options: KafkaEventLogOptions = {}) {
    this.#log = new KafkaEventLog(client(), options);
  }

  async ensureTopic(spec: TopicSpec): Promise<void> {
    this.#topics.add(spec.name);
    await this.#log.ensureTopic(spec);
  }

  send(topic: string, records: readonly ProducerRecord[]): Promise<RecordMetadata[]> {
    return this.#log.send(topic, records);
  }

  consume(...args: Parameters<EventLog["consume"]>): ReturnType<EventLog["consume"]> {
    return this.#log.consume(...args);
  }

  consumeTransactional(
    ...args: Parameters<EventLog["consumeTransactional"]>
  ): ReturnType<EventLog["consumeTransactional"]> {
    return this.#log.consumeTransactional(...args);
  }

  readPartition(
    ...args: Parameters<EventLog["readPartition"]>
  ): ReturnType<EventLog["readPartition"]> {
    return this.#log.readPartition(...args);
  }

  lag(groupId: string, topic: string): Promise<PartitionLag[]> {
    return this.#log.lag(groupId, topic);
  }

  ping(): Promise<void> {
    return this.#log.ping();
  }

  async close(): Promise<void> {
    try {
      await this.#log.close();
    } finally {
      if (this.#topics.size > 0) {
        const admin = quickClient().admin();
        try {
          await admin.connect();
          await admin.deleteTopics({ topics: [...this.#topics] });
        } catch {
          // Unique names keep a leftover topic from disturbing another run.
        } finally {
          await admin.disconnect();
        }
      }
    }
  }
}

async function createLog(options: KafkaEventLogOptions = {}): Promise<CleanLog> {
  await assertReachable();
  return new CleanLog(options);
}

runEventLogContract("KafkaEventLog", () => createLog());
// The contract runs uncompressed (KAFKA_COMPRESSION's default); kafkajs's one codec once here.
runCompressedDeliveryTest("KafkaEventLog", "gzip", () => createLog({ compression: "gzip" }));

/** Runs `body` with a fresh log, closing it whatever happens. */
async function withLog(
  body: (log: CleanLog) => Promise<void>,
  options: KafkaEventLogOptions = {},
): Promise<void> {
  const log = await createLog(options);
  try {
    await body(log);
  } finally {
    await log.close();
  }
}

async function createTopic(log: EventLog, prefix: string, partitions: number): Promise<string> {
  const topic = uniqueName(prefix);
  await log.ensureTopic({ name: topic, partitions });
  return topic;
}

function id(record: { partition: number; offset: number }): string {
  return `${record.partition}/${record.offset}`;
}

Deno.test("KafkaEventLog uses kafkajs's Java-compatible partitioner for keys", () => {
  const partitioner = Partitioners.DefaultPartitioner();
  const keys = [
    ...[0n, 1n, 42n, -1n, 1234567890123n, 9223372036854775807n].map(encodeLongKey),
    ...Array.from({ length: 200 }, (_, i) => crypto.getRandomValues(new Uint8Array(i % 23))),
  ];
  for (const partitions of [1, 3, 6, 12, 50]) {
    const partitionMetadata = Array.from({ length: partitions }, (_, partitionId) => ({
      partitionId,
      leader: 1,
      partitionErrorCode: 0,
      replicas: [1],
      isr: [1],
    }));
    for (const key of keys) {
      const chosen = partitioner({
        topic: "t",
        partitionMetadata,
        message: { key: Buffer.from(key), value: null },
      });
      assert.equal(chosen, partitionForKey(key, partitions), `key ${[...key]} of ${partitions}`);
    }
  }
});

Deno.test("KafkaEventLog stores keyed records where a plain kafkajs producer puts them", () =>
  withLog(async (log) => {
    const partitions = 6;
    const topic = await createTopic(log, "kafka-partitioner", partitions);
    const keys = Array.from({ length: 40 }, (_, i) => encodeLongKey(BigInt(i * 7919 - 100)));
    // A kafkajs producer that picks partitions itself, as another service would.
    const producer = quickClient().producer({
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    try {
      await producer.send({
        topic,
        acks: -1,
        messages: keys.map((key, i) => ({ key: Buffer.from(key), value: `plain-${i}` })),
      });
    } finally {
      await producer.disconnect();
    }
    const sent = await log.send(topic, keys.map((key, i) => ({ key, value: text(`log-${i}`) })));
    sent.forEach((metadata, i) => assert.equal(metadata.partition, partitionForKey(keys[i]!, 6)));

    const groupId = uniqueName("kafka-group");
    const { records, handler } = collector();
    const member = await log.consume({ groupId, topics: [topic] }, handler);
    await waitForNoLag(log, groupId, topic);
    await member.stop();
    assert.equal(records.length, 80);
    for (const record of records) {
      assert.ok(record.key !== null);
      assert.equal(record.partition, partitionForKey(record.key, partitions), textOf(record));
    }
  }));

Deno.test("KafkaEventLog reports each record's offset in a multi-partition send", () =>
  withLog(async (log) => {
    const topic = await createTopic(log, "kafka-offsets", 4);
    // Keys interleave partitions; unkeyed records go round-robin.
    const batch = (first: number): ProducerRecord[] =>
      Array.from({ length: 60 }, (_, i) => ({
        key: i % 5 === 4 ? null : encodeLongKey(BigInt((first + i) % 9)),
        value: text(`v${first + i}`),
      }));
    const sent = [...await log.send(topic, batch(0)), ...await log.send(topic, batch(60))];
    const expected = new Map(sent.map((metadata, i) => [id(metadata), `v${i}`]));
    assert.equal(expected.size, sent.length, "offsets must not repeat within a partition");
    for (let partition = 0; partition < 4; partition++) {
      const offsets = sent.filter((m) => m.partition === partition).map((m) => m.offset);
      assert.deepEqual(offsets, offsets.map((_, i) => i), `offsets of partition ${partition}`);
    }

    const groupId = uniqueName("kafka-group");
    const { records, handler } = collector();
    const member = await log.consume({ groupId, topics: [topic] }, handler);
    await waitForNoLag(log, groupId, topic);
    await member.stop();
    assert.equal(records.length, sent.length);
    for (const record of records) assert.equal(textOf(record), expected.get(id(record)));
  }));

Deno.test("KafkaEventLog hands a member's partitions over mid-stream, losing nothing", () =>
  withLog(async (log) => {
    const partitions = 4;
    const topic = await createTopic(log, "kafka-handover", partitions);
    const groupId = uniqueName("kafka-group");
    const processed = new Map<string, string[]>();
    let firstStopped = false;
    const lateCalls: string[] = [];
    const handlerOf = (label: string): BatchHandler => async (batch) => {
      if (label === "first" && firstStopped) lateCalls.push(id(batch.records[0]!));
      await delay(2);
      for (const record of batch.records) {
        processed.set(id(record), [...processed.get(id(record)) ?? [], label]);
      }
    };
    const options = { groupId, topics: [topic], maxBatchSize: 5 };
    const first = await log.consume(options, handlerOf("first"));
    const second = await log.consume(options, handlerOf("second"));
    await waitForAssignment([first, second], partitions);

    // Produce continuously while the first member stops.
    const sent: RecordMetadata[] = [];
    let producing = true;
    const producer = (async () => {
      for (let round = 0; producing; round++) {
        sent.push(...await log.send(topic, keyedRecords(20, 13, round * 20)));
        await delay(20);
      }
    })();
    try {
      await waitFor(
        "the first member to process records",
        () => [...processed.values()].some((labels) => labels.includes("first")),
      );
      await first.stop();
      firstStopped = true;
      assert.deepEqual(first.assignment(), []);
      await waitForAssignment([second], partitions);
      await delay(500);
    } finally {
      producing = false;
      await producer;
    }
    await waitForNoLag(log, groupId, topic);
    await second.stop();

    assert.deepEqual(lateCalls, []);
    const missing = sent.filter((metadata) => !processed.has(id(metadata)));
    assert.deepEqual(missing, []);
    // The stopping member committed what it processed: nothing was delivered twice.
    const twice = [...processed].filter(([, labels]) => labels.length > 1);
    assert.deepEqual(twice, []);
    assert.equal(processed.size, sent.length);
  }));

Deno.test("KafkaEventLog stop waits for the batch in progress and commits it", () =>
  withLog(async (log) => {
    const topic = await createTopic(log, "kafka-stop", 1);
    const groupId = uniqueName("kafka-group");
    await log.send(topic, keyedRecords(3, 1));
    const release = Promise.withResolvers<void>();
    let started = false;
    const member = await log.consume({ groupId, topics: [topic] }, () => {
      started = true;
      return release.promise;
    });
    await waitFor("the handler to start", () => started);
    let stopped = false;
    const stopping = member.stop().then(() => stopped = true);
    await delay(200);
    assert.equal(stopped, false);
    release.resolve();
    await stopping;
    assert.deepEqual(member.assignment(), []);
    assert.deepEqual(await log.lag(groupId, topic), [
      { topic, partition: 0, committedOffset: 3, highWatermark: 3, lag: 0 },
    ]);
  }));

Deno.test("KafkaEventLog backs off a failing partition and keeps the others flowing", () =>
  withLog(async (log) => {
    const topic = await createTopic(log, "kafka-backoff", 2);
    const groupId = uniqueName("kafka-group");
    const unkeyed = Array.from({ length: 20 }, (_, i) => ({ key: null, value: text(`u${i}`) }));
    await log.send(topic, unkeyed);
    const processed: number[] = [];
    const failedAt: number[] = [];
    const attempts: number[] = [];
    const member = await log.consume({
      groupId,
      topics: [topic],
      maxBatchSize: 2,
      onBatchError: (_error, batch, attempt) => {
        assert.equal(batch.records[0]?.offset, 0);
        attempts.push(attempt);
      },
    }, (batch) => {
      if (batch.partition === 0) {
        failedAt.push(performance.now());
        return Promise.reject(new Error("Cannot process batch"));
      }
      processed.push(...batch.records.map((record) => record.offset));
      return Promise.resolve();
    });
    await waitFor("partition 1 to be processed", () => processed.length === 10);
    await waitFor("four failures on partition 0", () => attempts.length >= 4);
    await member.stop();
    assert.deepEqual(processed, Array.from({ length: 10 }, (_, i) => i));
    assert.deepEqual(attempts.slice(0, 4), [1, 2, 3, 4]);
    const gaps = failedAt.slice(1, 4).map((time, i) => time - failedAt[i]!);
    // Redelivery waits for the back-off (100, 200, 400 ms), then for the next fetch.
    [100, 200, 400].forEach((backoff, i) => assert.ok(gaps[i]! >= backoff - 5, `gap ${gaps[i]}`));
    const lag = await log.lag(groupId, topic);
    assert.equal(lag[0]?.committedOffset, 0);
    assert.equal(lag[1]?.lag, 0);
  }));

Deno.test("KafkaEventLog commits where a group that skips old records starts", () =>
  withLog(async (log) => {
    const partitions = 3;
    const topic = await createTopic(log, "kafka-latest", partitions);
    const sent = await log.send(topic, keyedRecords(30, 11));
    const groupId = uniqueName("kafka-group");
    const { records, handler } = collector();
    const member = await log.consume({ groupId, topics: [topic], fromBeginning: false }, handler);
    await waitForAssignment([member], partitions);
    // The start is committed, so a later owner of a partition starts there too.
    const lag = await log.lag(groupId, topic);
    for (const partition of lag) {
      const count = sent.filter((m) => m.partition === partition.partition).length;
      assert.deepEqual(partition, { ...partition, committedOffset: count, lag: 0 });
    }
    await member.stop();
    await log.send(topic, keyedRecords(6, 11, 30));
    const restarted = await log.consume(
      { groupId, topics: [topic], fromBeginning: false },
      handler,
    );
    await waitForNoLag(log, groupId, topic);
    await restarted.stop();
    assert.deepEqual(records.map(textOf).sort(), ["v30", "v31", "v32", "v33", "v34", "v35"]);
  }));

Deno.test("KafkaEventLog rejects unknown topics and invalid arguments", () =>
  withLog(async (log) => {
    const missing = uniqueName("kafka-missing");
    const isUnknown = (error: unknown) =>
      error instanceof UnknownTopicError && error.code === "unknown-topic" &&
      error.topic === missing;
    await assert.rejects(log.send(missing, keyedRecords(1, 1)), isUnknown);
    await assert.rejects(log.lag("group", missing), isUnknown);
    await assert.rejects(
      log.consume({ groupId: "group", topics: [missing] }, () => Promise.resolve()),
      isUnknown,
    );
    await assert.rejects(log.ensureTopic({ name: missing, partitions: 0 }), RangeError);
    const topic = await createTopic(log, "kafka-args", 1);
    await assert.rejects(
      log.consume({ groupId: "g", topics: [topic], maxBatchSize: 0 }, () => Promise.resolve()),
      RangeError,
    );
    assert.deepEqual(await log.send(topic, []), []);
  }));

Deno.test({
  name: "KafkaEventLog close stops members and leaves no timer or connection behind",
  sanitizeOps: true,
  sanitizeResources: true,
  fn: async () => {
    const log = await createLog({ retryBackoffMs: 60_000 });
    const topic = await createTopic(log, "kafka-close", 2);
    await log.send(topic, keyedRecords(4, 2));
    let failures = 0;
    await log.consume(
      { groupId: uniqueName("kafka-group"), topics: [topic], onBatchError: () => failures++ },
      () => Promise.reject(new Error("Cannot process batch")),
    );
    const idle = await log.consume(
      { groupId: uniqueName("kafka-group"), topics: [topic], fromBeginning: false },
      () => Promise.resolve(),
    );
    await log.ping();
    // Both partitions now wait on a one-minute back-off timer.
    await waitFor("both partitions to fail", () => failures >= 2);
    await log.close();
    assert.deepEqual(idle.assignment(), []);
    const closed = (error: unknown) =>
      error instanceof EventLogClosedError && error.code === "event-log-closed";
    await assert.rejects(log.ping(), closed);
    await assert.rejects(log.send(topic, keyedRecords(1, 1)), closed);
  },
});

Deno.test("KafkaEventLog ping rejects promptly when no broker answers", async () => {
  // Retries are cut short so that close, which waits for them, is quick too.
  const kafka = createKafkaClient({
    brokers: ["127.0.0.1:1"],
    connectionTimeoutMs: 500,
    retry: { retries: 2, initialRetryTime: 100 },
  });
  const log = new KafkaEventLog(kafka, { pingTimeoutMs: 1000 });
  try {
    const started = Date.now();
    await assert.rejects(log.ping());
    assert.ok(Date.now() - started < 3000, `ping took ${Date.now() - started} ms`);
  } finally {
    await log.close();
  }
});

Deno.test("createKafkaClient routes kafkajs logs to onLog only, at its level", () => {
  const entries: KafkaLogEntry[] = [];
  const logger = (level: KafkaLogEntry["level"]) =>
    createKafkaClient({ brokers, logLevel: level, onLog: (entry) => entries.push(entry) })
      .logger();
  const errorsOnly = logger("error");
  errorsOnly.namespace("Consumer").error("Crash: it broke", { groupId: "g" });
  errorsOnly.namespace("Consumer").warn("a warning");
  // An expected broker answer (here a rebalance) is only a warning.
  errorsOnly.namespace("Connection").error("Response Heartbeat(key: 12, version: 3)", {});
  logger("warn").namespace("Connection").error("Response Heartbeat(key: 12, version: 3)", {});
  assert.deepEqual(entries, [
    {
      level: "error",
      namespace: "Consumer",
      message: "Crash: it broke",
      details: { groupId: "g" },
    },
    {
      level: "warn",
      namespace: "Connection",
      message: "Response Heartbeat(key: 12, version: 3)",
      details: {},
    },
  ]);
});

Deno.test("KafkaEventLog creates a compacted topic with cleanup.policy=compact", () =>
  withLog(async (log) => {
    const topic = uniqueName("kafka-compacted");
    const plain = uniqueName("kafka-plain");
    await log.ensureTopic({ name: topic, partitions: 2, compacted: true });
    await log.ensureTopic({ name: plain, partitions: 1 });
    const admin = quickClient().admin();
    await admin.connect();
    try {
      const { resources } = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [topic, plain].map((name) => ({
          type: ConfigResourceTypes.TOPIC,
          name,
          configNames: ["cleanup.policy"],
        })),
      });
      const policy = (name: string) =>
        resources.find((resource) => resource.resourceName === name)?.configEntries
          .find((entry) => entry.configName === "cleanup.policy")?.configValue;
      assert.equal(policy(topic), "compact");
      assert.equal(policy(plain), "delete");
    } finally {
      await admin.disconnect();
    }
  }));
