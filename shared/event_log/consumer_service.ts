/**
 * What every consuming service (indexer, analytics, wordcount) does the same
 * way, written once: trace its event log as the service, create its topics,
 * join its consumer group (retrying both while the log is down), report the
 * group's lag, count and log failed batches, and turn a batch into "decode,
 * dead-letter what cannot be decoded, handle the rest".
 *
 * Its metrics: the group's lag on `event_log_consumer_lag` (one series per
 * group, topic and partition), and, named after the service,
 * `<prefix>_batch_failures_total` (plain members) and `<prefix>_events_total`
 * by outcome (dead-lettering handlers). Dead-lettering handlers also time
 * their pipeline stage, cheaply (histograms, a few observations per event):
 * `<prefix>_event_age_seconds` by stage, each event's age since its record's
 * timestamp (the producer's create time) when its batch is `received` and
 * when the handler's side effect is durable (`handled`);
 * `<prefix>_batch_step_seconds` by step (`decode`, `handle`); and
 * `<prefix>_batch_events`, the records per batch.
 */
import { retryUntilDone } from "../async/retry.ts";
import { type Counter, type Histogram, STAGE_BUCKETS } from "../metrics/metrics.ts";
import type { ServiceContext } from "../service/service.ts";
import { deadLetter } from "./dead_letter.ts";
import type {
  BatchHandler,
  ConsumedRecord,
  ConsumerGroupMember,
  ConsumerOptions,
  EventLog,
  ProducerRecord,
  RecordBatch,
  TopicSpec,
  TransactionalConsumerOptions,
  TransactionalHandler,
} from "./event_log.ts";
import { registerLagGauge } from "./lag_gauge.ts";
import { recordFailed, TracedEventLog } from "./traced_event_log.ts";

export interface ConsumerServiceOptions {
  readonly context: ServiceContext;
  /** The process's event log; the kit traces it with the service's tracer. */
  readonly eventLog: EventLog;
  readonly groupId: string;
  /** Created, or checked, at start before joining, in this order. */
  readonly topics: readonly TopicSpec[];
  /** Names the kit's counters: `indexer` gives `indexer_events_total`. */
  readonly metricPrefix: string;
  /** Topics whose lag in the group `event_log_consumer_lag` reports. */
  readonly lagTopics: readonly string[];
}

export interface BatchMemberOptions extends Omit<ConsumerOptions, "groupId" | "onBatchError"> {
  /** What a batch does, for the log of a failed one: "index", "store". */
  readonly action: string;
}

/** A decodable record of a batch and what it decoded to. */
export interface Decoded<T> {
  readonly record: ConsumedRecord;
  readonly value: T;
}

export interface DeadLetteringOptions<T> {
  readonly deadLetterTopic: string;
  /**
   * Turns a record into what the service handles; throws for a record that
   * can never be handled, which then goes to the dead-letter topic unchanged.
   */
  readonly decode: (record: ConsumedRecord) => T;
  /**
   * Handles the batch's decoded records (possibly none); resolves once the
   * side effect is durable, with the number of events it counts as handled
   * (equal events of one batch may count once).
   */
  readonly handle: (decoded: readonly Decoded<T>[], batch: RecordBatch) => Promise<number>;
  /** Outcome label of the handled events on `<prefix>_events_total`: "indexed", "stored". */
  readonly outcome: string;
}

/** Records per batch: 1 to 10,000, a few per decade. */
const BATCH_SIZE_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500, 1000, 2000, 5000, 10_000];

interface Stages {
  readonly ages: Histogram;
  readonly steps: Histogram;
  readonly sizes: Histogram;
}

function observeAges(ages: Histogram, stage: "received" | "handled", batch: RecordBatch): void {
  const now = Date.now();
  const series = ages.labelled({ stage });
  for (const record of batch.records) series.observe((now - record.timestamp) / 1000);
}

export class ConsumerService {
  /** The service's event log, traced: records sent through it continue the handled ones' traces. */
  readonly eventLog: EventLog;
  readonly groupId: string;
  readonly #options: ConsumerServiceOptions;
  readonly #stopping = new AbortController();
  #member: ConsumerGroupMember | undefined;
  #failures: Counter | undefined;
  #events: Counter | undefined;
  #stages: Stages | undefined;

  constructor(options: ConsumerServiceOptions) {
    this.#options = options;
    this.groupId = options.groupId;
    this.eventLog = new TracedEventLog(options.eventLog, options.context.tracer);
    for (const topic of options.lagTopics) {
      registerLagGauge(options.context.metrics, {
        eventLog: options.eventLog,
        groupId: options.groupId,
        topic,
      });
    }
  }

  /** The group member once joined; undefined before and while joining. */
  get member(): ConsumerGroupMember | undefined {
    return this.#member;
  }

