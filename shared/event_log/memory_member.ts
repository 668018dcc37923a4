/** A member of a consumer group of the embedded log. */

import {
  type BatchHandler,
  type ConsumerGroupMember,
  type ConsumerOptions,
  DEFAULT_MAX_BATCH_SIZE,
  type RecordBatch,
  type TopicPartition,
} from "./event_log.ts";
import { Partition } from "./memory_topics.ts";
import { Group } from "./memory_group.ts";

const MAX_RETRY_BACKOFF_MS = 5000;

export class Member implements ConsumerGroupMember {
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
