/** A transactional member on kafkajs: one kafkajs consumer and one transactional producer. */

import {
  type Consumer,
  type ConsumerCrashEvent,
  type ConsumerGroupJoinEvent,
  type EachBatchPayload,
  type Message,
  Partitioners,
  type Producer,
} from "kafkajs";
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
import {
  byPartition,
  type MemberContext,
  partitionKey,
  toBuffer,
  toRecord,
} from "./_kafka_shared.ts";

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
export class KafkaTransactionalMember implements ConsumerGroupMember {
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
