/**
 * The Kafka event log adapter, on kafkajs. It takes a ready `Kafka` client
 * (build one with `createKafkaClient`, kafka_client.ts) and connects lazily:
 * the producer and the admin client on first use, one kafkajs consumer per
 * group member. Its parts, one file each:
 *
 * - kafka_topics.ts: creating topics, partition counts, offsets and lag.
 * - kafka_producer.ts: idempotent, `acks: -1`, GZIP by default, partitions
 *   chosen here (murmur2) so each record's offset is known exactly.
 * - kafka_member.ts: a group member; offsets are committed only after the
 *   handler resolves, a failed batch is sought back with a doubling back-off.
 * - kafka_transactional_member.ts: consume-process-produce in transactions.
 * - kafka_read_partition.ts: reading one partition to its end.
 */

import { type Admin, CompressionTypes, Kafka } from "kafkajs";
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
  type TopicSpec,
  type TransactionalConsumerOptions,
  type TransactionalHandler,
} from "./event_log.ts";
import { Lazy, type MemberContext, type Settings, withTimeout } from "./_kafka_shared.ts";
import { KafkaProducer } from "./kafka_producer.ts";
import { KafkaTopics } from "./kafka_topics.ts";
import { KafkaMember } from "./kafka_member.ts";
import { readToEnd } from "./kafka_read_partition.ts";
import { KafkaTransactionalMember } from "./kafka_transactional_member.ts";

export interface KafkaEventLogOptions {
  /**
   * Compression of produced record batches (kafkajs's built-in GZIP codec, or none).
   * @default "none"
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
  readonly #producer: KafkaProducer;
  readonly #topics: KafkaTopics;
  readonly #admin: Lazy<Admin>;
  /** An admin client that does not retry, so that `ping` answers promptly. */
  readonly #pingAdmin: Lazy<Admin>;
  readonly #members = new Set<{ stop(): Promise<void> }>();
  readonly #memberContext: MemberContext;
  #closed = false;

  constructor(kafka: Kafka, options: KafkaEventLogOptions = {}) {
    this.#settings = {
      compression: options.compression === "gzip" ? CompressionTypes.GZIP : CompressionTypes.None,
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
    this.#admin = new Lazy(() => kafka.admin());
    this.#topics = new KafkaTopics(this.#admin, this.#settings);
    this.#producer = new KafkaProducer(kafka, this.#topics, this.#settings);
    this.#pingAdmin = new Lazy(() => kafka.admin({ retry: { retries: 0 } }));
    this.#memberContext = {
      kafka,
      settings: this.#settings,
      admin: () => this.#admin.get(),
      partitionCount: (topic) => this.#topics.partitionCount(topic),
      forget: (member) => this.#members.delete(member),
    };
  }

  async ensureTopic(spec: TopicSpec): Promise<void> {
    this.#assertOpen(`create topic '${spec.name}'`);
    await this.#topics.ensure(spec);
  }

  async send(topic: string, records: readonly ProducerRecord[]): Promise<RecordMetadata[]> {
    this.#assertOpen(`send to topic '${topic}'`);
    return await this.#producer.send(topic, records);
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
    for (const topic of topics) await this.#topics.partitionCount(topic);
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
    const count = await this.#topics.partitionCount(topic);
    if (partition < 0 || partition >= count) {
      throw new RangeError(`Topic '${topic}' has no partition ${partition}`);
    }
    const bounds = await this.#topics.bounds(topic, partition);
    const end = bounds.high;
    const start = Math.max(fromOffset, bounds.low);
    if (start >= end) return Math.max(start, end);
    return await readToEnd(this.#memberContext, { topic, partition, start, end }, onRecords);
  }

  async lag(groupId: string, topic: string): Promise<PartitionLag[]> {
    this.#assertOpen(`read the lag of group '${groupId}'`);
    return await this.#topics.lag(groupId, topic);
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
}
