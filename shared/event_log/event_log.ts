/**
 * The event log port: Kafka's semantics (topics of N partitions, key-hash
 * partitioning, offsets, consumer groups with committed offsets) behind one
 * small interface, so that services never depend on a Kafka client directly.
 *
 * Adapters: `MemoryEventLog` (embedded, in process) and, later, a Kafka one.
 * Every adapter must pass `event_log_contract.ts`.
 */

/** Message headers. Values are text (trace context, error descriptions). */
export type RecordHeaders = Record<string, string>;

export interface TopicSpec {
  readonly name: string;
  readonly partitions: number;
}

export interface ProducerRecord {
  /** Partitioning key; records with equal keys land on the same partition. */
  readonly key: Uint8Array | null;
  readonly value: Uint8Array;
  readonly headers?: RecordHeaders;
  /** Epoch milliseconds; defaults to the time of sending. */
  readonly timestamp?: number;
}

export interface RecordMetadata {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
}

export interface ConsumedRecord {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly key: Uint8Array | null;
  readonly value: Uint8Array;
  readonly headers: RecordHeaders;
  readonly timestamp: number;
}

/** Consecutive records of one partition, delivered to one handler call. */
export interface RecordBatch {
  readonly topic: string;
  readonly partition: number;
  readonly records: readonly ConsumedRecord[];
  /** Offset the next produced record of this partition will get. */
  readonly highWatermark: number;
}

export interface TopicPartition {
  readonly topic: string;
  readonly partition: number;
}

export interface PartitionLag extends TopicPartition {
  /** Next offset the group will read (its committed offset), or the log start. */
  readonly committedOffset: number;
  readonly highWatermark: number;
  readonly lag: number;
}

/**
 * Processes one batch. The batch's offsets are committed only after the
 * returned promise resolves; if it rejects, nothing is committed and the same
 * records are delivered again (after a back-off), so a handler must be
 * idempotent and must not swallow failures of its side effect.
 */
export type BatchHandler = (batch: RecordBatch) => Promise<void>;

export interface ConsumerOptions {
  readonly groupId: string;
  readonly topics: readonly string[];
  /**
   * Where a partition without a committed offset starts: the oldest retained
   * record (`true`) or the next produced one (`false`).
   * @default true
   */
  readonly fromBeginning?: boolean;
  /**
   * Most records given to one handler call.
   * @default 500
   */
  readonly maxBatchSize?: number;
  /**
   * Most batches of different partitions this member hands to `handler` at
   * the same time, so a slow side effect (a bulk write) overlaps with fetching
   * and decoding. Batches of one partition are always handled one at a time,
   * in order. An upper bound: an adapter may handle fewer at once.
   * @default 1
   */
  readonly partitionConcurrency?: number;
  /** Called when a handler call fails, before the batch is redelivered. */
  readonly onBatchError?: (error: unknown, batch: RecordBatch, attempt: number) => void;
}

/** One member of a consumer group, returned by `EventLog.consume`. */
export interface ConsumerGroupMember {
  readonly groupId: string;
  readonly memberId: string;
  /** The partitions this member currently owns. */
  assignment(): TopicPartition[];
  /**
   * Leaves the group gracefully: the batch in progress finishes and is
   * committed, then the member's partitions are handed to the other members.
   */
  stop(): Promise<void>;
}

export interface EventLog {
  /**
   * Creates the topic if it does not exist and verifies its partition count;
   * resolves only once the topic is usable. Throws `TopicMismatchError` when
   * an existing topic has a different partition count.
   */
  ensureTopic(spec: TopicSpec): Promise<void>;
  /**
   * Appends records; resolves once every record is acknowledged by the log
   * (for Kafka: by all in-sync replicas), with each record's position.
   */
  send(topic: string, records: readonly ProducerRecord[]): Promise<RecordMetadata[]>;
  /** Joins a consumer group and starts delivering batches to `handler`. */
  consume(options: ConsumerOptions, handler: BatchHandler): Promise<ConsumerGroupMember>;
  /** Committed offsets and lag of a group, per partition of `topic`. */
  lag(groupId: string, topic: string): Promise<PartitionLag[]>;
  /** Resolves when the log is reachable; rejects with the reason otherwise. */
  ping(): Promise<void>;
  /** Stops every member that is still running and releases connections. */
  close(): Promise<void>;
}

export class UnknownTopicError extends Error {
  readonly code = "unknown-topic";
  constructor(readonly topic: string) {
    super(`Cannot use topic '${topic}': it does not exist`);
    this.name = "UnknownTopicError";
  }
}

export class TopicMismatchError extends Error {
  readonly code = "topic-mismatch";
  constructor(readonly topic: string, readonly expected: number, readonly actual: number) {
    super(
      `Cannot use topic '${topic}': it has ${actual} partitions, the service needs ${expected}`,
    );
    this.name = "TopicMismatchError";
  }
}
