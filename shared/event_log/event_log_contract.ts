/**
 * The behaviour every `EventLog` adapter must show, as Deno tests. Adapter
 * test files call `runEventLogContract` with a factory. The cases use only the
 * port, unique topic and group names, and wait for conditions with a deadline
 * rather than for fixed times, so they also hold against a shared real broker.
 */

import assert from "node:assert/strict";
import {
  type BatchHandler,
  type ConsumedRecord,
  type ConsumerGroupMember,
  type EventLog,
  type ProducerRecord,
  type RecordBatch,
  TopicMismatchError,
  type TopicPartition,
  type Transaction,
} from "./event_log.ts";
import { encodeLongKey, partitionForKey } from "./murmur2.ts";
import { delay, waitFor } from "../testing/wait.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A name no other test run uses, so a shared broker keeps runs apart. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
}

export function text(value: string): Uint8Array {
  return encoder.encode(value);
}

export function textOf(record: ConsumedRecord): string {
  return decoder.decode(record.value);
}

/** Records keyed by user id `i % users`, with value `v{i}`. */
export function keyedRecords(count: number, users: number, first = 0): ProducerRecord[] {
  return Array.from({ length: count }, (_, i) => ({
    key: encodeLongKey(BigInt((first + i) % users)),
    value: text(`v${first + i}`),
  }));
}

/** A handler that keeps every record it is given. */
export function collector(): { records: ConsumedRecord[]; handler: BatchHandler } {
  const records: ConsumedRecord[] = [];
  return {
    records,
    handler: (batch) => {
      records.push(...batch.records);
      return Promise.resolve();
    },
  };
}

export async function waitForNoLag(log: EventLog, groupId: string, topic: string): Promise<void> {
  await waitFor(`group '${groupId}' to catch up on '${topic}'`, async () => {
    const lag = await log.lag(groupId, topic);
    return lag.every((partition) => partition.lag === 0);
  });
}

/** Waits until the members together own all `partitions`, each partition once. */
export async function waitForAssignment(
  members: readonly ConsumerGroupMember[],
  partitions: number,
): Promise<void> {
  await waitFor(`${members.length} members to own ${partitions} partitions`, () => {
    const owned = members.flatMap((member) => member.assignment());
    return owned.length === partitions && new Set(owned.map(partitionId)).size === partitions &&
      members.every((member) => member.assignment().length > 0);
  });
}

function partitionId({ topic, partition }: TopicPartition): string {
  return `${topic}/${partition}`;
}

/** Offsets received per partition, in order of receipt. */
function offsetsByPartition(records: readonly ConsumedRecord[]): Map<number, number[]> {
  const offsets = new Map<number, number[]>();
  for (const record of records) {
    const list = offsets.get(record.partition) ?? [];
    list.push(record.offset);
    offsets.set(record.partition, list);
  }
  return offsets;
}

function range(start: number, end: number): number[] {
  return Array.from({ length: end - start }, (_, i) => start + i);
}

async function createTopic(log: EventLog, prefix: string, partitions: number): Promise<string> {
  const topic = uniqueName(prefix);
  await log.ensureTopic({ name: topic, partitions });
  return topic;
}

/**
 * One test: records sent by a log made to compress with `compression` reach a
 * group, values and headers whole, and a partition read sees every one.
 */
export function runCompressedDeliveryTest(
  name: string,
  compression: string,
  createLog: () => Promise<EventLog>,
): void {
  Deno.test(`${name}: records compressed with ${compression} reach a group and a partition read whole`, async () => {
    const log = await createLog();
    try {
      const topic = await createTopic(log, `compressed-${compression}`, 2);
      const sent = keyedRecords(300, 7).map((record, i) => ({
        ...record,
        headers: { traceparent: `trace-${i}` },
      }));
      await log.send(topic, sent);
      const { records, handler } = collector();
      const member = await log.consume(
        { groupId: uniqueName("compressed"), topics: [topic], fromBeginning: true },
        handler,
      );
      try {
        await waitFor("every compressed record", () => records.length >= sent.length);
      } finally {
        await member.stop();
      }
      assert.deepEqual(
        records.map((record) => `${textOf(record)} ${record.headers.traceparent}`).sort(),
        sent.map((_, i) => `v${i} trace-${i}`).sort(),
      );
      let read = 0;
      for (const partition of [0, 1]) {
        await log.readPartition(topic, partition, 0, (batch) => read += batch.length);
      }
      assert.equal(read, sent.length);
    } finally {
      await log.close();
    }
  });
}

