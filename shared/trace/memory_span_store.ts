/**
 * The embedded trace store: the last `maxSpans` finished spans of the
 * process, in memory, behind the same exporter port as Zipkin (a span
 * exporter), read through `MemoryTraceReader`. The oldest span is forgotten
 * when a new one arrives at the bound, so memory stays bounded whatever the
 * traffic.
 */
import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace";
import { toTraceSpan, type TraceSpan } from "./trace_span.ts";

export interface MemorySpanStoreOptions {
  /**
   * Spans kept at most; the oldest are forgotten beyond it.
   * @default 10_000
   */
  readonly maxSpans?: number;
}

export const DEFAULT_MAX_SPANS = 10_000;

export class MemorySpanStore implements SpanExporter {
  readonly maxSpans: number;
  /** A ring: `#slots[#next]` is the oldest span once the ring is full. */
  readonly #slots: (TraceSpan | undefined)[];
  #next = 0;
  #size = 0;
  readonly #byTrace = new Map<string, Set<TraceSpan>>();

  constructor(options: MemorySpanStoreOptions = {}) {
    const { maxSpans = DEFAULT_MAX_SPANS } = options;
    if (!Number.isSafeInteger(maxSpans) || maxSpans < 1) {
      throw new RangeError(
        `Cannot create MemorySpanStore as 'maxSpans' must be a positive integer: current value is ${maxSpans}`,
      );
    }
    this.maxSpans = maxSpans;
    this.#slots = new Array(maxSpans);
  }

  /** Spans held now. */
  get size(): number {
    return this.#size;
  }

  /** Stores finished spans (the exporter port); never fails. */
  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    this.add(spans.map(toTraceSpan));
    resultCallback({ code: ExportResultCode.SUCCESS });
  }

  shutdown(): Promise<void> {
    return Promise.resolve();
  }

  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  add(spans: readonly TraceSpan[]): void {
    for (const span of spans) {
      const evicted = this.#slots[this.#next];
      if (evicted !== undefined) this.#forget(evicted);
      this.#slots[this.#next] = span;
      this.#next = (this.#next + 1) % this.maxSpans;
      this.#size = Math.min(this.#size + 1, this.maxSpans);
      let trace = this.#byTrace.get(span.traceId);
      if (trace === undefined) {
        trace = new Set();
        this.#byTrace.set(span.traceId, trace);
      }
      trace.add(span);
    }
  }

  /** The held spans of one trace, in arrival order; empty when none. */
  trace(traceId: string): TraceSpan[] {
    return [...this.#byTrace.get(traceId) ?? []];
  }

  /** Every held span, newest arrival first. */
  *newestFirst(): Generator<TraceSpan> {
    for (let i = 1; i <= this.#size; i++) {
      yield this.#slots[(this.#next - i + this.maxSpans) % this.maxSpans]!;
    }
  }

  #forget(span: TraceSpan): void {
    const trace = this.#byTrace.get(span.traceId);
    if (trace === undefined) return;
    trace.delete(span);
    if (trace.size === 0) this.#byTrace.delete(span.traceId);
  }
}
