import assert from "node:assert/strict";
import {
  type BatchHandler,
  type ConsumedRecord,
  type ConsumerGroupMember,
  type TopicPartition,
  UnknownTopicError,
} from "./event_log.ts";
import {
  collector,
  keyedRecords,
  runEventLogContract,
  text,
  uniqueName,
  waitForNoLag,
} from "./event_log_contract.ts";
import { delay, waitFor } from "../testing/wait.ts";
import { EventLogClosedError } from "./event_log.ts";
import { MemoryEventLog } from "./memory_event_log.ts";

runEventLogContract("MemoryEventLog", () => Promise.resolve(new MemoryEventLog()));

/** Deno 2.9 does not check for leaked timers by default; these tests must. */
function memoryTest(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, sanitizeOps: true, sanitizeResources: true, fn });
}

function unkeyed(count: number): { key: null; value: Uint8Array }[] {
  return Array.from({ length: count }, (_, i) => ({ key: null, value: text(`u${i}`) }));
}

memoryTest("MemoryEventLog rejects unknown topics", async () => {
  const log = new MemoryEventLog();
  try {
    const isUnknown = (error: unknown) =>
      error instanceof UnknownTopicError && error.code === "unknown-topic" &&
      error.topic === "missing";
    await assert.rejects(log.send("missing", unkeyed(1)), isUnknown);
    await assert.rejects(log.lag("group", "missing"), isUnknown);
    await assert.rejects(
      log.consume({ groupId: "group", topics: ["missing"] }, () => Promise.resolve()),
      isUnknown,
    );
  } finally {
    await log.close();
  }
});

memoryTest("MemoryEventLog rejects invalid partition counts and batch sizes", async () => {
  const log = new MemoryEventLog();
  try {
    await assert.rejects(log.ensureTopic({ name: "t", partitions: 0 }), RangeError);
    await log.ensureTopic({ name: "t", partitions: 1 });
    await assert.rejects(
      log.consume({ groupId: "g", topics: ["t"], maxBatchSize: 0 }, () => Promise.resolve()),
      RangeError,
    );
  } finally {
    await log.close();
  }
});

memoryTest("MemoryEventLog spreads records without a key round-robin", async () => {
  const log = new MemoryEventLog();
  try {
    await log.ensureTopic({ name: "t", partitions: 3 });
    const metadata = await log.send("t", unkeyed(7));
    assert.deepEqual(metadata.map((m) => m.partition), [0, 1, 2, 0, 1, 2, 0]);
    assert.deepEqual(metadata.map((m) => m.offset), [0, 0, 0, 1, 1, 1, 2]);
  } finally {
    await log.close();
  }
});

memoryTest("MemoryEventLog drops the oldest records beyond retentionRecords", async () => {
  const log = new MemoryEventLog({ retentionRecords: 10 });
  try {
    await log.ensureTopic({ name: "t", partitions: 1 });
    await log.send("t", unkeyed(12));
    const metadata = await log.send("t", unkeyed(13));
    assert.deepEqual(metadata.map((m) => m.offset), Array.from({ length: 13 }, (_, i) => 12 + i));
    assert.deepEqual(await log.lag("g", "t"), [
      { topic: "t", partition: 0, committedOffset: 15, highWatermark: 25, lag: 10 },
    ]);
    const { records, handler } = collector();
    await log.consume({ groupId: "g", topics: ["t"] }, handler);
    await waitForNoLag(log, "g", "t");
    assert.deepEqual(records.map((r) => r.offset), Array.from({ length: 10 }, (_, i) => 15 + i));
  } finally {
    await log.close();
  }
});

