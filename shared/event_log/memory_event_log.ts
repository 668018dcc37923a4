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
  type EventLog,
  type PartitionLag,
  type ProducerRecord,
  type RecordBatch,
  type RecordHeaders,
  type RecordMetadata,
  TopicMismatchError,
  type TopicPartition,
  type TopicSpec,
  UnknownTopicError,
} from "./event_log.ts";
import { partitionForKey } from "./murmur2.ts";

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

export class EventLogClosedError extends Error {
  readonly code = "event-log-closed";
  constructor(action: string) {
    super(`Cannot ${action}: the event log is closed`);
    this.name = "EventLogClosedError";
  }
}

const DEFAULT_RETENTION_RECORDS = 100_000;
const DEFAULT_RETENTION_MS = 60 * 60 * 1000;
const DEFAULT_RETRY_BACKOFF_MS = 100;
const MAX_RETRY_BACKOFF_MS = 5000;
const DEFAULT_MAX_BATCH_SIZE = 500;
const NO_HEADERS: RecordHeaders = Object.freeze({});

/** Wakes idle members when records arrive, partitions are released or members stop. */
class Signal {
  #waiters: (() => void)[] = [];

  wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  notify(): void {
    if (this.#waiters.length === 0) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}

interface Retention {
  readonly maxRecords: number;
  /** Records appended before `now() - maxAgeMs` are dropped; `Infinity` disables. */
  readonly maxAgeMs: number;
  readonly now: () => number;
}

class Partition implements TopicPartition {
  // Dropped records stay in the arrays until the dropped prefix dominates, so
  // trimming costs amortised O(1) per record instead of a shift per drop.
  #records: ConsumedRecord[] = [];
  #appendedAt: number[] = [];
  /** Index of the oldest retained record. */
  #first = 0;
  /** Offset of `#records[0]`. */
  #base = 0;

  readonly #retention: Retention;

  constructor(readonly topic: string, readonly partition: number, retention: Retention) {
    this.#retention = retention;
  }

  get logStart(): number {
    return this.#base + this.#first;
  }

  get highWatermark(): number {
    return this.#base + this.#records.length;
  }

  append(record: ProducerRecord, now: number): number {
    const offset = this.highWatermark;
    this.#records.push({
      topic: this.topic,
      partition: this.partition,
      offset,
      key: record.key,
      value: record.value,
      headers: record.headers ?? NO_HEADERS,
      timestamp: record.timestamp ?? now,
    });
    this.#appendedAt.push(now);
    return offset;
  }

  /** Up to `max` records from `offset`, or from the log start if that is later. */
  read(offset: number, max: number): ConsumedRecord[] {
    this.trim(this.#retention.now());
    const start = Math.max(offset, this.logStart) - this.#base;
    return this.#records.slice(start, start + max);
  }

  trim(now: number): void {
    const { maxRecords, maxAgeMs } = this.#retention;
    const cutoff = now - maxAgeMs;
    const length = this.#records.length;
    let first = Math.max(this.#first, length - maxRecords);
    while (first < length && this.#appendedAt[first]! < cutoff) first++;
    if (first === this.#first) return;
    if (first >= 1024 && first * 2 >= length) {
      this.#records = this.#records.slice(first);
      this.#appendedAt = this.#appendedAt.slice(first);
      this.#base += first;
      this.#first = 0;
    } else {
      this.#first = first;
    }
  }
}

class Topic {
  readonly partitions: readonly Partition[];
  #roundRobin = 0;

  constructor(readonly name: string, count: number, retention: Retention) {
    this.partitions = Array.from({ length: count }, (_, i) => new Partition(name, i, retention));
  }

  partitionFor(key: Uint8Array | null): Partition {
    const count = this.partitions.length;
    const index = key === null ? this.#roundRobin++ % count : partitionForKey(key, count);
    return this.partitions[index]!;
  }
}

class Group {
  readonly members = new Map<string, Member>();
  readonly committed = new Map<Partition, number>();
  /** Partitions with a batch in progress; a new owner waits until the old one releases them. */
  readonly busy = new Set<Partition>();

  constructor(readonly topics: ReadonlyMap<string, Topic>, readonly signal: Signal) {}

  /** Next offset the group reads; below the log start it continues at the log start. */
  position(partition: Partition): number {
    return Math.max(this.committed.get(partition) ?? 0, partition.logStart);
  }

  join(member: Member): void {
    this.members.set(member.memberId, member);
    this.#rebalance();
  }

  leave(member: Member): void {
    this.members.delete(member.memberId);
    member.assign([]);
    this.#rebalance();
  }

  /** Kafka's round-robin assignor: partitions in topic order dealt over the sorted members. */
  #rebalance(): void {
    const members = [...this.members.values()].sort((a, b) =>
      a.memberId < b.memberId ? -1 : a.memberId > b.memberId ? 1 : 0
    );
    const assignments = new Map<Member, Partition[]>(members.map((member) => [member, []]));
    const topics = [...new Set(members.flatMap((member) => member.topics))].sort();
    let next = 0;
    for (const name of topics) {
      for (const partition of this.topics.get(name)!.partitions) {
        // Some member subscribes to every listed topic, so this finds one.
        while (!members[next % members.length]!.topics.includes(name)) next++;
        const member = members[next % members.length]!;
        next++;
        assignments.get(member)!.push(partition);
        // Pinning "latest" now keeps records produced before the first commit
        // from being skipped when a later rebalance resolves it again.
        if (!member.fromBeginning && !this.committed.has(partition)) {
          this.committed.set(partition, partition.highWatermark);
        }
      }
    }
    for (const [member, partitions] of assignments) member.assign(partitions);
    this.signal.notify();
  }
}

class Member implements ConsumerGroupMember {
  readonly memberId = `member-${crypto.randomUUID()}`;
  readonly groupId: string;
  readonly topics: readonly string[];
  readonly fromBeginning: boolean;
  readonly #group: Group;
  readonly #handler: BatchHandler;
  readonly #maxBatchSize: number;
  readonly #onBatchError: ConsumerOptions["onBatchError"];
  readonly #retryBackoffMs: number;
  #assigned: Partition[] = [];
  #cursor = 0;
  /** Consecutive failures per partition, for the back-off and the attempt number. */
  readonly #failures = new Map<Partition, number>();
  /** Back-off timers of partitions waiting to be redelivered. */
  readonly #backoffs = new Map<Partition, ReturnType<typeof setTimeout>>();
  #stopping = false;
  #loop: Promise<void> = Promise.resolve();
  #stopped: Promise<void> | undefined;

  constructor(
    group: Group,
    options: ConsumerOptions,
    handler: BatchHandler,
    retryBackoffMs: number,
  ) {
    this.groupId = options.groupId;
    this.topics = [...options.topics];
    this.fromBeginning = options.fromBeginning ?? true;
    this.#group = group;
    this.#handler = handler;
    this.#maxBatchSize = options.maxBatchSize ?? DEFAULT_MAX_BATCH_SIZE;
    this.#onBatchError = options.onBatchError;
    this.#retryBackoffMs = retryBackoffMs;
  }

  start(): void {
    // Deferred so the first handler call comes after `consume` has returned.
    this.#loop = Promise.resolve().then(() => this.#run());
  }

  assignment(): TopicPartition[] {
    return this.#assigned.map(({ topic, partition }) => ({ topic, partition }));
  }

  assign(partitions: Partition[]): void {
    this.#assigned = partitions;
    this.#cursor = 0;
    for (const partition of this.#failures.keys()) {
      if (!partitions.includes(partition)) this.#failures.delete(partition);
    }
    for (const [partition, timer] of this.#backoffs) {
      if (!partitions.includes(partition)) {
        clearTimeout(timer);
        this.#backoffs.delete(partition);
      }
    }
  }

  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    this.#stopping = true;
    this.#group.signal.notify();
    await this.#loop;
    // Leaving clears the assignment, and with it any back-off timers.
    this.#group.leave(this);
  }

  async #run(): Promise<void> {
    while (!this.#stopping) {
      const partition = this.#nextPartition();
      if (partition === undefined) await this.#group.signal.wait();
      else await this.#deliver(partition);
    }
  }

  /** The next owned partition with records to deliver, round-robin for fairness. */
  #nextPartition(): Partition | undefined {
    const count = this.#assigned.length;
    for (let i = 0; i < count; i++) {
      const index = (this.#cursor + i) % count;
      const partition = this.#assigned[index]!;
      if (this.#group.busy.has(partition) || this.#backoffs.has(partition)) continue;
      if (this.#group.position(partition) < partition.highWatermark) {
        this.#cursor = index + 1;
        return partition;
      }
    }
    return undefined;
  }

  async #deliver(partition: Partition): Promise<void> {
    const group = this.#group;
    const records = partition.read(group.position(partition), this.#maxBatchSize);
    const last = records.at(-1);
    if (last === undefined) return;
    const batch: RecordBatch = {
      topic: partition.topic,
      partition: partition.partition,
      records,
      highWatermark: partition.highWatermark,
    };
    group.busy.add(partition);
    try {
      await this.#handler(batch);
      group.committed.set(partition, last.offset + 1);
      this.#failures.delete(partition);
    } catch (error) {
      this.#fail(partition, batch, error);
    } finally {
      group.busy.delete(partition);
      // The partition may have been handed to another member that waits for it.
      group.signal.notify();
    }
  }

  #fail(partition: Partition, batch: RecordBatch, error: unknown): void {
    const attempt = (this.#failures.get(partition) ?? 0) + 1;
    this.#failures.set(partition, attempt);
    try {
      this.#onBatchError?.(error, batch, attempt);
    } catch {
      // A failing error callback must not stop delivery to the other partitions.
    }
    if (this.#stopping) return;
    const delay = Math.min(this.#retryBackoffMs * 2 ** (attempt - 1), MAX_RETRY_BACKOFF_MS);
    const timer = setTimeout(() => {
      this.#backoffs.delete(partition);
      this.#group.signal.notify();
    }, delay);
    this.#backoffs.set(partition, timer);
  }
}

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
    });
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
