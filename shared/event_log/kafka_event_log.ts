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

import { Buffer } from "node:buffer";
import {
  type Admin,
  CompressionTypes,
  type Consumer,
  type ConsumerCrashEvent,
  type ConsumerGroupJoinEvent,
  type EachBatchPayload,
  type IHeaders,
  Kafka,
  type KafkaMessage,
  type logCreator as KafkaLogCreator,
  type LogEntry,
  logLevel as KafkaLogLevel,
  type Message,
  Partitioners,
  type PartitionMetadata,
  type Producer,
  type RetryOptions,
} from "kafkajs";
import {
  type BatchHandler,
  type ConsumedRecord,
  type ConsumerGroupMember,
  type ConsumerOptions,
  type EventLog,
  type PartitionLag,
  type ProducerRecord,
  type RecordBatch,
  type RecordHeaders,
  type RecordMetadata,
  TopicMismatchError,
  type TopicPartition,
  type TopicSpec,
  type Transaction,
  type TransactionalConsumerOptions,
  type TransactionalHandler,
  UnknownTopicError,
} from "./event_log.ts";
import { EventLogClosedError } from "./memory_event_log.ts";
import { partitionForKey } from "./murmur2.ts";

export { EventLogClosedError };

// ---------------------------------------------------------------------------
// The client

/** One kafkajs log line, as `createKafkaClient` hands it to `onLog`. */
export interface KafkaLogEntry {
  readonly level: "error" | "warn" | "info" | "debug";
  /** The kafkajs component, such as `Consumer` or `Connection`. */
  readonly namespace: string;
  readonly message: string;
  /** Everything else kafkajs attached (group id, broker, error, stack...). */
  readonly details: Readonly<Record<string, unknown>>;
}

export interface KafkaClientOptions {
  /** Bootstrap brokers, `host:port`. */
  readonly brokers: readonly string[];
  /**
   * Names this client in the broker's logs and metrics.
   * @default "twitterapi"
   */
  readonly clientId?: string;
  /**
   * Longest wait for a TCP connection to a broker, in milliseconds.
   * @default 3_000
   */
  readonly connectionTimeoutMs?: number;
  /**
   * Longest wait for a broker's answer to one request, in milliseconds.
   * @default 30_000
   */
  readonly requestTimeoutMs?: number;
  /**
   * kafkajs's retries of failed requests and connections (its `retry` option).
   * @default kafkajs's: 5 retries from 300 ms, doubling
   */
  readonly retry?: RetryOptions;
  /**
   * Least severe kafkajs log level handed to `onLog`.
   * @default "error"
   */
  readonly logLevel?: KafkaLogEntry["level"];
  /**
   * Receives kafkajs's log lines at `logLevel` and above.
   * @default nothing: the lines are dropped
   */
  readonly onLog?: (entry: KafkaLogEntry) => void;
  /** Replaces `onLog` with a kafkajs `logCreator` of the caller's (still at `logLevel`). */
  readonly logCreator?: KafkaLogCreator;
}

const LOG_LEVELS: Readonly<Record<KafkaLogEntry["level"], KafkaLogLevel>> = {
  error: KafkaLogLevel.ERROR,
  warn: KafkaLogLevel.WARN,
  info: KafkaLogLevel.INFO,
  debug: KafkaLogLevel.DEBUG,
};

function levelName(level: KafkaLogLevel): KafkaLogEntry["level"] {
  if (level <= KafkaLogLevel.ERROR) return "error";
  if (level <= KafkaLogLevel.WARN) return "warn";
  return level <= KafkaLogLevel.INFO ? "info" : "debug";
}

/**
 * kafkajs logs every error answer of the broker as an error, including the
 * expected ones (a rebalance announced by a heartbeat, a topic that exists
 * already); the component that sent the request logs again when it is a real
 * failure. Those answers are passed on as warnings.
 */
function severity(entry: LogEntry): KafkaLogEntry["level"] {
  const level = levelName(entry.level);
  return level === "error" && entry.namespace === "Connection" &&
      entry.log.message.startsWith("Response ")
    ? "warn"
    : level;
}

