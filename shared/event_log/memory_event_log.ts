/**
 * The embedded event log adapter: Kafka's topic, partition, offset and
 * consumer-group semantics in process memory, with bounded retention. Nothing
 * survives a restart; it is for single-process deployments and tests.
 */

import {
  type BatchHandler,
  type ConsumedRecord,
  type ConsumerGroupMember,
  type ConsumerOptions,
  DEFAULT_MAX_BATCH_SIZE,
  type EventLog,
  EventLogClosedError,
  type PartitionLag,
  type ProducerRecord,
  type RecordMetadata,
  TopicMismatchError,
  type TopicSpec,
  type TransactionalConsumerOptions,
  type TransactionalHandler,
  UnknownTopicError,
} from "./event_log.ts";
import { Partition, type Retention, Signal, Topic } from "./memory_topics.ts";
import { Group } from "./memory_group.ts";
import { Member } from "./memory_member.ts";
import { TransactionalMember } from "./memory_transactional_member.ts";

export interface MemoryEventLogOptions {
  /**
   * Most records kept per partition; the oldest are dropped first.
   * @default 100_000
   */
  readonly retentionRecords?: number;
  /**
   * Longest a record is kept, in milliseconds since it was appended; `0` or
   * `Infinity` keeps records regardless of age.
   * @default 3_600_000 (one hour)
   */
  readonly retentionMs?: number;
  /**
   * Delay before a batch whose handler failed is delivered again; it doubles
   * with each consecutive failure on the partition, up to 5 seconds.
   * @default 100
   */
  readonly retryBackoffMs?: number;
  /**
   * Clock for default record timestamps and age-based retention, in epoch
   * milliseconds.
   * @default Date.now
   */
  readonly now?: () => number;
}

const DEFAULT_RETENTION_RECORDS = 100_000;
const DEFAULT_RETENTION_MS = 60 * 60 * 1000;
const DEFAULT_RETRY_BACKOFF_MS = 100;

export class MemoryEventLog implements EventLog {
  readonly #topics = new Map<string, Topic>();
  readonly #groups = new Map<string, Group>();
  readonly #signal = new Signal();
  readonly #retention: Retention;
  readonly #retryBackoffMs: number;
  #closed = false;

