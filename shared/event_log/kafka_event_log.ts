/**
 * The Kafka event log adapter, on kafkajs. It takes a ready `Kafka` client
 * (build one with `createKafkaClient`) and connects lazily: the producer and
 * the admin client on first use, one kafkajs consumer per group member.
 *
 * - Producing: idempotent, `acks: -1`, GZIP by default. Partitions are chosen
 *   here with Kafka's Java default partitioner (`partitionForKey`, murmur2)
 *   and given to kafkajs explicitly, so each record's offset is known exactly.
 * - Consuming: offsets are committed only after the handler resolves; a failed
 *   batch is sought back and its partition paused with a doubling back-off.
 * - kafkajs logs only through `createKafkaClient`'s callback; never to the console.
 */

import {
  type Admin,
  CompressionTypes,
  Kafka,
  type Message,
  Partitioners,
  type PartitionMetadata,
  type Producer,
} from "kafkajs";
import {
  type BatchHandler,
  type ConsumedRecord,
  type ConsumerGroupMember,
  type ConsumerOptions,
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
import { partitionForKey } from "./murmur2.ts";
import {
  DEFAULT_MAX_BATCH_SIZE,
  errorType,
  Lazy,
  type MemberContext,
  type Settings,
  toBuffer,
  withTimeout,
} from "./_kafka_shared.ts";
import { KafkaMember } from "./kafka_member.ts";
import { readToEnd } from "./kafka_read_partition.ts";
import { KafkaTransactionalMember } from "./kafka_transactional_member.ts";

/** Longest `ensureTopic` waits for every partition of a topic to have a leader. */
const LEADER_WAIT_MS = 10_000;

export interface KafkaEventLogOptions {
  /**
   * Compression of produced record batches (kafkajs's built-in GZIP codec).
   * @default "gzip"
   */
  readonly compression?: "gzip" | "none";
  /**
   * Replication factor of topics `ensureTopic` creates; `-1` takes the
   * broker's `default.replication.factor`.
   * @default -1
   */
  readonly replicationFactor?: number;
  /**
   * A member that sends no heartbeat for this long is dropped from its group
   * and its partitions are handed over (the broker's minimum is 6 seconds).
   * @default 10_000
   */
  readonly sessionTimeoutMs?: number;
  /**
   * Least time between a member's heartbeats; a rebalance is noticed at the
   * first heartbeat after it starts, so this bounds how fast groups rebalance.
   * @default 1_000
   */
  readonly heartbeatIntervalMs?: number;
  /**
   * Longest a rebalance waits for a member to finish its batch and rejoin;
   * a member that takes longer loses its partitions (its batch is redelivered).
   * @default 60_000
   */
  readonly rebalanceTimeoutMs?: number;
  /**
   * Longest a fetch waits on the broker for new records. Idle members notice
   * rebalances and stop requests only between fetches.
   * @default 500
   */
  readonly maxWaitTimeMs?: number;
  /**
   * Delay before a batch whose handler failed is delivered again; it doubles
   * with each consecutive failure on the partition, up to 5 seconds.
   * @default 100
   */
  readonly retryBackoffMs?: number;
  /**
   * Longest `ping` waits for the broker's answer, in milliseconds.
   * @default 2_000
   */
  readonly pingTimeoutMs?: number;
  /**
   * How long a topic's partition count is trusted before it is read again
   * (it decides where keyed records go).
   * @default 300_000 (five minutes, Kafka's `metadata.max.age.ms`)
   */
  readonly metadataMaxAgeMs?: number;
  /**
   * Receives errors the adapter handles without a caller to reject: a member
   * that cannot pin where its partitions start, or whose consumer crashed.
   * @default nothing
   */
  readonly onError?: (error: unknown, context: string) => void;
}

export class KafkaEventLog implements EventLog {
  readonly #settings: Settings;
  readonly #producer: Lazy<Producer>;
  readonly #admin: Lazy<Admin>;
  /** An admin client that does not retry, so that `ping` answers promptly. */
  readonly #pingAdmin: Lazy<Admin>;
  readonly #members = new Set<{ stop(): Promise<void> }>();
  readonly #partitionCounts = new Map<string, { count: number; readAt: number }>();
  readonly #roundRobin = new Map<string, number>();
  readonly #memberContext: MemberContext;
  #closed = false;

  constructor(kafka: Kafka, options: KafkaEventLogOptions = {}) {
    this.#settings = {
      compression: (options.compression ?? "gzip") === "gzip"
        ? CompressionTypes.GZIP
        : CompressionTypes.None,
      replicationFactor: options.replicationFactor ?? -1,
      sessionTimeoutMs: options.sessionTimeoutMs ?? 10_000,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 1_000,
      rebalanceTimeoutMs: options.rebalanceTimeoutMs ?? 60_000,
      maxWaitTimeMs: options.maxWaitTimeMs ?? 500,
      retryBackoffMs: options.retryBackoffMs ?? 100,
      pingTimeoutMs: options.pingTimeoutMs ?? 2_000,
      metadataMaxAgeMs: options.metadataMaxAgeMs ?? 300_000,
      onError: options.onError ?? (() => {}),
    };
    this.#producer = new Lazy(() =>
      kafka.producer({
        idempotent: true,
        // Idempotence in kafkajs requires one request in flight per broker.
        maxInFlightRequests: 1,
        allowAutoTopicCreation: false,
        // Only sets kafkajs's default; every message carries its partition already.
        createPartitioner: Partitioners.DefaultPartitioner,
      })
    );
    this.#admin = new Lazy(() => kafka.admin());
    this.#pingAdmin = new Lazy(() => kafka.admin({ retry: { retries: 0 } }));
    this.#memberContext = {
      kafka,
      settings: this.#settings,
      admin: () => this.#admin.get(),
      partitionCount: (topic) => this.#partitionCount(topic),
      forget: (member) => this.#members.delete(member),
    };
  }

  async ensureTopic(spec: TopicSpec): Promise<void> {
    this.#assertOpen(`create topic '${spec.name}'`);
    if (!Number.isInteger(spec.partitions) || spec.partitions < 1) {
      throw new RangeError(
        `Cannot create topic '${spec.name}': the partition count must be a positive integer`,
      );
    }
    const admin = await this.#admin.get();
    try {
      // Resolves false when the topic exists already, whatever its partition count.
      await admin.createTopics({
        topics: [{
          topic: spec.name,
          numPartitions: spec.partitions,
          replicationFactor: this.#settings.replicationFactor,
          ...(spec.compacted
            ? { configEntries: [{ name: "cleanup.policy", value: "compact" }] }
            : {}),
        }],
        waitForLeaders: true,
      });
    } catch (error) {
      // kafkajs waits for leaders only through LEADER_NOT_AVAILABLE; a KRaft
      // broker may answer that it does not know the new topic yet instead.
      if (errorType(error) !== "UNKNOWN_TOPIC_OR_PARTITION") throw error;
    }
    // Verify, as the topic may have existed (with another count) or another
    // creator may have won the race with its leaders still pending.
    const deadline = Date.now() + LEADER_WAIT_MS;
    for (;;) {
      const partitions = await this.#partitionsOf(admin, spec.name);
      if (partitions !== undefined) {
        if (partitions.length !== spec.partitions) {
          throw new TopicMismatchError(spec.name, spec.partitions, partitions.length);
        }
        if (partitions.every((partition) => partition.leader >= 0)) break;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `Cannot use topic '${spec.name}': it has no leader for every partition after ${LEADER_WAIT_MS} ms`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    this.#partitionCounts.set(spec.name, { count: spec.partitions, readAt: Date.now() });
  }

  async send(topic: string, records: readonly ProducerRecord[]): Promise<RecordMetadata[]> {
    this.#assertOpen(`send to topic '${topic}'`);
    const count = await this.#partitionCount(topic);
    if (records.length === 0) return [];
    const partitions = records.map((record) =>
      record.key === null ? this.#nextRoundRobin(topic, count) : partitionForKey(record.key, count)
    );
    const messages = records.map((record, i): Message => ({
      key: record.key === null ? null : toBuffer(record.key),
      value: toBuffer(record.value),
      partition: partitions[i]!,
      ...(record.headers === undefined ? {} : { headers: { ...record.headers } }),
      ...(record.timestamp === undefined ? {} : { timestamp: String(record.timestamp) }),
    }));
    const producer = await this.#producer.get();
    const acknowledged = await producer.send({
      topic,
      messages,
      acks: -1,
      compression: this.#settings.compression,
    });
    // kafkajs answers once per partition with the offset of its first record;
    // the partition's records follow in send order.
    const next = new Map<number, number>();
    for (const answer of acknowledged) {
      if (answer.topicName !== topic) continue;
      next.set(answer.partition, Number(answer.baseOffset ?? answer.offset));
    }
    return partitions.map((partition): RecordMetadata => {
      const offset = next.get(partition);
      if (offset === undefined || Number.isNaN(offset)) {
        throw new Error(
          `Cannot send to topic '${topic}': partition ${partition} acknowledged no offset`,
        );
      }
      next.set(partition, offset + 1);
      return { topic, partition, offset };
    });
  }

  async consume(options: ConsumerOptions, handler: BatchHandler): Promise<ConsumerGroupMember> {
    this.#assertOpen(`join group '${options.groupId}'`);
    const maxBatchSize = options.maxBatchSize ?? DEFAULT_MAX_BATCH_SIZE;
    if (!Number.isInteger(maxBatchSize) || maxBatchSize < 1) {
      throw new RangeError(
        `Cannot join group '${options.groupId}': maxBatchSize must be a positive integer`,
      );
    }
    const concurrency = options.partitionConcurrency ?? 1;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError(
        `Cannot join group '${options.groupId}': partitionConcurrency must be a positive integer`,
      );
    }
    return await this.#join(
      options,
      (topics) =>
        new KafkaMember(this.#memberContext, { ...options, topics, maxBatchSize }, handler),
    );
  }

  async consumeTransactional(
    options: TransactionalConsumerOptions,
    handler: TransactionalHandler,
  ): Promise<ConsumerGroupMember> {
    this.#assertOpen(`join group '${options.groupId}'`);
    return await this.#join(
      options,
      (topics) =>
        new KafkaTransactionalMember(this.#memberContext, { ...options, topics }, handler),
    );
  }

  /** Checks the topics exist, then starts a member; a member that fails to start is stopped. */
  async #join<M extends ConsumerGroupMember & { start(): Promise<void> }>(
    options: { readonly groupId: string; readonly topics: readonly string[] },
    create: (topics: string[]) => M,
  ): Promise<M> {
    const topics = [...new Set(options.topics)];
    for (const topic of topics) await this.#partitionCount(topic);
    this.#assertOpen(`join group '${options.groupId}'`);
    const member = create(topics);
    this.#members.add(member);
    try {
      await member.start();
    } catch (error) {
      await member.stop().catch(() => {});
      throw error;
    }
    return member;
  }

  async readPartition(
    topic: string,
    partition: number,
    fromOffset: number,
    onRecords: (records: readonly ConsumedRecord[]) => void,
  ): Promise<number> {
    this.#assertOpen(`read topic '${topic}'`);
    const count = await this.#partitionCount(topic);
    if (partition < 0 || partition >= count) {
      throw new RangeError(`Topic '${topic}' has no partition ${partition}`);
    }
    const admin = await this.#admin.get();
    const offsets = await admin.fetchTopicOffsets(topic);
    const bounds = offsets.find((entry) => entry.partition === partition);
    const end = Number(bounds?.high ?? 0);
    const start = Math.max(fromOffset, Number(bounds?.low ?? 0));
    if (start >= end) return Math.max(start, end);
    return await readToEnd(this.#memberContext, { topic, partition, start, end }, onRecords);
  }

  async lag(groupId: string, topic: string): Promise<PartitionLag[]> {
    this.#assertOpen(`read the lag of group '${groupId}'`);
    await this.#partitionCount(topic);
    const admin = await this.#admin.get();
    const [committed, offsets] = await Promise.all([
      admin.fetchOffsets({ groupId, topics: [topic] }),
      admin.fetchTopicOffsets(topic),
    ]);
    const committedOffsets = new Map(
      (committed.find((entry) => entry.topic === topic)?.partitions ?? [])
        .map(({ partition, offset }) => [partition, Number(offset)]),
    );
    return offsets
      .map(({ partition, high, low }): PartitionLag => {
        const highWatermark = Number(high);
        const logStart = Number(low);
        // -1 means nothing committed: the group would start at the log start.
        const committedOffset = Math.max(committedOffsets.get(partition) ?? -1, logStart);
        return {
          topic,
          partition,
          committedOffset,
          highWatermark,
          lag: Math.max(highWatermark - committedOffset, 0),
        };
      })
      .sort((a, b) => a.partition - b.partition);
  }

  async ping(): Promise<void> {
    this.#assertOpen("reach the event log");
    const { pingTimeoutMs } = this.#settings;
    const answer = async () => {
      const admin = await this.#pingAdmin.get();
      const { brokers } = await admin.describeCluster();
      if (brokers.length === 0) throw new Error("Cannot reach Kafka: the cluster has no brokers");
    };
    await withTimeout(
      answer(),
      pingTimeoutMs,
      `Cannot reach Kafka: no answer within ${pingTimeoutMs} ms`,
    );
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([...this.#members].map((member) => member.stop()));
    const results = await Promise.allSettled([
      this.#producer.disconnect(),
      this.#admin.disconnect(),
      this.#pingAdmin.disconnect(),
    ]);
    const failed = results.find((result) => result.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  }

  // --- private -----------------------------------------------------------

  #assertOpen(action: string): void {
    if (this.#closed) throw new EventLogClosedError(action);
  }

  /** The topic's partitions, or undefined while the broker does not know the topic. */
  async #partitionsOf(admin: Admin, topic: string): Promise<PartitionMetadata[] | undefined> {
    try {
      const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
      return topics.find((entry) => entry.name === topic)?.partitions;
    } catch (error) {
      if (errorType(error) === "UNKNOWN_TOPIC_OR_PARTITION") return undefined;
      throw error;
    }
  }

  /** The topic's partition count; throws `UnknownTopicError` when it does not exist. */
  async #partitionCount(topic: string): Promise<number> {
    const known = this.#partitionCounts.get(topic);
    if (known !== undefined && Date.now() - known.readAt < this.#settings.metadataMaxAgeMs) {
      return known.count;
    }
    const admin = await this.#admin.get();
    if (!(await admin.listTopics()).includes(topic)) throw new UnknownTopicError(topic);
    const count = (await this.#partitionsOf(admin, topic))?.length ?? 0;
    if (count === 0) throw new UnknownTopicError(topic);
    this.#partitionCounts.set(topic, { count, readAt: Date.now() });
    return count;
  }

  #nextRoundRobin(topic: string, count: number): number {
    const next = this.#roundRobin.get(topic) ?? 0;
    this.#roundRobin.set(topic, (next + 1) % count);
    return next % count;
  }
}
