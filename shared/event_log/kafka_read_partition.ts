/** Reading one partition of a topic to its end, on kafkajs. */

import { type ConsumerCrashEvent, type ConsumerGroupJoinEvent } from "kafkajs";
import { type ConsumedRecord } from "./event_log.ts";
import { type MemberContext, toRecord } from "./_kafka_shared.ts";

interface PartitionRange {
  readonly topic: string;
  readonly partition: number;
  readonly start: number;
  /** The partition's high watermark when the read began. */
  readonly end: number;
}

/**
 * Reads `[start, end)` of one partition, committed records only, with a
 * throw-away consumer group (kafkajs has no manual assignment). The end is
 * reached when a fetched batch ends there; transaction markers count, so a
 * transaction still open at `end` is waited for (until it commits, aborts or
 * times out).
 */
export async function readToEnd(
  context: MemberContext,
  range: PartitionRange,
  onRecords: (records: readonly ConsumedRecord[]) => void,
): Promise<number> {
  const { topic, partition, start, end } = range;
  const groupId = `read-${topic}-${partition}-${crypto.randomUUID()}`;
  const consumer = context.kafka.consumer({
    groupId,
    readUncommitted: false,
    maxWaitTimeInMs: 200,
    allowAutoTopicCreation: false,
    sessionTimeout: context.settings.sessionTimeoutMs,
    heartbeatInterval: context.settings.heartbeatIntervalMs,
  });
  const done = Promise.withResolvers<number>();
  let next = start;
  const { GROUP_JOIN, END_BATCH_PROCESS, CRASH } = consumer.events;
  consumer.on(GROUP_JOIN, (event: ConsumerGroupJoinEvent) => {
    const assigned = event.payload.memberAssignment[topic] ?? [];
    const others = assigned.filter((entry) => entry !== partition);
    if (others.length > 0) consumer.pause([{ topic, partitions: others }]);
    if (assigned.includes(partition)) consumer.seek({ topic, partition, offset: String(next) });
  });
  consumer.on(END_BATCH_PROCESS, (event) => {
    const payload = event.payload as { topic: string; partition: number; lastOffset: string };
    if (payload.topic !== topic || payload.partition !== partition) return;
    if (Number(payload.lastOffset) + 1 >= end) done.resolve(end);
  });
  consumer.on(CRASH, (event: ConsumerCrashEvent) => {
    if (!event.payload.restart) done.reject(event.payload.error);
  });
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: ({ batch }) => {
        if (batch.partition !== partition) return Promise.resolve();
        const records = batch.messages
          .map((message) => toRecord(topic, partition, message))
          .filter((record) => record.offset >= next && record.offset < end);
        const last = records.at(-1);
        if (last === undefined) return Promise.resolve();
        try {
          onRecords(records);
        } catch (error) {
          done.reject(error);
        }
        next = last.offset + 1;
        return Promise.resolve();
      },
    });
    return await done.promise;
  } finally {
    await consumer.disconnect().catch(() => {});
    const admin = await context.admin();
    await admin.deleteGroups([groupId]).catch(() => {});
  }
}