export function runEventLogContract(name: string, createLog: () => Promise<EventLog>): void {
  /** Runs `body` with a fresh log, closing it whatever happens. */
  async function withLog(body: (log: EventLog) => Promise<void>): Promise<void> {
    const log = await createLog();
    try {
      await body(log);
    } finally {
      await log.close();
    }
  }

  Deno.test(`${name} answers ping`, () => withLog((log) => log.ping()));

  Deno.test(`${name} ensureTopic is idempotent and rejects another partition count`, () =>
    withLog(async (log) => {
      const topic = uniqueName("contract-topic");
      await log.ensureTopic({ name: topic, partitions: 3 });
      await log.ensureTopic({ name: topic, partitions: 3 });
      await assert.rejects(
        log.ensureTopic({ name: topic, partitions: 5 }),
        (error: unknown) => {
          assert.ok(error instanceof TopicMismatchError);
          assert.equal(error.code, "topic-mismatch");
          assert.equal(error.topic, topic);
          assert.equal(error.expected, 5);
          assert.equal(error.actual, 3);
          return true;
        },
      );
      const lag = await log.lag(uniqueName("contract-group"), topic);
      assert.deepEqual(lag.map((partition) => partition.partition), [0, 1, 2]);
    }));

  Deno.test(`${name} sends equal keys to the partition partitionForKey picks`, () =>
    withLog(async (log) => {
      const partitions = 6;
      const topic = await createTopic(log, "contract-keys", partitions);
      const users = [0n, 1n, 42n, -1n, 1234567890123n, 9223372036854775807n];
      const records = users.map((user) => ({ key: encodeLongKey(user), value: text(`${user}`) }));
      const first = await log.send(topic, records);
      const second = await log.send(topic, records);
      for (const [i, user] of users.entries()) {
        const expected = partitionForKey(encodeLongKey(user), partitions);
        assert.equal(first[i]?.partition, expected, `partition of user ${user}`);
        assert.equal(second[i]?.partition, expected, `partition of user ${user} again`);
        assert.equal(first[i]?.topic, topic);
      }
    }));

  Deno.test(`${name} assigns consecutive offsets per partition in send order`, () =>
    withLog(async (log) => {
      const topic = await createTopic(log, "contract-offsets", 3);
      const metadata = [
        ...await log.send(topic, keyedRecords(20, 7)),
        ...await log.send(topic, keyedRecords(1, 7, 20)),
        ...await log.send(topic, keyedRecords(19, 7, 21)),
      ];
      const offsets = new Map<number, number[]>();
      for (const { partition, offset } of metadata) {
        offsets.set(partition, [...offsets.get(partition) ?? [], offset]);
      }
      for (const [partition, list] of offsets) {
        assert.deepEqual(list, range(0, list.length), `offsets of partition ${partition}`);
      }
      const lag = await log.lag(uniqueName("contract-group"), topic);
      for (const partition of lag) {
        assert.equal(partition.highWatermark, offsets.get(partition.partition)?.length ?? 0);
      }
    }));

  Deno.test(`${name} keeps keys, headers and timestamps of records`, () =>
    withLog(async (log) => {
      const topic = await createTopic(log, "contract-headers", 1);
      const timestamp = Date.now() - 60_000;
      const before = Date.now();
      await log.send(topic, [
        {
          key: text("user-1"),
          value: text("first"),
          headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
          timestamp,
        },
        { key: null, value: text("second") },
      ]);
      const after = Date.now();
      const groupId = uniqueName("contract-group");
      const { records, handler } = collector();
      await log.consume({ groupId, topics: [topic] }, handler);
      await waitFor("both records", () => records.length === 2);
      const [first, second] = records;
      assert.ok(first !== undefined && second !== undefined);
      assert.deepEqual([...first.key ?? []], [...text("user-1")]);
      assert.equal(textOf(first), "first");
      assert.deepEqual({ ...first.headers }, {
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      });
      assert.equal(first.timestamp, timestamp);
      assert.equal(second.key, null);
      assert.equal(textOf(second), "second");
      assert.deepEqual({ ...second.headers }, {});
      // A default timestamp is the time of sending; the margin allows for broker clock skew.
      assert.ok(second.timestamp >= before - 5000 && second.timestamp <= after + 5000);
    }));

  Deno.test(
    `${name} handles partitions concurrently but each partition one batch at a time, in order`,
    () =>
      withLog(async (log) => {
        const topic = await createTopic(log, "contract-concurrent", 3);
        await log.send(topic, keyedRecords(300, 13));
        const groupId = uniqueName("contract-group");
        const records: ConsumedRecord[] = [];
        const busy = new Set<number>();
        let overlaps = 0;
        const member = await log.consume(
          { groupId, topics: [topic], maxBatchSize: 10, partitionConcurrency: 3 },
          async (batch) => {
            // Counted, not asserted here: a failing handler is only redelivered.
            if (busy.has(batch.partition)) overlaps++;
            busy.add(batch.partition);
            await delay(2);
            records.push(...batch.records);
            busy.delete(batch.partition);
          },
        );
        await waitForNoLag(log, groupId, topic);
        await member.stop();
        assert.equal(overlaps, 0, "a partition was handled twice at once");
        assert.equal(records.length, 300);
        for (const [partition, offsets] of offsetsByPartition(records)) {
          assert.deepEqual(offsets, range(0, offsets.length), `offsets of partition ${partition}`);
        }
      }),
  );

  Deno.test(`${name} delivers every record to a group exactly once in partition order`, () =>
    withLog(async (log) => {
      const topic = await createTopic(log, "contract-order", 3);
      const sent = [
        ...await log.send(topic, keyedRecords(100, 13)),
        ...await log.send(topic, keyedRecords(100, 13, 100)),
      ];
      const groupId = uniqueName("contract-group");
      const records: ConsumedRecord[] = [];
      const batches: RecordBatch[] = [];
      const member = await log.consume({ groupId, topics: [topic], maxBatchSize: 7 }, (batch) => {
        batches.push(batch);
        records.push(...batch.records);
        return Promise.resolve();
      });
      sent.push(...await log.send(topic, keyedRecords(100, 13, 200)));
      await waitForNoLag(log, groupId, topic);
      await member.stop();

      assert.equal(records.length, 300);
      const byPartition = offsetsByPartition(records);
      for (const [partition, offsets] of byPartition) {
        const count = sent.filter((metadata) => metadata.partition === partition).length;
        assert.deepEqual(offsets, range(0, count), `offsets of partition ${partition}`);
      }
      // Values come back where the send reported them.
      const expected = new Map(sent.map((m, i) => [`${m.partition}/${m.offset}`, `v${i}`]));
      for (const record of records) {
        assert.equal(textOf(record), expected.get(`${record.partition}/${record.offset}`));
      }
      for (const batch of batches) {
        assert.ok(batch.records.length > 0 && batch.records.length <= 7);
        assert.equal(batch.topic, topic);
        batch.records.forEach((record, i) => {
          assert.equal(record.topic, topic);
          assert.equal(record.partition, batch.partition);
          assert.equal(record.offset, batch.records[0]!.offset + i);
        });
        assert.ok(batch.highWatermark > batch.records.at(-1)!.offset);
      }
    }));

  Deno.test(`${name} continues a restarted member from the group's committed offsets`, () =>
    withLog(async (log) => {
      const topic = await createTopic(log, "contract-restart", 2);
      const groupId = uniqueName("contract-group");
      await log.send(topic, keyedRecords(30, 5));
      const first = collector();
      const member = await log.consume({ groupId, topics: [topic] }, first.handler);
      await waitForNoLag(log, groupId, topic);
      await member.stop();
      assert.equal(first.records.length, 30);
      const committed = await log.lag(groupId, topic);

      await log.send(topic, keyedRecords(20, 5, 30));
      const second = collector();
      const restarted = await log.consume({ groupId, topics: [topic] }, second.handler);
      await waitForNoLag(log, groupId, topic);
      await restarted.stop();

      assert.deepEqual(second.records.map(textOf).sort(), range(30, 50).map((i) => `v${i}`).sort());
      for (const record of second.records) {
        const start = committed.find((p) => p.partition === record.partition)?.committedOffset;
        assert.ok(start !== undefined && record.offset >= start);
      }
    }));

  Deno.test(`${name} redelivers a batch whose handler failed and commits nothing meanwhile`, () =>
    withLog(async (log) => {
      const topic = await createTopic(log, "contract-retry", 1);
      const groupId = uniqueName("contract-group");
      await log.send(topic, keyedRecords(5, 3));
      const failures: { message: string; attempt: number; firstOffset: number }[] = [];
      const attempts: number[] = [];
      const committedDuringRetries: number[] = [];
      const processed: ConsumedRecord[] = [];
      await log.consume({
        groupId,
        topics: [topic],
        onBatchError: (error, batch, attempt) => {
          failures.push({
            message: error instanceof Error ? error.message : String(error),
            attempt,
            firstOffset: batch.records[0]?.offset ?? -1,
          });
        },
      }, async (batch) => {
        attempts.push(batch.records[0]?.offset ?? -1);
        if (attempts.length <= 2) {
          const lag = await log.lag(groupId, topic);
          committedDuringRetries.push(lag[0]?.committedOffset ?? -1);
          throw new Error(`Cannot process batch: attempt ${attempts.length} fails`);
        }
        processed.push(...batch.records);
      });
      await waitForNoLag(log, groupId, topic);

      assert.deepEqual(failures, [
        { message: "Cannot process batch: attempt 1 fails", attempt: 1, firstOffset: 0 },
        { message: "Cannot process batch: attempt 2 fails", attempt: 2, firstOffset: 0 },
      ]);
      assert.deepEqual(attempts.slice(0, 3), [0, 0, 0]);
      assert.deepEqual(committedDuringRetries, [0, 0]);
      assert.deepEqual(processed.map((record) => record.offset), [0, 1, 2, 3, 4]);
    }));

  Deno.test(
    `${name} splits partitions between two members and hands them over without loss`,
    () =>
      withLog(async (log) => {
        const partitions = 4;
        const topic = await createTopic(log, "contract-split", partitions);
        const groupId = uniqueName("contract-group");
        const active = new Map<number, string>();
        const overlaps: string[] = [];
        const processed = new Set<string>();
        const byMember = new Map<string, number>();
        let firstStopped = false;
        const handlerOf = (label: string): BatchHandler => async (batch) => {
          if (label === "first" && firstStopped) overlaps.push("first member ran after stop");
          const holder = active.get(batch.partition);
          if (holder !== undefined) overlaps.push(`${label} and ${holder} on ${batch.partition}`);
          active.set(batch.partition, label);
          // Yield so that a concurrent delivery of the same partition would show.
          await delay(1);
          active.delete(batch.partition);
          for (const record of batch.records) processed.add(`${record.partition}/${record.offset}`);
          byMember.set(label, (byMember.get(label) ?? 0) + batch.records.length);
        };

        const sent = await log.send(topic, keyedRecords(200, 17));
        const first = await log.consume(
          { groupId, topics: [topic], maxBatchSize: 10 },
          handlerOf("first"),
        );
        const second = await log.consume(
          { groupId, topics: [topic], maxBatchSize: 10 },
          handlerOf("second"),
        );
        await waitForAssignment([first, second], partitions);
        sent.push(...await log.send(topic, keyedRecords(200, 17, 200)));
        await waitFor("the first member to process records", () => byMember.has("first"));
        await first.stop();
        firstStopped = true;
        await waitForAssignment([second], partitions);
        sent.push(...await log.send(topic, keyedRecords(200, 17, 400)));
        await waitForNoLag(log, groupId, topic);

        assert.deepEqual(first.assignment(), []);
        assert.deepEqual(overlaps, []);
        const missing = sent.filter((m) => !processed.has(`${m.partition}/${m.offset}`));
        assert.deepEqual(missing, []);
        assert.ok((byMember.get("second") ?? 0) > 0);
      }),
  );

  Deno.test(`${name} replays a topic from the earliest record for a new group`, () =>
    withLog(async (log) => {
      const topic = await createTopic(log, "contract-replay", 2);
      await log.send(topic, keyedRecords(40, 9));
      const firstGroup = uniqueName("contract-group");
      const first = collector();
      await log.consume({ groupId: firstGroup, topics: [topic] }, first.handler);
      await waitForNoLag(log, firstGroup, topic);

      const replayGroup = uniqueName("contract-group");
      const replay = collector();
      const member = await log.consume(
        { groupId: replayGroup, topics: [topic], fromBeginning: true },
        replay.handler,
      );
      await waitForNoLag(log, replayGroup, topic);
      await member.stop();
      assert.equal(replay.records.length, 40);
      assert.deepEqual(
        replay.records.map(textOf).sort(),
        first.records.map(textOf).sort(),
      );
    }));

  Deno.test(`${name} delivers only records sent after joining when fromBeginning is false`, () =>
    withLog(async (log) => {
      const partitions = 3;
      const topic = await createTopic(log, "contract-latest", partitions);
      await log.send(topic, keyedRecords(30, 11));
      const groupId = uniqueName("contract-group");
      const { records, handler } = collector();
      const member = await log.consume(
        { groupId, topics: [topic], fromBeginning: false },
        handler,
      );
      // An adapter reports partitions only once it has resolved where they start.
      await waitForAssignment([member], partitions);
      await log.send(topic, keyedRecords(12, 11, 30));
      await waitFor("the new records", () => records.length >= 12);
      await waitForNoLag(log, groupId, topic);
      await member.stop();
      assert.deepEqual(records.map(textOf).sort(), range(30, 42).map((i) => `v${i}`).sort());
    }));

  Deno.test(`${name} reports lag before and after consumption`, () =>
    withLog(async (log) => {
      const topic = await createTopic(log, "contract-lag", 2);
      const sent = await log.send(topic, keyedRecords(25, 4));
      const counts = [0, 1].map((p) => sent.filter((m) => m.partition === p).length);
      const groupId = uniqueName("contract-group");

      assert.deepEqual(
        await log.lag(groupId, topic),
        counts.map((count, partition) => ({
          topic,
          partition,
          committedOffset: 0,
          highWatermark: count,
          lag: count,
        })),
      );
      const { records, handler } = collector();
      const member = await log.consume({ groupId, topics: [topic] }, handler);
      await waitForNoLag(log, groupId, topic);
      await member.stop();
      assert.equal(records.length, 25);
      assert.deepEqual(
        await log.lag(groupId, topic),
        counts.map((count, partition) => ({
          topic,
          partition,
          committedOffset: count,
          highWatermark: count,
          lag: 0,
        })),
      );
    }));

  Deno.test(
    `${name} commits transactional output with the consumed offsets, exactly once across an abort`,
    () =>
      withLog(async (log) => {
        const input = await createTopic(log, "contract-tx-in", 2);
        const output = await createTopic(log, "contract-tx-out", 2);
        const groupId = uniqueName("contract-tx-group");
        await log.send(input, keyedRecords(40, 5));
        const assigned: string[] = [];
        const revoked: string[] = [];
        let failOnce = true;
        let pendingCount = 0;
        const member = await log.consumeTransactional({
          groupId,
          topics: [input],
          transactionalId: uniqueName("contract-tx"),
          commitIntervalMs: 100,
          maxBatchSize: 7,
          onAssigned: (partitions) => {
            assigned.push(...partitions.map(partitionId));
            return Promise.resolve();
          },
          onRevoked: (partitions) => {
            // Uncommitted work is dropped with its transaction.
            revoked.push(...partitions.map(partitionId));
            pendingCount = 0;
          },
          beforeCommit: (transaction) => {
            // A summary per commit: how many records this transaction copied.
            transaction.send(output, [{ key: text("summary"), value: text(`n${pendingCount}`) }]);
            pendingCount = 0;
          },
        }, (batch, transaction) => {
          if (failOnce && batch.records.some((record) => textOf(record) === "v13")) {
            failOnce = false;
            // Records of this transaction so far are dropped with it.
            transaction.send(
              output,
              batch.records.map((record) => ({
                key: record.key,
                value: text(`copy-${textOf(record)}`),
              })),
            );
            return Promise.reject(new Error("handler failure the test asked for"));
          }
          transaction.send(
            output,
            batch.records.map((record) => ({
              key: record.key,
              value: text(`copy-${textOf(record)}`),
            })),
          );
          pendingCount += batch.records.length;
          return Promise.resolve();
        });
        await waitForNoLag(log, groupId, input);
        await member.stop();

        const read: ConsumedRecord[] = [];
        for (const partition of [0, 1]) {
          await log.readPartition(output, partition, 0, (records) => read.push(...records));
        }
        const copies = read.map(textOf).filter((value) => value.startsWith("copy-"));
        assert.deepEqual(copies.sort(), range(0, 40).map((i) => `copy-v${i}`).sort());
        const summed = read.map(textOf).filter((value) => value.startsWith("n"))
          .reduce((sum, value) => sum + Number(value.slice(1)), 0);
        assert.equal(summed, 40);
        assert.equal(failOnce, false);
        assert.ok(revoked.length >= 1, "the aborted partition is revoked");
        assert.ok(
          revoked.every((partition) => assigned.filter((entry) => entry === partition).length >= 2),
          "a revoked partition is restored again",
        );
      }),
  );

  Deno.test(`${name} reads a partition from an offset to its end`, () =>
    withLog(async (log) => {
      const topic = await createTopic(log, "contract-read", 2);
      const sent = await log.send(topic, keyedRecords(30, 6));
      const expected = sent.filter((meta) => meta.partition === 1).map((meta) => meta.offset);
      const read: ConsumedRecord[] = [];
      const next = await log.readPartition(topic, 1, 2, (records) => read.push(...records));
      assert.deepEqual(read.map((record) => record.offset), expected.slice(2));
      assert.equal(next, expected.at(-1)! + 1);
      assert.equal(await log.readPartition(topic, 1, next, () => assert.fail("no records")), next);
    }));

  Deno.test(
    `${name} hands partitions between transactional members without losing or repeating output`,
    () =>
      withLog(async (log) => {
        const input = await createTopic(log, "contract-txh-in", 4);
        const output = await createTopic(log, "contract-txh-out", 1);
        const groupId = uniqueName("contract-txh-group");
        const copy = (batch: RecordBatch, transaction: Transaction) => {
          transaction.send(
            output,
            batch.records.map((record) => ({
              key: text("copies"),
              value: record.value,
            })),
          );
          return Promise.resolve();
        };
        const join = () =>
          log.consumeTransactional({
            groupId,
            topics: [input],
            transactionalId: uniqueName("contract-txh"),
            commitIntervalMs: 50,
            maxBatchSize: 10,
          }, copy);
        const first = await join();
        await log.send(input, keyedRecords(100, 13));
        const second = await join();
        await waitForAssignment([first, second], 4);
        await log.send(input, keyedRecords(100, 13, 100));
        await waitForNoLag(log, groupId, input);
        await second.stop();
        await log.send(input, keyedRecords(50, 13, 200));
        await waitForNoLag(log, groupId, input);
        await first.stop();
        const copies: string[] = [];
        await log.readPartition(output, 0, 0, (records) => copies.push(...records.map(textOf)));
        assert.deepEqual(copies.sort(), range(0, 250).map((i) => `v${i}`).sort());
      }),
  );
}
