/** A transactional member of the embedded log: consume-process-produce, exactly once. */

import {
  DEFAULT_MAX_BATCH_SIZE,
  type ProducerRecord,
  type RecordBatch,
  type TopicPartition,
  type Transaction,
  type TransactionalConsumerOptions,
  type TransactionalHandler,
} from "./event_log.ts";
import { Partition } from "./memory_topics.ts";
import { Group, type GroupMember } from "./memory_group.ts";

/** Records produced in the open transaction, and the offsets it consumed. */
export class PendingTransaction implements Transaction {
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
export class TransactionalMember implements GroupMember {
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