  /**
   * Retries `attempt` until it succeeds or the service stops, logging every
   * failure: for the other dependencies a service waits for at start.
   */
  retry<T>(action: string, attempt: () => Promise<T>): Promise<T> {
    return retryUntilDone(attempt, {
      action,
      logger: this.#options.context.logger,
      signal: this.#stopping.signal,
    });
  }

  /**
   * Creates the topics, then joins the group as a plain member. A failed
   * batch is counted on `<prefix>_batch_failures_total` and logged before it
   * is redelivered.
   */
  async consume(options: BatchMemberOptions, handler: BatchHandler): Promise<ConsumerGroupMember> {
    const { logger, metrics } = this.#options.context;
    const { action, ...consumerOptions } = options;
    this.#failures ??= metrics.counter(
      `${this.#options.metricPrefix}_batch_failures_total`,
      "Batches whose handling failed and will be redelivered.",
    );
    const failures = this.#failures;
    return await this.#join(() =>
      this.eventLog.consume({
        ...consumerOptions,
        groupId: this.groupId,
        onBatchError(error, batch, attempt) {
          failures.inc();
          logger.error(
            "Cannot {action} {count} events of {topic}/{partition} (attempt {attempt}); retrying",
            {
              action,
              count: batch.records.length,
              topic: batch.topic,
              partition: batch.partition,
              attempt,
              error,
            },
          );
        },
      }, handler)
    );
  }

  /** Creates the topics, then joins the group as a transactional member. */
  async consumeTransactional(
    options: Omit<TransactionalConsumerOptions, "groupId">,
    handler: TransactionalHandler,
  ): Promise<ConsumerGroupMember> {
    return await this.#join(() =>
      this.eventLog.consumeTransactional({ ...options, groupId: this.groupId }, handler)
    );
  }

  /**
   * A batch handler that decodes every record, sends the undecodable ones to
   * the dead-letter topic (each marked failed in its trace), then hands the
   * rest to `handle`; it resolves only once both are durable, so the batch is
   * committed only then. Events are counted on `<prefix>_events_total`.
   */
  deadLettering<T>(options: DeadLetteringOptions<T>): BatchHandler {
    const { logger, metrics } = this.#options.context;
    const { deadLetterTopic, decode, handle, outcome } = options;
    this.#events ??= metrics.counter(
      `${this.#options.metricPrefix}_events_total`,
      "Events handled, by outcome.",
    );
    const events = this.#events;
    const stages = this.#stages ??= this.#registerStages();
    const eventLog = this.eventLog;
    return async function handleBatch(batch: RecordBatch): Promise<void> {
      observeAges(stages.ages, "received", batch);
      stages.sizes.observe({}, batch.records.length);
      const decodeStarted = performance.now();
      const decoded: Decoded<T>[] = [];
      const deadLetters: ProducerRecord[] = [];
      for (const record of batch.records) {
        try {
          decoded.push({ record, value: decode(record) });
        } catch (error) {
          recordFailed(record, error);
          deadLetters.push(deadLetter(record, error));
        }
      }
      stages.steps.observe({ step: "decode" }, (performance.now() - decodeStarted) / 1000);
      if (deadLetters.length > 0) await eventLog.send(deadLetterTopic, deadLetters);
      const handleStarted = performance.now();
      const handled = await handle(decoded, batch);
      stages.steps.observe({ step: "handle" }, (performance.now() - handleStarted) / 1000);
      observeAges(stages.ages, "handled", batch);
      events.inc({ outcome }, handled);
      if (deadLetters.length > 0) {
        events.inc({ outcome: "dead-lettered" }, deadLetters.length);
        logger.warn("Sent {count} events of {topic} that cannot be handled to {deadLetterTopic}", {
          count: deadLetters.length,
          topic: batch.topic,
          deadLetterTopic,
        });
      }
    };
  }

  /** Leaves the group: the batch in progress finishes and is committed. */
  async stop(): Promise<void> {
    this.#stopping.abort();
    await this.#member?.stop();
  }

  #registerStages(): Stages {
    const { metrics } = this.#options.context;
    const prefix = this.#options.metricPrefix;
    return {
      ages: metrics.histogram(
        `${prefix}_event_age_seconds`,
        "Age of events since their record's timestamp, when their batch is received and when " +
          "it is handled (durably), by stage.",
        STAGE_BUCKETS,
      ),
      steps: metrics.histogram(
        `${prefix}_batch_step_seconds`,
        "Time a batch spends in each step of its handling: decode, handle.",
        STAGE_BUCKETS,
      ),
      sizes: metrics.histogram(
        `${prefix}_batch_events`,
        "Records per batch.",
        BATCH_SIZE_BUCKETS,
      ),
    };
  }

  async #join(join: () => Promise<ConsumerGroupMember>): Promise<ConsumerGroupMember> {
    for (const spec of this.#options.topics) {
      await this.retry(`create topic ${spec.name}`, () => this.eventLog.ensureTopic(spec));
    }
    this.#member = await this.retry(`join consumer group ${this.groupId}`, join);
    return this.#member;
  }
}
