/** Reading one partition of a topic to its end, on @platformatic/kafka. */

import {
  Consumer,
  FetchIsolationLevels,
  type Message,
  MessagesStreamModes,
} from "@platformatic/kafka";
import type { ConsumedRecord } from "./event_log.ts";
import { type MemberContext, toRecord } from "./_platformatic_shared.ts";

export interface PartitionRange {
  readonly topic: string;
  readonly partition: number;
  readonly start: number;
  /** The partition's high watermark when the read began. */
  readonly end: number;
}

/** How often the reader checks whether its fetch position passed the end. */
const END_CHECK_MS = 20;

/**
 * Reads `[start, end)` of one partition, committed records only, with a
 * throw-away consumer group whose offset is set to `start` first. The end is
 * reached when the stream's fetch position passes it (transaction markers
 * count) and every fetched record was handed over, so a transaction still
 * open at `end` is waited for (until it commits, aborts or times out).
 */
export async function readToEnd(
  context: MemberContext,
  range: PartitionRange,
  onRecords: (records: readonly ConsumedRecord[]) => void,
): Promise<number> {
  const { topic, partition, start, end } = range;
  const groupId = `read-${topic}-${partition}-${crypto.randomUUID()}`;
  // The other partitions have no committed offset: they start at their end.
  await context.admin.alterConsumerGroupOffsets({
    groupId,
    topics: [{ name: topic, partitionOffsets: [{ partition, offset: BigInt(start) }] }],
  });
  const consumer = new Consumer({
    ...context.client.base,
    groupId,
    sessionTimeout: context.settings.sessionTimeoutMs,
    heartbeatInterval: context.settings.heartbeatIntervalMs,
    autocommit: false,
  });
  const done = Promise.withResolvers<number>();
  let read: ConsumedRecord[] = [];
  const flush = () => {
    if (read.length === 0) return;
    const records = read;
    read = [];
    onRecords(records);
  };
  let timer: ReturnType<typeof setInterval> | undefined;
  try {
    const stream = await consumer.consume({
      topics: [topic],
      mode: MessagesStreamModes.COMMITTED,
      fallbackMode: "latest",
      autocommit: false,
      maxWaitTime: 200,
      isolationLevel: FetchIsolationLevels.READ_COMMITTED,
    });
    stream.on("data", (message: Message) => {
      if (message.partition !== partition) return;
      const record = toRecord(message);
      if (record.offset >= start && record.offset < end) read.push(record);
    });
    stream.on("error", (error: Error) => done.reject(error));
    const key = `${topic}:${partition}`;
    timer = setInterval(() => {
      try {
        flush();
      } catch (error) {
        done.reject(error);
        return;
      }
      const position = stream.offsetsToFetch.get(key);
      if (position !== undefined && position >= BigInt(end) && stream.readableLength === 0) {
        done.resolve(end);
      }
    }, END_CHECK_MS);
    const result = await done.promise;
    await stream.close().catch(() => {});
    return result;
  } finally {
    clearInterval(timer);
    await consumer.close().catch(() => {});
    await context.admin.deleteGroups({ groups: [groupId] }).catch(() => {});
  }
}
