/**
 * Kafka Streams' exactly-once loop on @platformatic/kafka. Work is buffered
 * between commits; a commit is one Kafka transaction holding the produced
 * records and the consumed offsets (TxnOffsetCommit, fenced by the group's
 * generation). Partitions start from the group's committed offsets after
 * every (re)assignment, once `onAssigned` has restored them. Buffered work of
 * a member that rebalances, or whose handler or commit fails, is dropped: its
 * partitions are revoked and restored (`onRevoked`, `onAssigned`) and
 * consumed again from their committed offsets, which the feed still holds.
 */

import { ProduceAcks, Producer } from "@platformatic/kafka";
import {
  type ConsumerGroupMember,
  DEFAULT_MAX_BATCH_SIZE,
  type ProducerRecord,
  type TopicPartition,
  type Transaction,
  type TransactionalConsumerOptions,
  type TransactionalHandler,
} from "./event_log.ts";
import { partitionForKey } from "./murmur2.ts";
import { fromPartitionKey, type MemberContext, partitionKey } from "./_platformatic_shared.ts";
import { Feed } from "./_platformatic_feed.ts";
import { toMessage } from "./platformatic_producer.ts";

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

export interface TransactionalMemberOptions extends TransactionalConsumerOptions {
  readonly groupInstanceId?: string;
}

export class PlatformaticTransactionalMember implements ConsumerGroupMember {
  readonly groupId: string;
  readonly #context: MemberContext;
  readonly #options: TransactionalMemberOptions;
  readonly #handler: TransactionalHandler;
  readonly #feed: Feed;
  readonly #producer: Producer;
  readonly #maxBatchSize: number;
  #assignment: TopicPartition[] = [];
  /** Owned, restored partitions with the next offset to process (by `partitionKey`). */
  readonly #ready = new Map<string, number>();
  /** The group's committed offset of each ready partition: where a drop rewinds to. */
  readonly #committed = new Map<string, number>();
  #pending: PendingWork | undefined;
  #generation = 0;
  #firstJoin = Promise.withResolvers<void>();
  /** Serialises batches, commits and assignment changes. */
  #queue: Promise<void> = Promise.resolve();
  #scheduled = false;
  #commitTimer: ReturnType<typeof setInterval> | undefined;
  #stopping = false;
  #stopped: Promise<void> | undefined;

