/**
 * A member of a consumer group on @platformatic/kafka. Batches of different
 * partitions are handled concurrently (up to `partitionConcurrency`), each
 * partition's in order; a batch's offsets are committed after its handler
 * resolves, and a failed batch is delivered again from the buffer after a
 * doubling back-off while the other partitions keep flowing.
 *
 * Arriving records start batches on the next turn of the event loop, not one
 * by one: the client hands over a fetch response record by record, and a
 * batch cut at its first record would leave the rest for a second one (a
 * bulk write of one tweet, then one of the others, at low rates).
 */

import type {
  BatchHandler,
  ConsumerGroupMember,
  ConsumerOptions,
  RecordBatch,
  TopicPartition,
} from "./event_log.ts";
import { type MemberContext, partitionKey } from "./_platformatic_shared.ts";
import { Feed } from "./_platformatic_feed.ts";

const MAX_RETRY_BACKOFF_MS = 5000;
/** Pause before a member tries again to pin where its partitions start. */
const PIN_RETRY_MS = 500;

export interface MemberOptions extends ConsumerOptions {
  readonly maxBatchSize: number;
  readonly groupInstanceId?: string;
}

export class PlatformaticMember implements ConsumerGroupMember {
  readonly groupId: string;
  readonly #context: MemberContext;
  readonly #feed: Feed;
  readonly #options: MemberOptions;
  readonly #handler: BatchHandler;
  readonly #fromBeginning: boolean;
  readonly #concurrency: number;
  #assignment: TopicPartition[] = [];
  /** Owned partitions ready to deliver, with the next offset to hand to the handler. */
  readonly #positions = new Map<string, number>();
  readonly #busy = new Set<string>();
  readonly #failures = new Map<string, number>();
  readonly #backoffs = new Map<string, ReturnType<typeof setTimeout>>();
  readonly #inFlight = new Set<Promise<void>>();
  #generation = 0;
  #firstJoin = Promise.withResolvers<void>();
  #pumping = false;
  #pumpTimer: ReturnType<typeof setTimeout> | undefined;
  #stopping = false;
  #stopped: Promise<void> | undefined;

