/**
 * The event log port: Kafka's semantics (topics of N partitions, key-hash
 * partitioning, offsets, consumer groups with committed offsets) behind one
 * small interface, so that services never depend on a Kafka client directly.
 *
 * Adapters: `MemoryEventLog` (embedded, in process), `KafkaEventLog` (kafkajs).
 * Every adapter must pass `event_log_contract.ts`.
 */

/** Message headers. Values are text (trace context, error descriptions). */
export type RecordHeaders = Record<string, string>;

export interface TopicSpec {
  readonly name: string;
  readonly partitions: number;
  /**
   * Keep only the newest record of each key (Kafka's `cleanup.policy=compact`),
   * for changelogs that hold state rather than history. Applies when the topic
   * is created; an adapter without retention limits may keep every record.
   * @default false
   */
  readonly compacted?: boolean;
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
/** Most records given to one handler call unless the consumer says otherwise. */
export const DEFAULT_MAX_BATCH_SIZE = 500;

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

/** Where the records a transactional handler produces go; they are written at commit. */
export interface Transaction {
  send(topic: string, records: readonly ProducerRecord[]): void;
}

/**
 * Processes one batch inside the member's open transaction: records given to
 * `transaction.send` become visible to readers together with the batch's
 * consumed offsets, or neither does.
 */
export type TransactionalHandler = (batch: RecordBatch, transaction: Transaction) => Promise<void>;

export interface TransactionalConsumerOptions {
  readonly groupId: string;
  readonly topics: readonly string[];
  /**
   * Identifies the member's transactions across restarts: a member started
   * with the id of a killed one fences it and aborts its open transaction at
   * once (otherwise the transaction times out). Unique per live member.
   */
  readonly transactionalId: string;
  /** Least time between commits; consumed offsets and produced records commit together. */
  readonly commitIntervalMs: number;
  /**
   * Most records given to one handler call.
   * @default 500
   */
  readonly maxBatchSize?: number;
  /**
   * Awaited before the first batch of newly owned partitions is delivered
   * (restore their state here); a rejection is reported to `onError` and the
   * call is retried. Partitions always start at the group's committed offset.
   */
  readonly onAssigned?: (partitions: readonly TopicPartition[]) => Promise<void>;
  /**
   * The member lost these partitions, or the uncommitted work on them was
   * aborted: drop their state. They are handed to `onAssigned` again if the
   * member still owns them, and consumption rewinds to the committed offsets.
   */
  readonly onRevoked?: (partitions: readonly TopicPartition[]) => void;
  /**
   * Called right before each commit, to add records that summarise the
   * interval (flushed state, coalesced updates) to the transaction.
   */
  readonly beforeCommit?: (transaction: Transaction) => void;
  /** Called after each commit with the number of records consumed in it. */
  readonly onCommitted?: (consumed: number) => void;
  /** Failures the member recovers from by itself: an aborted commit, a failed handler. */
  readonly onError?: (error: unknown, context: string) => void;
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
  /**
   * Joins a consumer group whose handler produces records transactionally
   * (consume-process-produce, exactly once): see `TransactionalConsumerOptions`.
   * Readers of the produced topics see only committed records.
   */
  consumeTransactional(
    options: TransactionalConsumerOptions,
    handler: TransactionalHandler,
  ): Promise<ConsumerGroupMember>;
  /**
   * Reads one partition's committed records from `fromOffset` (or the log
   * start, if later) to its current end, handing them to `onRecords` in
   * order; resolves with the offset after the last record read. For
   * restoring state from a changelog.
   */
  readPartition(
    topic: string,
    partition: number,
    fromOffset: number,
    onRecords: (records: readonly ConsumedRecord[]) => void,
  ): Promise<number>;
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

/** Thrown by every operation of an event log after `close`. */
export class EventLogClosedError extends Error {
  readonly code = "event-log-closed";
  constructor(action: string) {
    super(`Cannot ${action}: the event log is closed`);
    this.name = "EventLogClosedError";
  }
}