/** A kafkajs client whose log lines go to `onLog` only, never to the console. */
export function createKafkaClient(options: KafkaClientOptions): Kafka {
  const { onLog } = options;
  const threshold = LOG_LEVELS[options.logLevel ?? "error"];
  const routed: KafkaLogCreator = () => (entry) => {
    if (onLog === undefined) return;
    const level = severity(entry);
    if (LOG_LEVELS[level] > threshold) return;
    const { message, timestamp: _timestamp, logger: _logger, ...details } = entry.log;
    try {
      onLog({ level, namespace: entry.namespace, message, details });
    } catch {
      // A failing log callback must not break the client.
    }
  };
  return new Kafka({
    brokers: [...options.brokers],
    clientId: options.clientId ?? "twitterapi",
    connectionTimeout: options.connectionTimeoutMs ?? 3_000,
    requestTimeout: options.requestTimeoutMs ?? 30_000,
    ...(options.retry === undefined ? {} : { retry: options.retry }),
    logLevel: threshold,
    logCreator: options.logCreator ?? routed,
  });
}

// ---------------------------------------------------------------------------
// The adapter

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

interface Settings {
  readonly compression: CompressionTypes;
  readonly replicationFactor: number;
  readonly sessionTimeoutMs: number;
  readonly heartbeatIntervalMs: number;
  readonly rebalanceTimeoutMs: number;
  readonly maxWaitTimeMs: number;
  readonly retryBackoffMs: number;
  readonly pingTimeoutMs: number;
  readonly metadataMaxAgeMs: number;
  readonly onError: (error: unknown, context: string) => void;
}

const DEFAULT_MAX_BATCH_SIZE = 500;
const MAX_RETRY_BACKOFF_MS = 5000;
/** Pause before a member tries again to pin where its partitions start. */
const PIN_RETRY_MS = 500;
/** Longest `ensureTopic` waits for every partition of a topic to have a leader. */
const LEADER_WAIT_MS = 10_000;
/** Errors after which kafkajs must rejoin the group: a heartbeat reports them. */
const REJOIN_ERRORS = new Set([
  "REBALANCE_IN_PROGRESS",
  "ILLEGAL_GENERATION",
  "UNKNOWN_MEMBER_ID",
  "NOT_COORDINATOR_FOR_GROUP",
]);
const EMPTY = new Uint8Array(0);
const decoder = new TextDecoder();

function errorType(error: unknown): unknown {
  return typeof error === "object" && error !== null && "type" in error ? error.type : undefined;
}

function partitionKey(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}

function byPartition(a: TopicPartition, b: TopicPartition): number {
  return a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition;
}