memoryTest("MemoryEventLog drops records older than retentionMs", async () => {
  let now = 1_000_000;
  const log = new MemoryEventLog({ retentionMs: 1000, now: () => now });
  try {
    await log.ensureTopic({ name: "t", partitions: 1 });
    await log.send("t", unkeyed(3));
    now += 500;
    await log.send("t", unkeyed(2));
    now += 501;
    assert.deepEqual(await log.lag("g", "t"), [
      { topic: "t", partition: 0, committedOffset: 3, highWatermark: 5, lag: 2 },
    ]);
    const { records, handler } = collector();
    await log.consume({ groupId: "g", topics: ["t"] }, handler);
    await waitForNoLag(log, "g", "t");
    assert.deepEqual(records.map((r) => [r.offset, r.timestamp]), [
      [3, 1_000_500],
      [4, 1_000_500],
    ]);
    now += 1000;
    await log.send("t", unkeyed(1));
    await waitForNoLag(log, "g", "t");
    assert.deepEqual(records.map((r) => r.offset), [3, 4, 5]);
  } finally {
    await log.close();
  }
});

memoryTest("MemoryEventLog keeps records of any age when retentionMs is 0", async () => {
  let now = 0;
  const log = new MemoryEventLog({ retentionMs: 0, now: () => now });
  try {
    await log.ensureTopic({ name: "t", partitions: 1 });
    await log.send("t", unkeyed(4));
    now += 10 * 365 * 24 * 60 * 60 * 1000;
    assert.deepEqual(await log.lag("g", "t"), [
      { topic: "t", partition: 0, committedOffset: 0, highWatermark: 4, lag: 4 },
    ]);
  } finally {
    await log.close();
  }
});

memoryTest("MemoryEventLog continues a group whose offset fell below the log start", async () => {
  const log = new MemoryEventLog({ retentionRecords: 10 });
  try {
    await log.ensureTopic({ name: "t", partitions: 1 });
    await log.send("t", unkeyed(5));
    const first = collector();
    const member = await log.consume({ groupId: "g", topics: ["t"] }, first.handler);
    await waitForNoLag(log, "g", "t");
    await member.stop();
    assert.equal(first.records.length, 5);

    await log.send("t", unkeyed(20));
    assert.deepEqual(await log.lag("g", "t"), [
      { topic: "t", partition: 0, committedOffset: 15, highWatermark: 25, lag: 10 },
    ]);
    const second = collector();
    await log.consume({ groupId: "g", topics: ["t"] }, second.handler);
    await waitForNoLag(log, "g", "t");
    assert.deepEqual(
      second.records.map((r) => r.offset),
      Array.from({ length: 10 }, (_, i) => 15 + i),
    );
  } finally {
    await log.close();
  }
});

memoryTest("MemoryEventLog alternates batches across partitions with pending records", async () => {
  const log = new MemoryEventLog();
  try {
    await log.ensureTopic({ name: "t", partitions: 2 });
    await log.send("t", unkeyed(40));
    const partitions: number[] = [];
    await log.consume({ groupId: "g", topics: ["t"], maxBatchSize: 5 }, (batch) => {
      partitions.push(batch.partition);
      return Promise.resolve();
    });
    await waitForNoLag(log, "g", "t");
    assert.deepEqual(partitions, [0, 1, 0, 1, 0, 1, 0, 1]);
  } finally {
    await log.close();
  }
});

