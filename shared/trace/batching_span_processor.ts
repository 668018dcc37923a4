/**
 * A batching span processor with a bounded queue, which never makes a
 * request wait: `onEnd` only appends the finished span to the queue (or
 * counts it dropped when the queue is full), and batches leave on a timer,
 * one export at a time, outside any request's call stack. An export that
 * fails or does not answer in time loses its batch, counted; the next batch
 * is tried as usual, so export resumes by itself once the collector is back.
 *
 * The SDK's `BatchSpanProcessor` does the same but keeps its drop count
 * private and may start an export inside `span.end()`; this one reports
 * every outcome for `/metrics`.
 */
import { context, TraceFlags } from "@opentelemetry/api";
import { ExportResultCode, suppressTracing } from "@opentelemetry/core";
import type { ReadableSpan, Span, SpanExporter, SpanProcessor } from "@opentelemetry/sdk-trace";

/** What became of spans: sent, lost in a failed export, or refused by a full queue. */
export type SpanOutcome = "exported" | "failed" | "dropped";

export interface BatchingSpanProcessorOptions {
  readonly exporter: SpanExporter;
  /**
   * Spans waiting for export at most; a span finished while it is full is
   * dropped (counted).
   * @default 2048
   */
  readonly maxQueueSize?: number;
  /**
   * Spans per export at most; a full batch leaves at once.
   * @default 512
   */
  readonly maxBatchSize?: number;
  /**
   * Longest a finished span waits for a batch to leave, in milliseconds.
   * @default 1000
   */
  readonly scheduledDelayMs?: number;
  /**
   * An export not answered within this many milliseconds counts as failed.
   * @default 10_000
   */
  readonly exportTimeoutMs?: number;
  /** Called with every outcome and how many spans it concerns. */
  readonly onOutcome?: (outcome: SpanOutcome, spans: number) => void;
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(
      `Cannot create BatchingSpanProcessor as '${name}' must be a positive integer: current value is ${value}`,
    );
  }
  return value;
}

export class BatchingSpanProcessor implements SpanProcessor {
  readonly #exporter: SpanExporter;
  readonly #maxQueueSize: number;
  readonly #maxBatchSize: number;
  readonly #scheduledDelayMs: number;
  readonly #exportTimeoutMs: number;
  readonly #onOutcome: (outcome: SpanOutcome, spans: number) => void;
  #queue: ReadableSpan[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerDue = Infinity;
  #inFlight: Promise<void> | undefined;
  #shutDown = false;
  #lastExportSent = true;

  constructor(options: BatchingSpanProcessorOptions) {
    this.#exporter = options.exporter;
    this.#maxQueueSize = positiveInteger("maxQueueSize", options.maxQueueSize ?? 2048);
    this.#maxBatchSize = Math.min(
      positiveInteger("maxBatchSize", options.maxBatchSize ?? 512),
      this.#maxQueueSize,
    );
    this.#scheduledDelayMs = options.scheduledDelayMs ?? 1000;
    this.#exportTimeoutMs = positiveInteger("exportTimeoutMs", options.exportTimeoutMs ?? 10_000);
    this.#onOutcome = options.onOutcome ?? (() => {});
  }

  /** Spans waiting for export. */
  get queued(): number {
    return this.#queue.length;
  }

  onStart(_span: Span): void {}

  onEnd(span: ReadableSpan): void {
    if (this.#shutDown) return;
    if ((span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
    if (this.#queue.length >= this.#maxQueueSize) {
      this.#onOutcome("dropped", 1);
      return;
    }
    this.#queue.push(span);
    this.#schedule(this.#queue.length >= this.#maxBatchSize ? 0 : this.#scheduledDelayMs);
  }

  /** Exports every queued span (waiting for an export in flight first). */
  async forceFlush(): Promise<void> {
    while (this.#inFlight !== undefined || this.#queue.length > 0) {
      await (this.#inFlight ?? this.#exportBatch());
    }
  }

  /**
   * Stops taking spans and exports what is queued, giving up (the rest
   * counted failed) at the first failed export, so that a process stopping
   * while the collector is down waits for about one export timeout at most. The
   * exporter is its owner's to shut down.
   */
  async shutdown(): Promise<void> {
    this.#shutDown = true;
    this.#clearTimer();
    // The export in flight says whether the collector answers; else it is tried once.
    if (this.#inFlight !== undefined) await this.#inFlight;
    else this.#lastExportSent = true;
    while (this.#queue.length > 0 && this.#lastExportSent) await this.#exportBatch();
    if (this.#queue.length > 0) {
      this.#onOutcome("failed", this.#queue.length);
      this.#queue = [];
    }
  }

  /** Makes sure a batch leaves within `ms` (sooner timers stay). */
  #schedule(ms: number): void {
    if (this.#inFlight !== undefined) return; // the export in flight reschedules when done
    const due = Date.now() + ms;
    if (this.#timer !== undefined && this.#timerDue <= due) return;
    this.#clearTimer();
    this.#timerDue = due;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerDue = Infinity;
      void this.#exportBatch();
    }, ms);
    // Pending spans must not keep a finished process alive.
    Deno.unrefTimer(this.#timer);
  }

  #clearTimer(): void {
    if (this.#timer === undefined) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerDue = Infinity;
  }

  #exportBatch(): Promise<void> {
    if (this.#inFlight !== undefined) return this.#inFlight;
    this.#clearTimer();
    const batch = this.#queue.splice(0, this.#maxBatchSize);
    if (batch.length === 0) return Promise.resolve();
    this.#inFlight = this.#send(batch).then((sent) => {
      this.#lastExportSent = sent;
      this.#onOutcome(sent ? "exported" : "failed", batch.length);
      this.#inFlight = undefined;
      if (this.#queue.length > 0 && !this.#shutDown) {
        this.#schedule(this.#queue.length >= this.#maxBatchSize ? 0 : this.#scheduledDelayMs);
      }
    });
    return this.#inFlight;
  }

  /** Whether the exporter took the batch within the timeout. */
  #send(batch: ReadableSpan[]): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), this.#exportTimeoutMs);
      const done = (sent: boolean) => {
        clearTimeout(timer);
        resolve(sent);
      };
      // The exporter's own HTTP call must not be traced itself.
      context.with(suppressTracing(context.active()), () => {
        try {
          this.#exporter.export(batch, (result) => done(result.code === ExportResultCode.SUCCESS));
        } catch {
          done(false);
        }
      });
    });
  }
}
