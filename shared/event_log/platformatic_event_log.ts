/**
 * The Kafka event log adapter on @platformatic/kafka (maintained, pure
 * TypeScript): pipelined idempotent produce, lz4/zstd/gzip/snappy,
 * transactions and static membership (KIP-345: a member with a stable
 * `groupInstanceId` takes its partitions back at once after a restart,
 * without a rebalance). It takes the connection settings of
 * `createPlatformaticClient` (platformatic_client.ts). Its parts, one file each:
 *
 * - platformatic_topics.ts: creating topics, partition counts, offsets and lag.
 * - platformatic_producer.ts: idempotent, `acks: -1`, partitions chosen here
 *   (murmur2) so each record's offset is known exactly.
 * - platformatic_member.ts: a group member; offsets are committed only after
 *   the handler resolves, a failed batch is delivered again with a back-off.
 * - platformatic_transactional_member.ts: consume-process-produce in transactions.
 * - platformatic_read_partition.ts: reading one partition to its end.
 * - _platformatic_feed.ts: the group membership and per-partition buffers both
 *   kinds of member consume from.
 */

import { Admin, type CompressionAlgorithmValue } from "@platformatic/kafka";
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
import { type MemberContext, type Settings, withTimeout } from "./_platformatic_shared.ts";
import type { PlatformaticClient } from "./platformatic_client.ts";
import { PlatformaticProducer } from "./platformatic_producer.ts";
import { PlatformaticTopics } from "./platformatic_topics.ts";
import { PlatformaticMember } from "./platformatic_member.ts";
import { readToEnd } from "./platformatic_read_partition.ts";
import { PlatformaticTransactionalMember } from "./platformatic_transactional_member.ts";

export type PlatformaticCompression = "none" | "gzip" | "snappy" | "lz4" | "zstd";

export interface PlatformaticEventLogOptions {
  /**
   * Compression of produced record batches.
   * @default "none"
   */
  readonly compression?: PlatformaticCompression;
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
   * Least time between a member's heartbeats.
   * @default 1_000
   */
  readonly heartbeatIntervalMs?: number;
  /**
   * Longest a rebalance waits for a member to rejoin.
   * @default 60_000
   */
  readonly rebalanceTimeoutMs?: number;
  /**
   * Longest a fetch waits on the broker for new records.
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
   * How long a topic's partition count is trusted before it is read again.
   * @default 300_000
   */
  readonly metadataMaxAgeMs?: number;
  /**
   * Static membership: gives each member of group `g` the instance id
   * `instanceIdFor(g)`, so that a restarted member rejoins as itself and takes
   * its partitions back at once (KIP-345). Ids must be unique per live member;
   * `undefined` (or a function answering undefined) keeps dynamic membership.
   * @default undefined
   */
  readonly instanceIdFor?: (groupId: string) => string | undefined;
  /**
   * Receives errors the adapter handles without a caller to reject.
   * @default nothing
   */
  readonly onError?: (error: unknown, context: string) => void;
}

export class PlatformaticEventLog implements EventLog {
  readonly #settings: Settings;
  readonly #admin: Admin;
  /** An admin client that does not retry, so that `ping` answers promptly. */
  readonly #pingAdmin: Admin;
  readonly #topics: PlatformaticTopics;
  readonly #producer: PlatformaticProducer;
  readonly #members = new Set<{ stop(): Promise<void> }>();
  readonly #memberContext: MemberContext;
  readonly #instanceIdFor: (groupId: string) => string | undefined;
  #closed = false;

  constructor(client: PlatformaticClient, options: PlatformaticEventLogOptions = {}) {
    const compression = options.compression ?? "none";
    this.#settings = {
      compression: compression === "none" ? undefined : compression as CompressionAlgorithmValue,
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
    this.#instanceIdFor = options.instanceIdFor ?? (() => undefined);
    this.#admin = new Admin({ ...client.base });
    this.#pingAdmin = new Admin({ ...client.base, retries: 0 });
    this.#topics = new PlatformaticTopics(this.#admin, this.#settings);
    this.#producer = new PlatformaticProducer(client, this.#topics, this.#settings);
    this.#memberContext = {
      client,
      settings: this.#settings,
      admin: this.#admin,
      topics: this.#topics,
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
    const groupInstanceId = this.#instanceIdFor(options.groupId);
    return await this.#join(options, (topics) =>
      new PlatformaticMember(
        this.#memberContext,
        {
          ...options,
          topics,
          maxBatchSize,
          ...(groupInstanceId === undefined ? {} : { groupInstanceId }),
        },
        handler,
      ));
  }

  async consumeTransactional(
    options: TransactionalConsumerOptions,
    handler: TransactionalHandler,
  ): Promise<ConsumerGroupMember> {
    this.#assertOpen(`join group '${options.groupId}'`);
    const groupInstanceId = this.#instanceIdFor(options.groupId);
    return await this.#join(options, (topics) =>
      new PlatformaticTransactionalMember(
        this.#memberContext,
        { ...options, topics, ...(groupInstanceId === undefined ? {} : { groupInstanceId }) },
        handler,
      ));
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
    const bounds = (await this.#topics.bounds(topic))[partition]!;
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
      const metadata = await this.#pingAdmin.metadata({ topics: [], forceUpdate: true });
      if (metadata.brokers.size === 0) {
        throw new Error("Cannot reach Kafka: the cluster has no brokers");
      }
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
      this.#producer.close(),
      this.#admin.close(),
      this.#pingAdmin.close(),
    ]);
    const failed = results.find((result) => result.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  }

  #assertOpen(action: string): void {
    if (this.#closed) throw new EventLogClosedError(action);
  }
}