  constructor(options: MemoryEventLogOptions = {}) {
    const retentionMs = options.retentionMs ?? DEFAULT_RETENTION_MS;
    this.#retention = {
      maxRecords: options.retentionRecords ?? DEFAULT_RETENTION_RECORDS,
      maxAgeMs: retentionMs === 0 ? Infinity : retentionMs,
      now: options.now ?? Date.now,
    };
    this.#retryBackoffMs = options.retryBackoffMs ?? DEFAULT_RETRY_BACKOFF_MS;
  }

  ensureTopic(spec: TopicSpec): Promise<void> {
    return Promise.try(() => {
      this.#assertOpen(`create topic '${spec.name}'`);
      if (!Number.isInteger(spec.partitions) || spec.partitions < 1) {
        throw new RangeError(
          `Cannot create topic '${spec.name}': the partition count must be a positive integer`,
        );
      }
      const existing = this.#topics.get(spec.name);
      if (existing === undefined) {
        this.#topics.set(spec.name, new Topic(spec.name, spec.partitions, this.#retention));
      } else if (existing.partitions.length !== spec.partitions) {
        throw new TopicMismatchError(spec.name, spec.partitions, existing.partitions.length);
      }
    });
  }

  send(topic: string, records: readonly ProducerRecord[]): Promise<RecordMetadata[]> {
    return Promise.try(() => {
      this.#assertOpen(`send to topic '${topic}'`);
      return this.#append(topic, records);
    });
  }

  #append(topic: string, records: readonly ProducerRecord[]): RecordMetadata[] {
    const target = this.#topic(topic);
    const now = this.#retention.now();
    const touched = new Set<Partition>();
    const metadata = records.map((record): RecordMetadata => {
      const partition = target.partitionFor(record.key);
      touched.add(partition);
      return { topic, partition: partition.partition, offset: partition.append(record, now) };
    });
    for (const partition of touched) partition.trim(now);
    this.#signal.notify();
    return metadata;
  }

  consume(options: ConsumerOptions, handler: BatchHandler): Promise<ConsumerGroupMember> {
    return Promise.try(() => {
      this.#assertOpen(`join group '${options.groupId}'`);
      for (const topic of options.topics) this.#topic(topic);
      const maxBatchSize = options.maxBatchSize ?? DEFAULT_MAX_BATCH_SIZE;
      if (!Number.isInteger(maxBatchSize) || maxBatchSize < 1) {
        throw new RangeError(
          `Cannot join group '${options.groupId}': maxBatchSize must be a positive integer`,
        );
      }
      let group = this.#groups.get(options.groupId);
      if (group === undefined) {
        group = new Group(this.#topics, this.#signal);
        this.#groups.set(options.groupId, group);
      }
      const member = new Member(group, options, handler, this.#retryBackoffMs);
      group.join(member);
      member.start();
      return member;
    });
  }

  consumeTransactional(
    options: TransactionalConsumerOptions,
    handler: TransactionalHandler,
  ): Promise<ConsumerGroupMember> {
    return Promise.try(() => {
      this.#assertOpen(`join group '${options.groupId}'`);
      for (const topic of options.topics) this.#topic(topic);
      let group = this.#groups.get(options.groupId);
      if (group === undefined) {
        group = new Group(this.#topics, this.#signal);
        this.#groups.set(options.groupId, group);
      }
      const member = new TransactionalMember(
        group,
        options,
        handler,
        (topic, records) => this.#append(topic, records),
        this.#retryBackoffMs,
      );
      group.join(member);
      member.start();
      return member;
    });
  }

  readPartition(
    topic: string,
    partition: number,
    fromOffset: number,
    onRecords: (records: readonly ConsumedRecord[]) => void,
  ): Promise<number> {
    return Promise.try(() => {
      this.#assertOpen(`read topic '${topic}'`);
      const target = this.#topic(topic).partitions[partition];
      if (target === undefined) {
        throw new RangeError(`Topic '${topic}' has no partition ${partition}`);
      }
      const end = target.highWatermark;
      let offset = Math.max(fromOffset, target.logStart);
      while (offset < end) {
        const records = target.read(offset, DEFAULT_MAX_BATCH_SIZE * 20);
        const last = records.at(-1);
        if (last === undefined) break;
        onRecords(records);
        offset = last.offset + 1;
      }
      return Math.max(offset, end);
    });
  }

  lag(groupId: string, topic: string): Promise<PartitionLag[]> {
    return Promise.try(() => {
      this.#assertOpen(`read the lag of group '${groupId}'`);
      const target = this.#topic(topic);
      const group = this.#groups.get(groupId);
      const now = this.#retention.now();
      return target.partitions.map((partition): PartitionLag => {
        partition.trim(now);
        const committedOffset = group?.position(partition) ?? partition.logStart;
        const highWatermark = partition.highWatermark;
        return {
          topic,
          partition: partition.partition,
          committedOffset,
          highWatermark,
          lag: highWatermark - committedOffset,
        };
      });
    });
  }

  ping(): Promise<void> {
    return Promise.try(() => this.#assertOpen("reach the event log"));
  }

  async close(): Promise<void> {
    this.#closed = true;
    const members = [...this.#groups.values()].flatMap((group) => [...group.members.values()]);
    await Promise.all(members.map((member) => member.stop()));
  }

  #assertOpen(action: string): void {
    if (this.#closed) throw new EventLogClosedError(action);
  }

  #topic(name: string): Topic {
    const topic = this.#topics.get(name);
    if (topic === undefined) throw new UnknownTopicError(name);
    return topic;
  }
}
