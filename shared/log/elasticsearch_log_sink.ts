/**
 * Ships every log line to Elasticsearch with the bulk API, as ECS documents
 * in daily `<prefix>-YYYY.MM.DD` indices made from an index template that the
 * sink puts first. Logging never waits for it: the sink only queues (bounded;
 * a full queue drops the new line and counts it), and a background loop sends
 * batches by count and by age. While Elasticsearch is down the loop retries
 * the same batch with exponential back-off and says so once, and once more
 * when shipping resumes.
 */
import { type Client, errors } from "@elastic/elasticsearch";
import type { LogRecord, Sink } from "@logtape/logtape";
import { sleep } from "../async/retry.ts";
import type { Counter, MetricsRegistry } from "../metrics/metrics.ts";
import { dailyIndex, ecsDocument, logIndexTemplate } from "./ecs_log_document.ts";
import { logEntryOf } from "./log_reader.ts";

/** What the sink says about itself; a LogTape `Logger` is one. */
export interface ShippingStatusLogger {
  info(message: string, properties: Record<string, unknown>): void;
  warn(message: string, properties: Record<string, unknown>): void;
  error(message: string, properties: Record<string, unknown>): void;
}

export interface ElasticsearchLogSinkOptions {
  /**
   * Reports outages, recoveries and rejected lines. It must not log to this
   * sink (a line about a failed shipment would queue behind it).
   */
  readonly logger: ShippingStatusLogger;
  /** Indices are `<prefix>-YYYY.MM.DD`. @default "logs-twitterapi" */
  readonly indexPrefix?: string;
  /** Most lines per bulk request; a full batch is sent at once. @default 500 */
  readonly batchSize?: number;
  /** Longest a line waits for its batch to fill. @default 1000 */
  readonly flushIntervalMs?: number;
  /** Lines waiting beyond the batch in flight; more are dropped and counted. @default 10_000 */
  readonly maxQueueSize?: number;
  /** First retry delay while Elasticsearch is down. @default 250 */
  readonly initialBackoffMs?: number;
  /** Longest retry delay. @default 10_000 */
  readonly maxBackoffMs?: number;
  /** Longest `close()` keeps trying to ship what is left. @default 5000 */
  readonly closeTimeoutMs?: number;
  /** What the outage line names as the target, e.g. the URL. @default "Elasticsearch" */
  readonly target?: string;
}

/** Why a line was not shipped. */
export type LogDropReason = "queue_full" | "rejected" | "shutdown";

interface QueuedLine {
  readonly record: LogRecord;
  readonly sequence: number;
  readonly queuedAt: number;
}

interface ShippingCounters {
  readonly shipped: Counter;
  readonly dropped: Counter;
}

/** A bulk failure that retrying cannot fix (the request itself is refused). */
class BatchRefusedError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = "BatchRefusedError";
  }
}

function errorText(error: unknown): string {
  if (error instanceof errors.ResponseError) {
    return `${error.statusCode ?? "no status"}: ${error.message}`.slice(0, 500);
  }
  return error instanceof Error ? error.message : String(error);
}

export class ElasticsearchLogSink implements AsyncDisposable {
  readonly #client: Client;
  readonly #logger: ShippingStatusLogger;
  readonly #prefix: string;
  readonly #batchSize: number;
  readonly #flushIntervalMs: number;
  readonly #maxQueueSize: number;
  readonly #initialBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #closeTimeoutMs: number;
  readonly #target: string;

  #queue: QueuedLine[] = [];
  #inFlight: QueuedLine[] = [];
  #sequence = 0;
  /** Every line up to this sequence is shipped or dropped. */
  #settled = 0;
  #flushTarget = 0;
  #templateReady = false;
  #wake: (() => void) | undefined;
  #settledWaiters: { sequence: number; resolve: () => void }[] = [];
  #running: Promise<void> | undefined;
  readonly #closing = new AbortController();
  #closeDeadline = Infinity;

  #shipped = 0;
  readonly #dropped: Record<LogDropReason, number> = { queue_full: 0, rejected: 0, shutdown: 0 };
  readonly #counters: ShippingCounters[] = [];
  /** When the current outage began; undefined while shipping works. */
  #downSince: number | undefined;
  #droppedAtOutage = 0;

  constructor(client: Client, options: ElasticsearchLogSinkOptions) {
    const {
      indexPrefix = "logs-twitterapi",
      batchSize = 500,
      flushIntervalMs = 1000,
      maxQueueSize = 10_000,
      initialBackoffMs = 250,
      maxBackoffMs = 10_000,
      closeTimeoutMs = 5000,
      target = "Elasticsearch",
    } = options;
    for (const [name, value] of Object.entries({ batchSize, maxQueueSize })) {
      if (!Number.isInteger(value) || value < 1) {
        throw new RangeError(
          `Cannot ship logs: '${name}' must be a positive integer, got ${value}`,
        );
      }
    }
    this.#client = client;
    this.#logger = options.logger;
    this.#prefix = indexPrefix;
    this.#batchSize = batchSize;
    this.#flushIntervalMs = flushIntervalMs;
    this.#maxQueueSize = maxQueueSize;
    this.#initialBackoffMs = initialBackoffMs;
    this.#maxBackoffMs = maxBackoffMs;
    this.#closeTimeoutMs = closeTimeoutMs;
    this.#target = target;
  }