  constructor(
    context: MemberContext,
    options: TransactionalMemberOptions,
    handler: TransactionalHandler,
  ) {
    this.groupId = options.groupId;
    this.#context = context;
    this.#options = options;
    this.#handler = handler;
    this.#maxBatchSize = options.maxBatchSize ?? DEFAULT_MAX_BATCH_SIZE;
    this.#feed = new Feed(context, {
      groupId: options.groupId,
      topics: options.topics,
      ...(options.groupInstanceId === undefined
        ? {}
        : { groupInstanceId: options.groupInstanceId }),
      onJoin: (assigned) => this.#joined(assigned),
      onRecords: () => this.#schedule(),
    });
    const { compression } = context.settings;
    this.#producer = new Producer({
      ...context.client.base,
      transactionalId: options.transactionalId,
      idempotent: true,
      acks: ProduceAcks.ALL,
      ...(compression === undefined ? {} : { compression }),
      // The client passes its request timeout as the transaction timeout: the
      // broker aborts a transaction of a killed member after this long.
      timeout: TRANSACTION_TIMEOUT_MS,
    });
  }

  get memberId(): string {
    return this.#feed.memberId;
  }

  assignment(): TopicPartition[] {
    return this.#assignment.map(({ topic, partition }) => ({ topic, partition }));
  }

  async start(): Promise<void> {
    // The first transaction initialises the transactional id, which fences a
    // predecessor with the same id and aborts its open transaction at once;
    // nothing is sent in it (cancelling is local). A producer id of -1 asks
    // for a new epoch whatever the id's last producer was; the client's
    // default (0) is refused as fenced once the id has a history.
    const fence = await this.#producer.beginTransaction({ producerId: -1n, producerEpoch: -1 });
    await fence.cancel();
    await this.#feed.start();
    await this.#firstJoin.promise;
    this.#commitTimer = setInterval(
      () => void this.#enqueue(() => this.#commitIfDue()),
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
      // Still a member until the feed closes: the last commit is safe.
      await this.#enqueue(() => this.#commit());
      await this.#feed.close();
    } finally {
      this.#assignment = [];
      await this.#producer.close().catch(() => {});
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

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    void this.#enqueue(async () => {
      this.#scheduled = false;
      await this.#process();
    });
  }

  #joined(assigned: TopicPartition[]): void {
    const generation = ++this.#generation;
    this.#assignment = assigned;
    void this.#enqueue(() => {
      const owned = new Set(assigned.map(({ topic, partition }) => partitionKey(topic, partition)));
      // The work since the last commit cannot commit in this generation.
      this.#drop([...this.#ready.keys()].filter((key) => !owned.has(key)), "a rebalance", false);
      const gained = assigned.filter(({ topic, partition }) =>
        !this.#ready.has(partitionKey(topic, partition))
      );
      if (gained.length > 0) void this.#takeOver(gained, generation);
      else this.#firstJoin.resolve();
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
    const partitions = [...affected].map(fromPartitionKey);
    for (const key of affected) {
      this.#ready.delete(key);
      this.#committed.delete(key);
    }
    this.#options.onRevoked?.(partitions);
    if (!retake) return;
    const owned = new Set(
      this.#assignment.map(({ topic, partition }) => partitionKey(topic, partition)),
    );
    const owners = partitions.filter(({ topic, partition }) =>
      owned.has(partitionKey(topic, partition))
    );
    if (owners.length > 0) void this.#takeOver(owners, this.#generation);
  }

  /** Restores partitions, then starts them at the group's committed offsets. */
  async #takeOver(partitions: readonly TopicPartition[], generation: number): Promise<void> {
    const current = () => generation === this.#generation && !this.#stopping;
    try {
      await this.#options.onAssigned?.(partitions);
      // Read after the restore: a predecessor's last transaction has completed by then.
      const committed = await this.#context.topics.committed(this.groupId, partitions);
      const bounds = new Map<string, { low: number }[]>();
      for (const topic of new Set(partitions.map((entry) => entry.topic))) {
        bounds.set(topic, await this.#context.topics.bounds(topic));
      }
      if (!current()) return;
      await this.#enqueue(() => {
        if (!current()) return Promise.resolve();
        for (const { topic, partition } of partitions) {
          const key = partitionKey(topic, partition);
          const low = bounds.get(topic)?.[partition]?.low ?? 0;
          const offset = Math.max(committed.get(key) ?? -1, low);
          this.#feed.setFloor(key, offset);
          this.#ready.set(key, offset);
          this.#committed.set(key, offset);
        }
        this.#firstJoin.resolve();
        return this.#process();
      });
    } catch (error) {
      if (!current()) return;
      this.#options.onError?.(error, `cannot take over partitions of group '${this.groupId}'`);
      setTimeout(() => void this.#takeOver(partitions, generation), RESTORE_RETRY_MS);
    }
  }

  /** Hands every ready partition's buffered records to the handler, in order. */
  async #process(): Promise<void> {
    for (const [key, position] of [...this.#ready]) {
      if (this.#stopping) return;
      if (this.#ready.get(key) !== position) continue;
      const records = this.#feed.take(key, position, this.#maxBatchSize);
      if (records.length === 0) continue;
      const { topic, partition } = records[0]!;
      const pending = this.#pending ??= new PendingWork(Date.now());
      const highWatermark = records.at(-1)!.offset + 1;
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
      // More may be buffered than one batch holds.
      this.#schedule();
    }
    await this.#commitIfDue();
  }

  async #commitIfDue(): Promise<void> {
    const pending = this.#pending;
    if (pending === undefined || this.#stopping) return;
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
    const consumer = this.#feed.consumer;
    const transaction = await this.#producer.beginTransaction();
    try {
      for (const { topic, records } of pending.sends) {
        if (records.length === 0) continue;
        const count = await this.#context.partitionCount(topic);
        await transaction.send({
          messages: records.map((record) =>
            // Transactional output is keyed; an unkeyed record goes to partition 0.
            toMessage(topic, record.key === null ? 0 : partitionForKey(record.key, count), record)
          ),
        });
      }
      await transaction.addConsumer(consumer);
      const metadata = {
        consumer: {
          groupId: this.groupId,
          memberId: consumer.memberId,
          generationId: consumer.generationId,
          coordinatorId: consumer.coordinatorId,
        },
      };
      for (const { topic, partition, offset } of pending.consumed.values()) {
        // The client commits the offset after the given message's.
        await transaction.addOffset(
          { topic, partition, offset: BigInt(offset - 1), metadata } as never,
        );
      }
      await transaction.commit();
      this.#pending = undefined;
      for (const [key, { offset }] of pending.consumed) {
        this.#committed.set(key, offset);
        this.#feed.release(key, offset);
      }
      this.#options.onCommitted?.(pending.records);
    } catch (error) {
      await transaction.abort().catch(() => {});
      this.#options.onError?.(error, `cannot commit a transaction of group '${this.groupId}'`);
      this.#drop([], "an aborted commit");
    }
  }
}