  constructor(context: MemberContext, options: MemberOptions, handler: BatchHandler) {
    this.groupId = options.groupId;
    this.#context = context;
    this.#options = options;
    this.#handler = handler;
    this.#fromBeginning = options.fromBeginning ?? true;
    this.#concurrency = options.partitionConcurrency ?? 1;
    this.#feed = new Feed(context, {
      groupId: options.groupId,
      topics: options.topics,
      ...(options.groupInstanceId === undefined
        ? {}
        : { groupInstanceId: options.groupInstanceId }),
      onJoin: (assigned) => this.#joined(assigned),
      onRecords: () => this.#schedulePump(),
    });
  }

  get memberId(): string {
    return this.#feed.memberId;
  }

  assignment(): TopicPartition[] {
    return this.#assignment.map(({ topic, partition }) => ({ topic, partition }));
  }

  async start(): Promise<void> {
    await this.#feed.start();
    await this.#firstJoin.promise;
  }

  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#pumpTimer);
    for (const timer of this.#backoffs.values()) clearTimeout(timer);
    this.#backoffs.clear();
    // The batches in progress finish and commit while this is still a member.
    await Promise.allSettled([...this.#inFlight]);
    try {
      await this.#feed.close();
    } finally {
      this.#assignment = [];
      this.#context.forget(this);
    }
  }

  #joined(assigned: TopicPartition[]): void {
    const generation = ++this.#generation;
    const owned = new Set(assigned.map(({ topic, partition }) => partitionKey(topic, partition)));
    for (const key of [...this.#positions.keys()]) {
      if (!owned.has(key)) this.#positions.delete(key);
    }
    for (const [key, timer] of this.#backoffs) {
      if (owned.has(key)) continue;
      clearTimeout(timer);
      this.#backoffs.delete(key);
      this.#failures.delete(key);
    }
    const gained = assigned.filter(({ topic, partition }) =>
      !this.#positions.has(partitionKey(topic, partition))
    );
    this.#assignment = assigned.filter(({ topic, partition }) =>
      this.#positions.has(partitionKey(topic, partition))
    );
    void this.#pin(gained, generation);
  }

  /**
   * Finds where gained partitions start: the group's committed offset, or,
   * without one, the log start (`fromBeginning`) or the current end, which
   * is committed at once so that a later owner starts there too.
   */
  async #pin(gained: readonly TopicPartition[], generation: number): Promise<void> {
    const current = () => generation === this.#generation && !this.#stopping;
    try {
      if (gained.length > 0) {
        const committed = await this.#context.topics.committed(this.groupId, gained);
        const missing = gained.filter(({ topic, partition }) =>
          (committed.get(partitionKey(topic, partition)) ?? -1) < 0
        );
        const starts: (TopicPartition & { offset: number })[] = [];
        for (const topic of new Set(missing.map((entry) => entry.topic))) {
          const bounds = await this.#context.topics.bounds(topic);
          for (const { partition } of missing.filter((entry) => entry.topic === topic)) {
            const { low, high } = bounds[partition] ?? { low: 0, high: 0 };
            starts.push({ topic, partition, offset: this.#fromBeginning ? low : high });
          }
        }
        if (!current()) return;
        if (!this.#fromBeginning) await this.#feed.commit(starts);
        if (!current()) return;
        for (const { topic, partition } of gained) {
          const key = partitionKey(topic, partition);
          const start = starts.find((entry) =>
            entry.topic === topic && entry.partition === partition
          )
            ?.offset ?? committed.get(key)!;
          this.#feed.setFloor(key, start);
          this.#positions.set(key, start);
          this.#assignment.push({ topic, partition });
        }
      }
      this.#firstJoin.resolve();
      this.#pump();
    } catch (error) {
      if (!current()) return;
      this.#context.settings.onError(
        error,
        `cannot pin the start offsets of group '${this.groupId}'`,
      );
      setTimeout(() => void this.#pin(gained, generation), PIN_RETRY_MS);
    }
  }

  /** Pumps once the records arriving now are all buffered. */
  #schedulePump(): void {
    this.#pumpTimer ??= setTimeout(() => {
      this.#pumpTimer = undefined;
      this.#pump();
    }, 0);
  }

  /** Starts a batch on every ready partition, up to the concurrency. */
  #pump(): void {
    if (this.#pumping || this.#stopping) return;
    this.#pumping = true;
    try {
      for (const [key, position] of this.#positions) {
        if (this.#inFlight.size >= this.#concurrency) return;
        if (this.#busy.has(key) || this.#backoffs.has(key)) continue;
        const records = this.#feed.take(key, position, this.#options.maxBatchSize);
        if (records.length === 0) continue;
        const { topic, partition } = records[0]!;
        const batch: RecordBatch = {
          topic,
          partition,
          records,
          highWatermark: records.at(-1)!.offset + 1,
        };
        this.#busy.add(key);
        const run = this.#run(key, batch).finally(() => {
          this.#busy.delete(key);
          this.#inFlight.delete(run);
          this.#pump();
        });
        this.#inFlight.add(run);
      }
    } finally {
      this.#pumping = false;
    }
  }

  async #run(key: string, batch: RecordBatch): Promise<void> {
    const generation = this.#generation;
    try {
      await this.#handler(batch);
    } catch (error) {
      this.#fail(key, batch, error);
      return;
    }
    const next = batch.records.at(-1)!.offset + 1;
    try {
      await this.#feed.commit([{ topic: batch.topic, partition: batch.partition, offset: next }]);
    } catch (error) {
      // A rebalance took the partition: its next owner gets the batch again.
      this.#context.settings.onError(error, `cannot commit offsets of group '${this.groupId}'`);
      return;
    }
    this.#failures.delete(key);
    if (generation !== this.#generation && !this.#positions.has(key)) return;
    if (this.#positions.has(key)) this.#positions.set(key, next);
    this.#feed.release(key, next);
  }

  #fail(key: string, batch: RecordBatch, error: unknown): void {
    const attempt = (this.#failures.get(key) ?? 0) + 1;
    this.#failures.set(key, attempt);
    try {
      this.#options.onBatchError?.(error, batch, attempt);
    } catch {
      // A failing error callback must not stop delivery to the other partitions.
    }
    if (this.#stopping) return;
    const delay = Math.min(
      this.#context.settings.retryBackoffMs * 2 ** (attempt - 1),
      MAX_RETRY_BACKOFF_MS,
    );
    this.#backoffs.set(
      key,
      setTimeout(() => {
        this.#backoffs.delete(key);
        this.#pump();
      }, delay),
    );
  }
}