  /** The LogTape sink: queues a line (records from `correlatingSink`) and returns. */
  readonly sink: Sink = (record: LogRecord) => {
    if (this.#closing.signal.aborted || this.#queue.length >= this.#maxQueueSize) {
      this.#drop(this.#closing.signal.aborted ? "shutdown" : "queue_full", 1);
      return;
    }
    const line = { record, sequence: ++this.#sequence, queuedAt: performance.now() };
    this.#queue.push(line);
    if (this.#queue.length === 1 || this.#queue.length >= this.#batchSize) this.#notify();
  };

  /** Puts the index template, then ships in the background until `close()`. */
  start(): void {
    this.#running ??= this.#run();
  }

  /** Lines shipped, dropped (by reason) and waiting, since the sink was made. */
  get stats(): {
    shipped: number;
    dropped: Readonly<Record<LogDropReason, number>>;
    queued: number;
    up: boolean;
  } {
    return {
      shipped: this.#shipped,
      dropped: { ...this.#dropped },
      queued: this.#queue.length + this.#inFlight.length,
      up: this.#downSince === undefined && this.#templateReady,
    };
  }

  /** Counts shipped, dropped and queued lines on `metrics` too (one registry per service). */
  registerMetrics(metrics: MetricsRegistry): void {
    const counters = {
      shipped: metrics.counter(
        "log_records_shipped_total",
        "Log lines this process shipped to Elasticsearch.",
      ),
      dropped: metrics.counter(
        "log_records_dropped_total",
        "Log lines this process could not ship: queue_full while Elasticsearch was down or " +
          "slow, rejected by Elasticsearch, or left at shutdown.",
      ),
    };
    counters.shipped.inc({}, this.#shipped);
    for (const [reason, count] of Object.entries(this.#dropped)) {
      counters.dropped.inc({ reason }, count);
    }
    this.#counters.push(counters);
    metrics.gauge(
      "log_records_queued",
      "Log lines waiting to be shipped to Elasticsearch.",
      () => [{ labels: {}, value: this.#queue.length + this.#inFlight.length }],
    );
    metrics.gauge(
      "log_shipping_up",
      "1 while log lines reach Elasticsearch, 0 during an outage.",
      () => [{ labels: {}, value: this.stats.up ? 1 : 0 }],
    );
  }

  /**
   * Resolves once every line logged before the call is shipped or dropped
   * (without waiting for its batch to fill or age).
   */
  flush(): Promise<void> {
    const sequence = this.#sequence;
    if (this.#settled >= sequence) return Promise.resolve();
    this.#flushTarget = Math.max(this.#flushTarget, sequence);
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#settledWaiters.push({ sequence, resolve });
    this.#notify();
    return promise;
  }

  /**
   * Ships what is queued, trying for at most `closeTimeoutMs`, then stops;
   * lines still unshipped are dropped and counted. Safe to call twice.
   */
  async close(): Promise<void> {
    if (!this.#closing.signal.aborted) {
      this.#closeDeadline = performance.now() + this.#closeTimeoutMs;
      this.#flushTarget = this.#sequence;
      this.#closing.abort();
      this.#notify();
    }
    await this.#running;
    const left = this.#queue.length + this.#inFlight.length;
    if (left > 0) {
      this.#settle([...this.#inFlight, ...this.#queue], "shutdown");
      this.#logger.warn("{count} log lines were not shipped to {target} before shutdown", {
        count: left,
        target: this.#target,
      });
    }
    this.#queue = [];
    this.#inFlight = [];
    this.#updateSettled();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #waitForNotice(ms: number): Promise<void> {
    const notice = new Promise<void>((resolve) => this.#wake = resolve);
    return ms === Infinity ? notice : Promise.race([notice, sleep(ms, this.#closing.signal)]);
  }

  /** Waits until a batch is due: full, old enough, flushed, or closing. */
  async #batchDue(): Promise<void> {
    while (!this.#closing.signal.aborted) {
      const oldest = this.#queue[0];
      if (oldest === undefined) {
        await this.#waitForNotice(Infinity);
        continue;
      }
      if (this.#queue.length >= this.#batchSize || oldest.sequence <= this.#flushTarget) return;
      const age = performance.now() - oldest.queuedAt;
      if (age >= this.#flushIntervalMs) return;
      await this.#waitForNotice(this.#flushIntervalMs - age);
    }
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (true) {
      if (this.#inFlight.length === 0) {
        await this.#batchDue();
        if (this.#queue.length === 0) {
          if (this.#closing.signal.aborted) return;
          continue;
        }
        this.#inFlight = this.#queue.splice(0, this.#batchSize);
      }
      try {
        if (!this.#templateReady) {
          await this.#client.indices.putIndexTemplate(logIndexTemplate(this.#prefix), {
            maxRetries: 0,
          });
          this.#templateReady = true;
        }
        const retry = await this.#ship(this.#inFlight);
        this.#inFlight = retry;
        this.#updateSettled();
        this.#resumed();
        if (retry.length === 0) {
          failures = 0;
          continue;
        }
        // Elasticsearch pushed back on some lines (429): back off, then resend them.
      } catch (error) {
        if (error instanceof BatchRefusedError) {
          this.#settle(this.#inFlight, "rejected");
          this.#inFlight = [];
          this.#updateSettled();
          this.#logger.warn(
            "Elasticsearch refused a batch of log lines ({status}); they are dropped: {reason}",
            { status: error.status, reason: error.message },
          );
          continue;
        }
        this.#wentDown(error);
      }
      if (this.#closing.signal.aborted && performance.now() >= this.#closeDeadline) return;
      const ceiling = Math.min(this.#maxBackoffMs, this.#initialBackoffMs * 2 ** failures++);
      const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
      if (this.#closing.signal.aborted) {
        await sleep(Math.min(delay, Math.max(0, this.#closeDeadline - performance.now())));
      } else {
        // Closing cuts the wait short: close() tries once more at once.
        await sleep(delay, this.#closing.signal);
      }
    }
  }

  /** Sends one bulk request; returns the lines to send again (pushed back with 429). */
  async #ship(batch: readonly QueuedLine[]): Promise<QueuedLine[]> {
    const operations: unknown[] = [];
    for (const line of batch) {
      const entry = logEntryOf(line.record);
      operations.push(
        { create: { _index: dailyIndex(this.#prefix, entry.timestamp) } },
        ecsDocument(entry, line.sequence),
      );
    }
    let response;
    try {
      response = await this.#client.bulk({ operations }, { maxRetries: 0 });
    } catch (error) {
      const status = error instanceof errors.ResponseError ? error.statusCode : undefined;
      if (status !== undefined && status >= 400 && status < 500 && status !== 429) {
        throw new BatchRefusedError(status, errorText(error));
      }
      throw error;
    }
    if (!response.errors) {
      this.#settle(batch, "shipped");
      return [];
    }
    const shipped: QueuedLine[] = [];
    const rejected: QueuedLine[] = [];
    const retry: QueuedLine[] = [];
    let reason = "";
    response.items.forEach((item, index) => {
      const result = item.create ?? Object.values(item)[0];
      const line = batch[index]!;
      if (result === undefined || result.error === undefined || result.error === null) {
        shipped.push(line);
      } else if (result.status === 429) {
        retry.push(line);
      } else {
        rejected.push(line);
        reason ||= `${result.error.type}: ${result.error.reason ?? ""}`;
      }
    });
    this.#settle(shipped, "shipped");
    if (rejected.length > 0) {
      this.#settle(rejected, "rejected");
      this.#logger.warn("Elasticsearch rejected {count} log lines; they are dropped: {reason}", {
        count: rejected.length,
        reason: reason.slice(0, 500),
      });
    }
    return retry;
  }

  #settle(lines: readonly QueuedLine[], outcome: "shipped" | LogDropReason): void {
    if (lines.length === 0) return;
    if (outcome === "shipped") {
      this.#shipped += lines.length;
      for (const counters of this.#counters) counters.shipped.inc({}, lines.length);
    } else {
      this.#drop(outcome, lines.length);
    }
  }

  /**
   * Lines settle in order, except those sent again after a 429, which stay
   * in flight at the front: everything before the first unsettled line is done.
   */
  #updateSettled(): void {
    const pending = this.#inFlight[0] ?? this.#queue[0];
    this.#settled = pending === undefined ? this.#sequence : pending.sequence - 1;
    this.#settledWaiters = this.#settledWaiters.filter((waiter) => {
      if (waiter.sequence > this.#settled) return true;
      waiter.resolve();
      return false;
    });
  }

  #drop(reason: LogDropReason, count: number): void {
    this.#dropped[reason] += count;
    for (const counters of this.#counters) counters.dropped.inc({ reason }, count);
  }

  #wentDown(error: unknown): void {
    if (this.#downSince !== undefined) return;
    this.#downSince = Date.now();
    this.#droppedAtOutage = this.#dropped.queue_full;
    this.#logger.error(
      "Cannot ship log lines to {target}; retrying with back-off, keeping at most {maxQueueSize} " +
        "lines meanwhile (more are dropped and counted in log_records_dropped_total): {reason}",
      { target: this.#target, maxQueueSize: this.#maxQueueSize, reason: errorText(error) },
    );
  }

  #resumed(): void {
    if (this.#downSince === undefined) return;
    const downMs = Date.now() - this.#downSince;
    this.#downSince = undefined;
    this.#logger.info(
      "Shipping log lines to {target} again after {downMs} ms; {dropped} lines were dropped",
      { target: this.#target, downMs, dropped: this.#dropped.queue_full - this.#droppedAtOutage },
    );
  }
}