/** A Buffer over the same bytes (kafkajs wants Buffers; no copy). */
function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A plain Uint8Array over the same bytes as kafkajs's Buffer. */
function toBytes(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

function toHeaders(headers: IHeaders | undefined): RecordHeaders {
  const result: Record<string, string> = {};
  if (headers === undefined) return result;
  for (const [name, raw] of Object.entries(headers)) {
    // A repeated header arrives as an array; the last one wins, as Kafka's `lastHeader`.
    const value = Array.isArray(raw) ? raw.at(-1) : raw;
    if (value === undefined) continue;
    result[name] = typeof value === "string" ? value : decoder.decode(value);
  }
  return result;
}

function toRecord(topic: string, partition: number, message: KafkaMessage): ConsumedRecord {
  return {
    topic,
    partition,
    offset: Number(message.offset),
    key: message.key === null ? null : toBytes(message.key),
    value: message.value === null ? EMPTY : toBytes(message.value),
    headers: toHeaders(message.headers),
    timestamp: Number(message.timestamp),
  };
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A client connected on first use; a failed connection is retried by the next use. */
class Lazy<T extends { connect(): Promise<void>; disconnect(): Promise<void> }> {
  #client: T | undefined;
  #ready: Promise<T> | undefined;

  constructor(readonly create: () => T) {}

  get(): Promise<T> {
    this.#ready ??= this.#connect();
    return this.#ready;
  }

  async #connect(): Promise<T> {
    const client = this.create();
    this.#client = client;
    try {
      await client.connect();
      return client;
    } catch (error) {
      this.#ready = undefined;
      this.#client = undefined;
      await client.disconnect().catch(() => {});
      throw error;
    }
  }

  async disconnect(): Promise<void> {
    const client = this.#client;
    const ready = this.#ready;
    this.#client = undefined;
    this.#ready = undefined;
    if (client === undefined) return;
    await ready?.catch(() => {});
    await client.disconnect();
  }
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

// ---------------------------------------------------------------------------
// A group member: one kafkajs consumer

/** What a member needs of its event log. */
interface MemberContext {
  readonly kafka: Kafka;
  readonly settings: Settings;
  admin(): Promise<Admin>;
  partitionCount(topic: string): Promise<number>;
  forget(member: { stop(): Promise<void> }): void;
}

interface MemberOptions extends ConsumerOptions {
  readonly maxBatchSize: number;
}

type HandlerOutcome = { readonly ok: true } | { readonly ok: false; readonly error: unknown };

class KafkaMember implements ConsumerGroupMember {
  readonly groupId: string;
  readonly #context: MemberContext;
  readonly #consumer: Consumer;
  readonly #topics: readonly string[];
  readonly #fromBeginning: boolean;
  readonly #maxBatchSize: number;
  readonly #partitionConcurrency: number;
  readonly #handler: BatchHandler;
  readonly #onBatchError: ConsumerOptions["onBatchError"];
  readonly #settings: Settings;
  readonly #removeListeners: (() => void)[] = [];
  #memberId = "";
  #assignment: TopicPartition[] = [];
  /** Bumped at every join and crash, so that stale pinning work is dropped. */
  #generation = 0;
  /** Consecutive failures per partition, for the back-off and the attempt number. */
  readonly #failures = new Map<string, number>();
  /** Back-off timers of paused partitions waiting to be redelivered. */
  readonly #backoffs = new Map<string, ReturnType<typeof setTimeout>>();
  /** Partitions paused until the group's start offset is pinned (fromBeginning false). */
  readonly #pinning = new Set<string>();
  #pinRetry: ReturnType<typeof setTimeout> | undefined;
  /** A rejoin-type error a heartbeat reported while a handler ran. */
  #rejoin: unknown;
  #running: Promise<void> | undefined;
  #stopping = false;
  #stopped: Promise<void> | undefined;

  constructor(context: MemberContext, options: MemberOptions, handler: BatchHandler) {
    this.groupId = options.groupId;
    this.#context = context;
    this.#settings = context.settings;
    this.#topics = options.topics;
    this.#fromBeginning = options.fromBeginning ?? true;
    this.#maxBatchSize = options.maxBatchSize;
    this.#partitionConcurrency = options.partitionConcurrency ?? 1;
    this.#handler = handler;
    this.#onBatchError = options.onBatchError;
    const settings = this.#settings;
    this.#consumer = context.kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: settings.sessionTimeoutMs,
      heartbeatInterval: settings.heartbeatIntervalMs,
      rebalanceTimeout: settings.rebalanceTimeoutMs,
      maxWaitTimeInMs: settings.maxWaitTimeMs,
      allowAutoTopicCreation: false,
    });
  }

  get memberId(): string {
    return this.#memberId;
  }

  assignment(): TopicPartition[] {
    return this.#assignment.map(({ topic, partition }) => ({ topic, partition }));
  }

  /** Connects, subscribes and joins; resolves once the first join is done. */
  start(): Promise<void> {
    this.#running = this.#start();
    return this.#running;
  }

  async #start(): Promise<void> {
    const consumer = this.#consumer;
    const { GROUP_JOIN, CRASH } = consumer.events;
    let crash: ConsumerCrashEvent["payload"] | undefined;
    this.#removeListeners.push(
      consumer.on(GROUP_JOIN, (event: ConsumerGroupJoinEvent) => this.#joined(event)),
      consumer.on(CRASH, (event: ConsumerCrashEvent) => {
        crash = event.payload;
        this.#crashed(event);
      }),
    );
    await consumer.connect();
    await consumer.subscribe({ topics: [...this.#topics], fromBeginning: this.#fromBeginning });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: this.#partitionConcurrency,
      eachBatch: (payload) => this.#eachBatch(payload),
    });
    // run() resolves after the first join, or after a crash while joining.
    if (crash !== undefined && !crash.restart) throw crash.error;
  }

  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    this.#stopping = true;
    this.#clearTimers();
    await this.#running?.catch(() => {});
    try {
      // Waits for the batch in progress (which commits), then leaves the group.
      await this.#consumer.disconnect();
    } finally {
      this.#clearTimers();
      for (const remove of this.#removeListeners) remove();
      this.#assignment = [];
      this.#context.forget(this);
    }
  }

  #clearTimers(): void {
    for (const timer of this.#backoffs.values()) clearTimeout(timer);
    this.#backoffs.clear();
    clearTimeout(this.#pinRetry);
    this.#pinRetry = undefined;
  }

  #joined(event: ConsumerGroupJoinEvent): void {
    const { memberId, memberAssignment } = event.payload;
    this.#memberId = memberId;
    this.#rejoin = undefined;
    const generation = ++this.#generation;
    const assigned = Object.entries(memberAssignment)
      .flatMap(([topic, partitions]) => partitions.map((partition) => ({ topic, partition })))
      .sort(byPartition);
    const owned = new Set(assigned.map(({ topic, partition }) => partitionKey(topic, partition)));
    for (const key of this.#failures.keys()) {
      if (!owned.has(key)) this.#failures.delete(key);
    }
    for (const [key, timer] of this.#backoffs) {
      if (!owned.has(key)) {
        clearTimeout(timer);
        this.#backoffs.delete(key);
      }
    }
    clearTimeout(this.#pinRetry);
    this.#pinning.clear();
    if (this.#fromBeginning || assigned.length === 0) {
      this.#assignment = assigned;
      return;
    }
    // Partitions without a committed offset would start at "latest" as kafkajs
    // resolves it at its first fetch, and again at every later owner: records
    // produced in between would be skipped. Pause them until the group's start
    // is committed, and report them only then.
    this.#assignment = [];
    for (const { topic, partition } of assigned) this.#pinning.add(partitionKey(topic, partition));
    this.#pause(assigned);
    void this.#pin(assigned, generation);
  }

  #crashed(event: ConsumerCrashEvent): void {
    this.#generation++;
    this.#assignment = [];
    this.#settings.onError(
      event.payload.error,
      `consumer of group '${this.groupId}' crashed${
        event.payload.restart ? "; kafkajs restarts it" : ""
      }`,
    );
  }

  async #pin(assigned: readonly TopicPartition[], generation: number): Promise<void> {
    const current = () => generation === this.#generation && !this.#stopping;
    try {
      await this.#running;
      const admin = await this.#context.admin();
      const topics = [...new Set(assigned.map(({ topic }) => topic))];
      const committed = await admin.fetchOffsets({ groupId: this.groupId, topics });
      const missing = assigned.filter(({ topic, partition }) => {
        const offset = committed.find((entry) => entry.topic === topic)?.partitions
          .find((entry) => entry.partition === partition)?.offset;
        return offset === undefined || Number(offset) < 0;
      });
      const starts: { topic: string; partition: number; offset: string }[] = [];
      for (const topic of new Set(missing.map((entry) => entry.topic))) {
        const offsets = await admin.fetchTopicOffsets(topic);
        for (const { partition } of missing.filter((entry) => entry.topic === topic)) {
          const high = offsets.find((entry) => entry.partition === partition)?.high;
          if (high !== undefined) starts.push({ topic, partition, offset: high });
        }
      }
      if (!current()) return;
      if (starts.length > 0) await this.#consumer.commitOffsets(starts);
      if (!current()) return;
      this.#pinning.clear();
      this.#assignment = [...assigned];
      this.#resume(
        assigned.filter(({ topic, partition }) =>
          !this.#backoffs.has(partitionKey(topic, partition))
        ),
      );
    } catch (error) {
      if (!current()) return;
      this.#settings.onError(error, `cannot pin the start offsets of group '${this.groupId}'`);
      this.#pinRetry = setTimeout(() => void this.#pin(assigned, generation), PIN_RETRY_MS);
    }
  }

  async #eachBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const { topic, partition } = batch;
    const highWatermark = Number(batch.highWatermark);
    const messages = batch.messages;
    for (let start = 0; start < messages.length; start += this.#maxBatchSize) {
      // Stop between slices when the member stops or the partition was sought.
      if (!payload.isRunning() || payload.isStale()) return;
      // Throws on a rebalance, so that kafkajs rejoins before the next slice.
      if (start > 0) await payload.heartbeat();
      const records = messages
        .slice(start, start + this.#maxBatchSize)
        .map((message) => toRecord(topic, partition, message));
      const recordBatch: RecordBatch = { topic, partition, records, highWatermark };
      const outcome = await this.#handle(recordBatch, payload);
      if (!outcome.ok) {
        this.#fail(recordBatch, outcome.error);
        return this.#rejoinIfAsked();
      }
      const last = records.at(-1)!.offset;
      await payload.commitOffsetsIfNecessary({
        topics: [{ topic, partitions: [{ partition, offset: String(last + 1) }] }],
      });
      payload.resolveOffset(String(last));
      this.#failures.delete(partitionKey(topic, partition));
      this.#rejoinIfAsked();
    }
  }

  /** Runs the handler, heartbeating meanwhile so that a long batch keeps the membership. */
  async #handle(batch: RecordBatch, payload: EachBatchPayload): Promise<HandlerOutcome> {
    const timer = setInterval(() => {
      payload.heartbeat().catch((error: unknown) => {
        if (REJOIN_ERRORS.has(errorType(error) as string)) this.#rejoin = error;
      });
    }, this.#settings.heartbeatIntervalMs);
    try {
      await this.#handler(batch);
      return { ok: true };
    } catch (error) {
      return { ok: false, error };
    } finally {
      clearInterval(timer);
    }
  }

  /** After a heartbeat reported a rebalance: leave eachBatch so that kafkajs rejoins. */
  #rejoinIfAsked(): void {
    const error = this.#rejoin;
    if (error === undefined) return;
    this.#rejoin = undefined;
    throw error;
  }

  #fail(batch: RecordBatch, error: unknown): void {
    const { topic, partition } = batch;
    const key = partitionKey(topic, partition);
    const attempt = (this.#failures.get(key) ?? 0) + 1;
    this.#failures.set(key, attempt);
    try {
      this.#onBatchError?.(error, batch, attempt);
    } catch {
      // A failing error callback must not stop delivery to the other partitions.
    }
    // Nothing of this slice was committed or resolved; seeking makes the next
    // fetch of the partition start at its first record again.
    this.#consumer.seek({ topic, partition, offset: String(batch.records[0]!.offset) });
    if (this.#stopping) return;
    const delay = Math.min(
      this.#settings.retryBackoffMs * 2 ** (attempt - 1),
      MAX_RETRY_BACKOFF_MS,
    );
    clearTimeout(this.#backoffs.get(key));
    this.#pause([{ topic, partition }]);
    this.#backoffs.set(
      key,
      setTimeout(() => {
        this.#backoffs.delete(key);
        if (!this.#pinning.has(key)) this.#resume([{ topic, partition }]);
      }, delay),
    );
  }

  #pause(partitions: readonly TopicPartition[]): void {
    this.#toggle("pause", partitions);
  }

  #resume(partitions: readonly TopicPartition[]): void {
    this.#toggle("resume", partitions);
  }

  #toggle(action: "pause" | "resume", partitions: readonly TopicPartition[]): void {
    if (partitions.length === 0 || this.#stopping) return;
    const byTopic = new Map<string, number[]>();
    for (const { topic, partition } of partitions) {
      byTopic.set(topic, [...byTopic.get(topic) ?? [], partition]);
    }
    const request = [...byTopic].map(([topic, list]) => ({ topic, partitions: list }));
    try {
      this.#consumer[action](request);
    } catch (error) {
      // Only when kafkajs is between a crash and its restart; the restart rejoins.
      this.#settings.onError(error, `cannot ${action} partitions of group '${this.groupId}'`);
    }
  }
}