memoryTest(
  "MemoryEventLog deals partitions round-robin over sorted members as they join and leave",
  async () => {
    const log = new MemoryEventLog();
    try {
      const partitions = 6;
      await log.ensureTopic({ name: "t", partitions });
      const active = new Set<number>();
      const overlaps: number[] = [];
      const processed: ConsumedRecord[] = [];
      const handler: BatchHandler = async (batch) => {
        if (active.has(batch.partition)) overlaps.push(batch.partition);
        active.add(batch.partition);
        await delay(1);
        active.delete(batch.partition);
        processed.push(...batch.records);
      };
      const join = () => log.consume({ groupId: "g", topics: ["t"], maxBatchSize: 5 }, handler);
      const expectDealt = (members: ConsumerGroupMember[]) => {
        const sorted = [...members].sort((a, b) => a.memberId < b.memberId ? -1 : 1);
        for (const member of members) {
          const expected: TopicPartition[] = [];
          for (let partition = 0; partition < partitions; partition++) {
            if (sorted[partition % sorted.length] === member) {
              expected.push({ topic: "t", partition });
            }
          }
          assert.deepEqual(member.assignment(), expected);
        }
      };

      const sent = await log.send("t", keyedRecords(300, 23));
      const a = await join();
      expectDealt([a]);
      const b = await join();
      expectDealt([a, b]);
      sent.push(...await log.send("t", keyedRecords(300, 23, 300)));
      const c = await join();
      expectDealt([a, b, c]);
      await waitFor("some records to be processed", () => processed.length >= 100);
      await b.stop();
      expectDealt([a, c]);
      assert.deepEqual(b.assignment(), []);
      sent.push(...await log.send("t", keyedRecords(300, 23, 600)));
      await a.stop();
      expectDealt([c]);
      await waitForNoLag(log, "g", "t");

      assert.deepEqual(overlaps, []);
      assert.equal(processed.length, sent.length);
      for (let partition = 0; partition < partitions; partition++) {
        const offsets = processed.filter((r) => r.partition === partition).map((r) => r.offset);
        const count = sent.filter((m) => m.partition === partition).length;
        assert.deepEqual(offsets, Array.from({ length: count }, (_, i) => i));
      }
    } finally {
      await log.close();
    }
  },
);

memoryTest("MemoryEventLog hands a partition over only after its batch is committed", async () => {
  const log = new MemoryEventLog();
  try {
    // Member ids are random; repeat until the joining member is dealt the busy partition.
    for (let trial = 0;; trial++) {
      assert.ok(trial < 50, "the joining member never got the partition");
      const topic = uniqueName("t");
      const groupId = uniqueName("g");
      await log.ensureTopic({ name: topic, partitions: 1 });
      await log.send(topic, unkeyed(3));
      const release = Promise.withResolvers<void>();
      let started = false;
      const first = await log.consume({ groupId, topics: [topic] }, () => {
        started = true;
        return release.promise;
      });
      await waitFor("the first member's handler to start", () => started);
      const second = collector();
      const joined = await log.consume({ groupId, topics: [topic] }, second.handler);
      if (joined.assignment().length === 0) {
        release.resolve();
        await Promise.all([first.stop(), joined.stop()]);
        continue;
      }
      await delay(5);
      assert.equal(second.records.length, 0);
      release.resolve();
      await waitForNoLag(log, groupId, topic);
      await log.send(topic, unkeyed(2));
      await waitForNoLag(log, groupId, topic);
      assert.deepEqual(second.records.map((r) => r.offset), [3, 4]);
      return;
    }
  } finally {
    await log.close();
  }
});

memoryTest("MemoryEventLog doubles the back-off between redeliveries", async () => {
  const log = new MemoryEventLog({ retryBackoffMs: 20 });
  try {
    await log.ensureTopic({ name: "t", partitions: 1 });
    await log.send("t", unkeyed(3));
    const calls: number[] = [];
    const attempts: number[] = [];
    await log.consume({
      groupId: "g",
      topics: ["t"],
      onBatchError: (_error, _batch, attempt) => attempts.push(attempt),
    }, (batch) => {
      calls.push(performance.now());
      if (calls.length <= 3) {
        return Promise.reject(new Error("Cannot process batch: not yet"));
      }
      assert.equal(batch.records[0]?.offset, 0);
      return Promise.resolve();
    });
    await waitForNoLag(log, "g", "t");
    assert.deepEqual(attempts, [1, 2, 3]);
    const gaps = calls.slice(1).map((time, i) => time - calls[i]!);
    // Timers may fire up to a millisecond early.
    [20, 40, 80].forEach((backoff, i) => assert.ok(gaps[i]! >= backoff - 1, `gap ${gaps[i]}`));
  } finally {
    await log.close();
  }
});

