/**
 * A consumer group membership with its records buffered per partition, for
 * both kinds of member. The client's message stream reads every owned
 * partition in order; records stay buffered here until the member releases
 * them (after its commit), so a failed batch or an aborted transaction is
 * delivered again from the buffer without seeking. Records a refetch repeats
 * (the stream restarts at the committed offsets after every rejoin) are
 * dropped, as are records below a partition's floor.
 */

import {
  Consumer,
  FetchIsolationLevels,
  type Message,
  type MessagesStream,
  MessagesStreamModes,
} from "@platformatic/kafka";
import type { Buffer } from "node:buffer";
import type { ConsumedRecord, TopicPartition } from "./event_log.ts";
import { byPartition, type MemberContext, partitionKey, toRecord } from "./_platformatic_shared.ts";

/** Buffered records over all partitions above which fetching pauses. */
const HIGH_WATER_RECORDS = 20_000;

interface PartitionBuffer {
  records: ConsumedRecord[];
  /** The offset after the last buffered record (or the floor): lower ones are repeats. */
  next: number;
}

export interface FeedOptions {
  readonly groupId: string;
  readonly topics: readonly string[];
  /** A stable id: the member rejoins as itself after a restart (KIP-345). */
  readonly groupInstanceId?: string;
  /** Called at every join with the sorted assignment, before its records arrive. */
  readonly onJoin: (assigned: TopicPartition[]) => void;
  /** Records arrived for an owned partition. */
  readonly onRecords: () => void;
}

export class Feed {
  readonly consumer: Consumer;
  readonly #context: MemberContext;
  readonly #options: FeedOptions;
  readonly #buffers = new Map<string, PartitionBuffer>();
  #owned = new Set<string>();
  #buffered = 0;
  #paused = false;
  #stream: MessagesStream<Buffer, Buffer, Buffer, Buffer> | undefined;

  constructor(context: MemberContext, options: FeedOptions) {
    this.#context = context;
    this.#options = options;
    const { settings } = context;
    this.consumer = new Consumer({
      ...context.client.base,
      groupId: options.groupId,
      ...(options.groupInstanceId === undefined
        ? {}
        : { groupInstanceId: options.groupInstanceId }),
      sessionTimeout: settings.sessionTimeoutMs,
      heartbeatInterval: settings.heartbeatIntervalMs,
      rebalanceTimeout: settings.rebalanceTimeoutMs,
      autocommit: false,
    });
    this.consumer.on("consumer:group:join", (payload) => {
      const assigned = (payload.assignments ?? [])
        .flatMap(({ topic, partitions }) => partitions.map((partition) => ({ topic, partition })))
        .sort(byPartition);
      this.#owned = new Set(assigned.map(({ topic, partition }) => partitionKey(topic, partition)));
      for (const key of [...this.#buffers.keys()]) {
        if (!this.#owned.has(key)) this.reset(key);
      }
      options.onJoin(assigned);
    });
  }

  get memberId(): string {
    return this.consumer.memberId ?? "";
  }

  /** Joins the group and starts fetching; resolves after the first join. */
  async start(): Promise<void> {
    const { settings } = this.#context;
    const stream = await this.consumer.consume({
      topics: [...this.#options.topics],
      mode: MessagesStreamModes.COMMITTED,
      // A partition without a committed offset starts at the log start; a
      // member that wants only new records sets a floor (see `setFloor`).
      fallbackMode: "earliest",
      autocommit: false,
      maxWaitTime: settings.maxWaitTimeMs,
      isolationLevel: FetchIsolationLevels.READ_COMMITTED,
    });
    this.#stream = stream;
    stream.on("data", (message: Message) => this.#push(message));
    stream.on(
      "error",
      (error: Error) =>
        settings.onError(error, `consumer of group '${this.#options.groupId}' failed`),
    );
  }

  /** Buffered records of a partition from `offset`, at most `max`. */
  take(key: string, offset: number, max: number): ConsumedRecord[] {
    const buffer = this.#buffers.get(key);
    if (buffer === undefined) return [];
    const start = buffer.records.findIndex((record) => record.offset >= offset);
    return start < 0 ? [] : buffer.records.slice(start, start + max);
  }

  /** Drops buffered records below `offset` (they are committed). */
  release(key: string, offset: number): void {
    const buffer = this.#buffers.get(key);
    if (buffer === undefined) return;
    const keep = buffer.records.findIndex((record) => record.offset >= offset);
    const dropped = keep < 0 ? buffer.records.length : keep;
    buffer.records.splice(0, dropped);
    this.#buffered -= dropped;
    this.#resumeIfDrained();
  }

  /** Ignores records of the partition below `offset` (where its consumption starts). */
  setFloor(key: string, offset: number): void {
    const buffer = this.#buffers.get(key) ?? { records: [], next: offset };
    buffer.next = Math.max(buffer.next, offset);
    const keep = buffer.records.findIndex((record) => record.offset >= offset);
    const dropped = keep < 0 ? buffer.records.length : keep;
    buffer.records.splice(0, dropped);
    this.#buffered -= dropped;
    this.#buffers.set(key, buffer);
  }

  /** Forgets a partition's buffer (it was lost). */
  reset(key: string): void {
    const buffer = this.#buffers.get(key);
    if (buffer === undefined) return;
    this.#buffered -= buffer.records.length;
    this.#buffers.delete(key);
    this.#resumeIfDrained();
  }

  /** Commits the next offset to read of partitions (outside transactions). */
  async commit(offsets: readonly (TopicPartition & { offset: number })[]): Promise<void> {
    if (offsets.length === 0) return;
    await this.consumer.commit({
      offsets: offsets.map(({ topic, partition, offset }) => ({
        topic,
        partition,
        offset: BigInt(offset),
        leaderEpoch: -1,
      })),
    });
  }

  /** Stops fetching, then leaves the group. */
  async close(): Promise<void> {
    await this.#stream?.close().catch(() => {});
    await this.consumer.close();
  }

  #push(message: Message): void {
    const key = partitionKey(message.topic, message.partition);
    if (!this.#owned.has(key)) return;
    const offset = Number(message.offset);
    let buffer = this.#buffers.get(key);
    if (buffer === undefined) {
      buffer = { records: [], next: offset };
      this.#buffers.set(key, buffer);
    }
    if (offset < buffer.next) return;
    buffer.records.push(toRecord(message));
    buffer.next = offset + 1;
    this.#buffered++;
    if (this.#buffered >= HIGH_WATER_RECORDS && !this.#paused) {
      this.#paused = true;
      this.#stream?.pause();
    }
    this.#options.onRecords();
  }

  #resumeIfDrained(): void {
    if (!this.#paused || this.#buffered > HIGH_WATER_RECORDS / 2) return;
    this.#paused = false;
    this.#stream?.resume();
  }
}