// ---------------------------------------------------------------------------
// Reading a partition to its end

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
async function readToEnd(
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

// ---------------------------------------------------------------------------
// A transactional member: one kafkajs consumer and one transactional producer

/** Records produced since the last commit, and the offsets consumed meanwhile. */
class PendingWork implements Transaction {
  readonly sends: { topic: string; records: readonly ProducerRecord[] }[] = [];
  /** Next offset per consumed partition (by `partitionKey`). */
  readonly consumed = new Map<string, TopicPartition & { offset: number }>();
  records = 0;

  constructor(readonly openedAt: number) {}

  send(topic: string, records: readonly ProducerRecord[]): void {
    this.sends.push({ topic, records });
  }
}

/** Pause between attempts to take over partitions whose restore failed. */
const RESTORE_RETRY_MS = 1000;
/**
 * A transaction of a killed member that no successor fences times out after
 * this long; until then it holds back readers of the topics it wrote to.
 */
const TRANSACTION_TIMEOUT_MS = 15_000;

/**
 * Kafka Streams' exactly-once loop on kafkajs. Work is buffered between
 * commits; a commit is one Kafka transaction holding the produced records and
 * the consumed offsets (`sendOffsets`). Partitions start from the group's
 * committed offsets after every (re)assignment, sought explicitly because
 * kafkajs's consumer does not see offsets committed through a producer.
 * Buffered work of a member that rebalances, or whose handler or commit
 * fails, is dropped: its partitions are revoked and restored (`onRevoked`,
 * `onAssigned`) and consumed again from their committed offsets.
 */
class KafkaTransactionalMember implements ConsumerGroupMember {
  readonly groupId: string;
  readonly #context: MemberContext;
  readonly #options: TransactionalConsumerOptions;
  readonly #handler: TransactionalHandler;
  readonly #consumer: Consumer;
  readonly #producer: Producer;
  readonly #maxBatchSize: number;
  readonly #removeListeners: (() => void)[] = [];
  #memberId = "";
  #assignment: TopicPartition[] = [];
  /** Owned, restored partitions with the next offset to process (by `partitionKey`). */
  readonly #ready = new Map<string, number>();
  #pending: PendingWork | undefined;
  #generation = 0;
  #rebalancing = false;
  /** Serialises batches, commits and assignment changes. */
  #queue: Promise<void> = Promise.resolve();
  #commitTimer: ReturnType<typeof setInterval> | undefined;
  #stopping = false;
  #stopped: Promise<void> | undefined;

  constructor(
    context: MemberContext,
    options: TransactionalConsumerOptions,
    handler: TransactionalHandler,
  ) {
    this.groupId = options.groupId;
    this.#context = context;
    this.#options = options;
    this.#handler = handler;
    this.#maxBatchSize = options.maxBatchSize ?? DEFAULT_MAX_BATCH_SIZE;
    const settings = context.settings;
    this.#consumer = context.kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: settings.sessionTimeoutMs,
      heartbeatInterval: settings.heartbeatIntervalMs,
      rebalanceTimeout: settings.rebalanceTimeoutMs,
      maxWaitTimeInMs: settings.maxWaitTimeMs,
      readUncommitted: false,
      allowAutoTopicCreation: false,
    });
    this.#producer = context.kafka.producer({
      transactionalId: options.transactionalId,
      idempotent: true,
      maxInFlightRequests: 1,
      transactionTimeout: TRANSACTION_TIMEOUT_MS,
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
  }

  get memberId(): string {
    return this.#memberId;
  }

  assignment(): TopicPartition[] {
    return this.#assignment.map(({ topic, partition }) => ({ topic, partition }));
  }

  async start(): Promise<void> {
    // Connecting a transactional producer fences a predecessor with the same
    // id and aborts its open transaction.
    await this.#producer.connect();
    const consumer = this.#consumer;
    const { GROUP_JOIN, REBALANCING, CRASH } = consumer.events;
    let crash: ConsumerCrashEvent["payload"] | undefined;
    this.#removeListeners.push(
      consumer.on(GROUP_JOIN, (event: ConsumerGroupJoinEvent) => this.#joined(event)),
      consumer.on(REBALANCING, () => {
        this.#rebalancing = true;
        this.#enqueue(() => Promise.resolve(this.#drop([], "a rebalance", false)));
      }),
      consumer.on(CRASH, (event: ConsumerCrashEvent) => {
        crash = event.payload;
        this.#generation++;
        this.#assignment = [];
        this.#options.onError?.(event.payload.error, `consumer of group '${this.groupId}' crashed`);
      }),
    );
    await consumer.connect();
    await consumer.subscribe({ topics: [...this.#options.topics], fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (payload) => this.#eachBatch(payload),
    });
    if (crash !== undefined && !crash.restart) throw crash.error;
    this.#commitTimer = setInterval(
      () => this.#enqueue(() => this.#commitIfDue()),
      Math.max(Math.floor(this.#options.commitIntervalMs / 2), 10),
    );
  }

  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#commitTimer);
    try {
      // Still a member until the consumer disconnects: the last commit is safe.
      await this.#enqueue(() => this.#rebalancing ? Promise.resolve() : this.#commit());
      await this.#consumer.disconnect();
    } finally {
      for (const remove of this.#removeListeners) remove();
      this.#assignment = [];
      await this.#producer.disconnect().catch(() => {});
      this.#context.forget(this);
    }
  }

  #enqueue(task: () => Promise<void>): Promise<void> {
    const run = this.#queue.then(task);
    this.#queue = run.catch((error: unknown) =>
      this.#options.onError?.(error, `transactional member of group '${this.groupId}'`)
    );
    return run;
  }

  #joined(event: ConsumerGroupJoinEvent): void {
    const { memberId, memberAssignment } = event.payload;
    this.#memberId = memberId;
    const generation = ++this.#generation;
    const assigned = Object.entries(memberAssignment)
      .flatMap(([topic, partitions]) => partitions.map((partition) => ({ topic, partition })))
      .sort(byPartition);
    this.#assignment = assigned;
    // kafkajs would start from offsets it cached before the last transactions;
    // everything waits until its start is sought below.
    this.#toggle("pause", assigned);
    this.#enqueue(() => {
      this.#rebalancing = false;
      const owned = new Set(assigned.map(({ topic, partition }) => partitionKey(topic, partition)));
      const lost = [...this.#ready.keys()].filter((key) => !owned.has(key));
      // The dropped partitions still owned are among `gained` below: taken over once.
      this.#drop(lost, "a rebalance", false);
      const kept = assigned.filter(({ topic, partition }) =>
        this.#ready.has(partitionKey(topic, partition))
      );
      for (const { topic, partition } of kept) {
        const offset = this.#ready.get(partitionKey(topic, partition))!;
        this.#consumer.seek({ topic, partition, offset: String(offset) });
      }
      this.#toggle("resume", kept);
      const gained = assigned.filter(({ topic, partition }) =>
        !this.#ready.has(partitionKey(topic, partition))
      );
      if (gained.length > 0) void this.#takeOver(gained, generation);
      return Promise.resolve();
    });
  }

  /**
   * Drops the buffered work: its partitions and `lost` are revoked (their
   * state is stale); with `retake`, the ones still owned are taken over again
   * (a rebalance takes over its assignment itself).
   */
  #drop(lost: readonly string[], reason: string, retake = true): void {
    const pending = this.#pending;
    this.#pending = undefined;
    const affected = new Set(lost);
    for (const key of pending?.consumed.keys() ?? []) affected.add(key);
    if (affected.size === 0) return;
    if (pending !== undefined) {
      this.#options.onError?.(
        new Error(`Dropped ${pending.records} uncommitted records after ${reason}`),
        `group '${this.groupId}'`,
      );
    }
    const partitions = this.#partitionsOf(affected);
    for (const key of affected) this.#ready.delete(key);
    this.#options.onRevoked?.(partitions);
    const owned = new Set(
      this.#assignment.map(({ topic, partition }) => partitionKey(topic, partition)),
    );
    const owners = partitions.filter(({ topic, partition }) =>
      owned.has(partitionKey(topic, partition))
    );
    if (retake && owners.length > 0 && !this.#rebalancing) {
      this.#toggle("pause", owners);
      void this.#takeOver(owners, this.#generation);
    }
  }

  #partitionsOf(keys: Iterable<string>): TopicPartition[] {
    return [...keys].map((key) => {
      const [topic, partition] = key.split("\u0000");
      return { topic: topic!, partition: Number(partition) };
    });
  }

  /** Restores partitions, then starts them at the group's committed offsets. */
  async #takeOver(partitions: readonly TopicPartition[], generation: number): Promise<void> {
    const current = () => generation === this.#generation && !this.#stopping;
    try {
      await this.#options.onAssigned?.(partitions);
      // Read after the restore: a predecessor's last transaction has completed by then.
      const starts = await this.#committedOffsets(partitions);
      if (!current()) return;
      await this.#enqueue(() => {
        if (!current()) return Promise.resolve();
        for (const { topic, partition, offset } of starts) {
          this.#ready.set(partitionKey(topic, partition), offset);
          this.#consumer.seek({ topic, partition, offset: String(offset) });
        }
        this.#toggle("resume", partitions);
        return Promise.resolve();
      });
    } catch (error) {
      if (!current()) return;
      this.#options.onError?.(error, `cannot take over partitions of group '${this.groupId}'`);
      setTimeout(() => void this.#takeOver(partitions, generation), RESTORE_RETRY_MS);
    }
  }

  async #committedOffsets(
    partitions: readonly TopicPartition[],
  ): Promise<(TopicPartition & { offset: number })[]> {
    const admin = await this.#context.admin();
    const topics = [...new Set(partitions.map(({ topic }) => topic))];
    const committed = await admin.fetchOffsets({ groupId: this.groupId, topics });
    const result: (TopicPartition & { offset: number })[] = [];
    for (const topic of topics) {
      const earliest = await admin.fetchTopicOffsets(topic);
      for (const { partition } of partitions.filter((entry) => entry.topic === topic)) {
        const offset = Number(
          committed.find((entry) => entry.topic === topic)?.partitions
            .find((entry) => entry.partition === partition)?.offset ?? -1,
        );
        const low = Number(earliest.find((entry) => entry.partition === partition)?.low ?? 0);
        result.push({ topic, partition, offset: Math.max(offset, low) });
      }
    }
    return result;
  }

  async #eachBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const { topic, partition } = batch;
    const key = partitionKey(topic, partition);
    await this.#enqueue(async () => {
      const position = this.#ready.get(key);
      if (position === undefined || this.#rebalancing || this.#stopping) return;
      if (!payload.isRunning() || payload.isStale()) return;
      const highWatermark = Number(batch.highWatermark);
      // Records before the position were processed already (a refetch after a seek).
      const messages = batch.messages.filter((message) => Number(message.offset) >= position);
      const pending = messages.length === 0
        ? this.#pending
        : this.#pending ??= new PendingWork(Date.now());
      for (
        let start = 0;
        pending !== undefined && start < messages.length;
        start += this.#maxBatchSize
      ) {
        const records = messages
          .slice(start, start + this.#maxBatchSize)
          .map((message) => toRecord(topic, partition, message));
        try {
          await this.#handler({ topic, partition, records, highWatermark }, pending);
        } catch (error) {
          this.#options.onError?.(error, `handler failed on ${topic}/${partition}`);
          this.#drop([key], "a failed handler");
          return;
        }
        const next = records.at(-1)!.offset + 1;
        pending.consumed.set(key, { topic, partition, offset: next });
        pending.records += records.length;
        this.#ready.set(key, next);
      }
      // Past filtered transaction markers too, so the next fetch does not repeat them.
      payload.resolveOffset(batch.lastOffset());
      await this.#commitIfDue();
    });
  }

  async #commitIfDue(): Promise<void> {
    const pending = this.#pending;
    if (pending === undefined || this.#rebalancing || this.#stopping) return;
    if (Date.now() - pending.openedAt < this.#options.commitIntervalMs) return;
    await this.#commit();
  }

  async #commit(): Promise<void> {
    const pending = this.#pending;
    if (pending === undefined) return;
    this.#options.beforeCommit?.(pending);
    if (pending.consumed.size === 0) {
      this.#pending = undefined;
      return;
    }
    const transaction = await this.#producer.transaction();
    try {
      for (const { topic, records } of pending.sends) {
        if (records.length === 0) continue;
        const count = await this.#context.partitionCount(topic);
        await transaction.send({
          topic,
          acks: -1,
          compression: this.#context.settings.compression,
          messages: records.map((record): Message => ({
            key: record.key === null ? null : toBuffer(record.key),
            value: toBuffer(record.value),
            // Transactional output is keyed; an unkeyed record goes to partition 0.
            partition: record.key === null ? 0 : partitionForKey(record.key, count),
            ...(record.headers === undefined ? {} : { headers: { ...record.headers } }),
            ...(record.timestamp === undefined ? {} : { timestamp: String(record.timestamp) }),
          })),
        });
      }
      const byTopic = new Map<string, { partition: number; offset: string }[]>();
      for (const { topic, partition, offset } of pending.consumed.values()) {
        byTopic.set(topic, [...byTopic.get(topic) ?? [], { partition, offset: String(offset) }]);
      }
      await transaction.sendOffsets({
        consumerGroupId: this.groupId,
        topics: [...byTopic].map(([topic, partitions]) => ({ topic, partitions })),
      });
      await transaction.commit();
      this.#pending = undefined;
      this.#options.onCommitted?.(pending.records);
    } catch (error) {
      await transaction.abort().catch(() => {});
      this.#options.onError?.(error, `cannot commit a transaction of group '${this.groupId}'`);
      this.#drop([], "an aborted commit");
    }
  }

  #toggle(action: "pause" | "resume", partitions: readonly TopicPartition[]): void {
    if (partitions.length === 0 || this.#stopping) return;
    const byTopic = new Map<string, number[]>();
    for (const { topic, partition } of partitions) {
      byTopic.set(topic, [...byTopic.get(topic) ?? [], partition]);
    }
    try {
      this.#consumer[action]([...byTopic].map(([topic, list]) => ({ topic, partitions: list })));
    } catch (error) {
      this.#options.onError?.(error, `cannot ${action} partitions of group '${this.groupId}'`);
    }
  }
}