memoryTest("MemoryEventLog keeps other partitions flowing while one backs off", async () => {
  const log = new MemoryEventLog({ retryBackoffMs: 50 });
  try {
    await log.ensureTopic({ name: "t", partitions: 2 });
    await log.send("t", unkeyed(20));
    const processed: number[] = [];
    let failures = 0;
    await log.consume({
      groupId: "g",
      topics: ["t"],
      maxBatchSize: 2,
      onBatchError: () => failures++,
    }, (batch) => {
      if (batch.partition === 0) return Promise.reject(new Error("Cannot process batch"));
      processed.push(...batch.records.map((r) => r.offset));
      return Promise.resolve();
    });
    await waitFor("partition 1 to be processed", () => processed.length === 10);
    assert.deepEqual(processed, Array.from({ length: 10 }, (_, i) => i));
    assert.ok(failures >= 1);
    const lag = await log.lag("g", "t");
    assert.equal(lag[0]?.committedOffset, 0);
  } finally {
    await log.close();
  }
});

memoryTest("MemoryEventLog stop waits for the batch in progress and commits it", async () => {
  const log = new MemoryEventLog();
  try {
    await log.ensureTopic({ name: "t", partitions: 1 });
    await log.send("t", unkeyed(3));
    const release = Promise.withResolvers<void>();
    let started = false;
    const member = await log.consume({ groupId: "g", topics: ["t"] }, () => {
      started = true;
      return release.promise;
    });
    await waitFor("the handler to start", () => started);
    let stopped = false;
    const stopping = member.stop().then(() => stopped = true);
    await delay(5);
    assert.equal(stopped, false);
    assert.equal(member.assignment().length, 1);
    release.resolve();
    await stopping;
    assert.deepEqual(member.assignment(), []);
    assert.deepEqual(await log.lag("g", "t"), [
      { topic: "t", partition: 0, committedOffset: 3, highWatermark: 3, lag: 0 },
    ]);
  } finally {
    await log.close();
  }
});

memoryTest("MemoryEventLog close stops every member and leaves no timer running", async () => {
  const log = new MemoryEventLog({ retryBackoffMs: 60_000 });
  await log.ensureTopic({ name: "t", partitions: 2 });
  await log.ensureTopic({ name: "idle", partitions: 1 });
  await log.send("t", unkeyed(2));
  let failures = 0;
  await log.consume(
    { groupId: "failing", topics: ["t"], onBatchError: () => failures++ },
    () => Promise.reject(new Error("Cannot process batch")),
  );
  const idle = await log.consume({ groupId: "idle", topics: ["idle"] }, () => Promise.resolve());
  // Both partitions now wait on a one-minute back-off timer.
  await waitFor("both partitions to fail", () => failures === 2);
  await log.close();
  assert.deepEqual(idle.assignment(), []);
  const closed = (error: unknown) =>
    error instanceof EventLogClosedError && error.code === "event-log-closed";
  await assert.rejects(log.ping(), closed);
  await assert.rejects(log.send("t", unkeyed(1)), closed);
  await assert.rejects(
    log.consume({ groupId: "g", topics: ["t"] }, () => Promise.resolve()),
    closed,
  );
});

memoryTest("MemoryEventLog keeps separate offsets per group and topic", async () => {
  const log = new MemoryEventLog();
  try {
    const [first, second] = [uniqueName("t"), uniqueName("t")];
    await log.ensureTopic({ name: first, partitions: 1 });
    await log.ensureTopic({ name: second, partitions: 1 });
    await log.send(first, unkeyed(3));
    await log.send(second, unkeyed(5));
    const { records, handler } = collector();
    await log.consume({ groupId: "g", topics: [first, second] }, handler);
    await waitForNoLag(log, "g", first);
    await waitForNoLag(log, "g", second);
    assert.equal(records.length, 8);
    assert.deepEqual((await log.lag("g", second))[0]?.committedOffset, 5);
    assert.deepEqual((await log.lag("other", second))[0]?.committedOffset, 0);
  } finally {
    await log.close();
  }
});
