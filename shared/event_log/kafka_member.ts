/** A member of a consumer group on kafkajs: one kafkajs consumer. */

import {
  type Consumer,
  type ConsumerCrashEvent,
  type ConsumerGroupJoinEvent,
  type EachBatchPayload,
} from "kafkajs";
import {
  type BatchHandler,
  type ConsumerGroupMember,
  type ConsumerOptions,
  type RecordBatch,
  type TopicPartition,
} from "./event_log.ts";
import {
  byPartition,
  errorType,
  type MemberContext,
  partitionKey,
  type Settings,
  toRecord,
} from "./_kafka_shared.ts";

const MAX_RETRY_BACKOFF_MS = 5000;

/** Errors after which kafkajs must rejoin the group: a heartbeat reports them. */
const REJOIN_ERRORS = new Set([
  "REBALANCE_IN_PROGRESS",
  "ILLEGAL_GENERATION",
  "UNKNOWN_MEMBER_ID",
  "NOT_COORDINATOR_FOR_GROUP",
]);

/** Pause before a member tries again to pin where its partitions start. */
const PIN_RETRY_MS = 500;

interface MemberOptions extends ConsumerOptions {
  readonly maxBatchSize: number;
}

type HandlerOutcome = { readonly ok: true } | { readonly ok: false; readonly error: unknown };

export class KafkaMember implements ConsumerGroupMember {
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
