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
  EventLogClosedError,
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

/** What a group needs of its members, plain or transactional. */
interface GroupMember {
  readonly memberId: string;
  readonly topics: readonly string[];
  readonly fromBeginning: boolean;
  assign(partitions: Partition[]): void;
  stop(): Promise<void>;
}

class Group {
  readonly members = new Map<string, GroupMember>();
  readonly committed = new Map<Partition, number>();
  /** Partitions with a batch in progress; a new owner waits until the old one releases them. */
  readonly busy = new Set<Partition>();

  constructor(readonly topics: ReadonlyMap<string, Topic>, readonly signal: Signal) {}

  /** Next offset the group reads; below the log start it continues at the log start. */
  position(partition: Partition): number {
    return Math.max(this.committed.get(partition) ?? 0, partition.logStart);
  }

  join(member: GroupMember): void {
    this.members.set(member.memberId, member);
    this.#rebalance();
  }

  leave(member: GroupMember): void {
    this.members.delete(member.memberId);
    member.assign([]);
    this.#rebalance();
  }

  /** Kafka's round-robin assignor: partitions in topic order dealt over the sorted members. */
  #rebalance(): void {
    const members = [...this.members.values()].sort((a, b) =>
      a.memberId < b.memberId ? -1 : a.memberId > b.memberId ? 1 : 0
    );
    const assignments = new Map<GroupMember, Partition[]>(members.map((member) => [member, []]));
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

/** Records produced in the open transaction, and the offsets it consumed. */
class PendingTransaction implements Transaction {
  readonly sends: { topic: string; records: readonly ProducerRecord[] }[] = [];
  /** Next offset per partition consumed in this transaction. */
  readonly consumed = new Map<Partition, number>();
  records = 0;

  constructor(readonly openedAt: number) {}

  send(topic: string, records: readonly ProducerRecord[]): void {
    this.sends.push({ topic, records });
  }
}

/**
 * A transactional group member. In process a commit is one synchronous step
 * (append the produced records, advance the group's offsets), so readers never
 * see a partial transaction. Partitions with uncommitted work stay busy, so a
 * new owner restores their state only after the old owner committed.
 */
class TransactionalMember implements GroupMember {
  readonly memberId = `member-${crypto.randomUUID()}`;
  readonly groupId: string;
  readonly topics: readonly string[];
  readonly fromBeginning = true;
  readonly #group: Group;
  readonly #options: TransactionalConsumerOptions;
  readonly #handler: TransactionalHandler;
  readonly #write: (topic: string, records: readonly ProducerRecord[]) => void;
  readonly #maxBatchSize: number;
  readonly #retryBackoffMs: number;
  #assigned: Partition[] = [];
  /** Owned partitions whose state is restored, with the next offset to deliver. */
  readonly #ready = new Map<Partition, number>();
  #pending: PendingTransaction | undefined;
  #cursor = 0;
  #stopping = false;
  #loop: Promise<void> = Promise.resolve();
  #stopped: Promise<void> | undefined;

  constructor(
    group: Group,
    options: TransactionalConsumerOptions,
    handler: TransactionalHandler,
    write: (topic: string, records: readonly ProducerRecord[]) => void,
    retryBackoffMs: number,
  ) {
    this.groupId = options.groupId;
    this.topics = [...options.topics];
    this.#group = group;
    this.#options = options;
    this.#handler = handler;
    this.#write = write;
    this.#maxBatchSize = options.maxBatchSize ?? DEFAULT_MAX_BATCH_SIZE;
    this.#retryBackoffMs = retryBackoffMs;
  }

  start(): void {
    this.#loop = Promise.resolve().then(() => this.#run());
  }

  assignment(): TopicPartition[] {
    return this.#assigned.map(({ topic, partition }) => ({ topic, partition }));
  }

  assign(partitions: Partition[]): void {
    this.#assigned = partitions;
    this.#cursor = 0;
  }

  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    this.#stopping = true;
    this.#group.signal.notify();
    await this.#loop;
    this.#commit();
    this.#group.leave(this);
  }

  async #run(): Promise<void> {
    while (!this.#stopping) {
      if (!(await this.#follow())) continue;
      const partition = this.#nextPartition();
      if (partition !== undefined) {
        await this.#deliver(partition);
        if (this.#due()) this.#commit();
        continue;
      }
      if (this.#due()) {
        this.#commit();
        continue;
      }
      await this.#idle();
    }
  }

  /** Waits for records, a rebalance or the next commit, whichever comes first. */
  async #idle(): Promise<void> {
    const pending = this.#pending;
    if (pending === undefined) return await this.#group.signal.wait();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const remaining = pending.openedAt + this.#options.commitIntervalMs - Date.now();
    await Promise.race([
      this.#group.signal.wait(),
      new Promise<void>((resolve) => timer = setTimeout(resolve, Math.max(remaining, 0))),
    ]);
    clearTimeout(timer);
  }

  #due(): boolean {
    const pending = this.#pending;
    return pending !== undefined &&
      Date.now() - pending.openedAt >= this.#options.commitIntervalMs;
  }

  /**
   * Applies the current assignment: commits before giving partitions up,
   * restores newly owned ones. False when it had to wait (loop again).
   */
  async #follow(): Promise<boolean> {
    const assigned = new Set(this.#assigned);
    const lost = [...this.#ready.keys()].filter((partition) => !assigned.has(partition));
    if (lost.length > 0) {
      this.#commit();
      for (const partition of lost) this.#ready.delete(partition);
      this.#options.onRevoked?.(lost.map(({ topic, partition }) => ({ topic, partition })));
    }
    const gained = this.#assigned.filter((partition) => !this.#ready.has(partition));
    if (gained.length === 0) return true;
    // The previous owner commits before it releases a partition.
    if (gained.some((partition) => this.#group.busy.has(partition))) {
      await this.#group.signal.wait();
      return false;
    }
    try {
      await this.#options.onAssigned?.(
        gained.map(({ topic, partition }) => ({ topic, partition })),
      );
    } catch (error) {
      this.#options.onError?.(error, `cannot take over partitions of group '${this.groupId}'`);
      await new Promise((resolve) => setTimeout(resolve, this.#retryBackoffMs));
      return false;
    }
    // The assignment may have changed while restoring; the next call sorts it out.
    for (const partition of gained) this.#ready.set(partition, this.#group.position(partition));
    return false;
  }

  #nextPartition(): Partition | undefined {
    const count = this.#assigned.length;
    for (let i = 0; i < count; i++) {
      const index = (this.#cursor + i) % count;
      const partition = this.#assigned[index]!;
      const position = this.#ready.get(partition);
      if (position !== undefined && position < partition.highWatermark) {
        this.#cursor = index + 1;
        return partition;
      }
    }
    return undefined;
  }

  async #deliver(partition: Partition): Promise<void> {
    const position = this.#ready.get(partition)!;
    const records = partition.read(position, this.#maxBatchSize);
    const last = records.at(-1);
    if (last === undefined) return;
    const pending = this.#pending ??= new PendingTransaction(Date.now());
    this.#group.busy.add(partition);
    const batch: RecordBatch = {
      topic: partition.topic,
      partition: partition.partition,
      records,
      highWatermark: partition.highWatermark,
    };
    try {
      await this.#handler(batch, pending);
      pending.consumed.set(partition, last.offset + 1);
      pending.records += records.length;
      this.#ready.set(partition, last.offset + 1);
    } catch (error) {
      this.#options.onError?.(
        error,
        `handler failed on ${partition.topic}/${partition.partition}; transaction aborted`,
      );
      this.#abort(partition);
      // A failing record is not retried in a tight loop.
      await new Promise((resolve) => setTimeout(resolve, this.#retryBackoffMs));
    }
  }

  /** Drops the open transaction; its partitions restart from their committed state. */
  #abort(failed: Partition): void {
    const affected = new Set([failed, ...(this.#pending?.consumed.keys() ?? [])]);
    this.#pending = undefined;
    for (const partition of affected) {
      this.#group.busy.delete(partition);
      this.#ready.delete(partition);
    }
    this.#options.onRevoked?.([...affected].map(({ topic, partition }) => ({ topic, partition })));
    this.#group.signal.notify();
  }

  #commit(): void {
    const pending = this.#pending;
    if (pending === undefined) return;
    this.#options.beforeCommit?.(pending);
    for (const { topic, records } of pending.sends) this.#write(topic, records);
    for (const [partition, offset] of pending.consumed) {
      this.#group.committed.set(partition, offset);
      this.#group.busy.delete(partition);
    }
    this.#pending = undefined;
    this.#options.onCommitted?.(pending.records);
    this.#group.signal.notify();
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
