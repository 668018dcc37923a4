/**
 * Trace context for the whole process: W3C `traceparent` in and out of HTTP
 * requests and event-log headers, and an active span that survives awaits
 * (AsyncLocalStorage), so that logs carry the trace and span ids.
 *
 * Spans are recorded by one OpenTelemetry SDK tracer provider per service
 * (its resource names the service) and exported through one bounded
 * batching queue per service to the process's exporter: Zipkin's, or the
 * memory span store. Deno's built-in OpenTelemetry (`OTEL_DENO`) must stay
 * off: it would register a second provider with the API.
 */
import {
  type Context,
  context,
  type Link,
  propagation,
  type Span,
  type SpanKind,
  SpanStatusCode,
  trace,
  type Tracer,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  ParentBasedSampler,
  type Sampler,
  SamplingDecision,
  type SamplingResult,
  type SpanExporter,
  type SpanProcessor,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import type { Counter, MetricsRegistry } from "../metrics/metrics.ts";
import { BatchingSpanProcessor, type SpanOutcome } from "./batching_span_processor.ts";
import { injectRequestLines } from "./request_lines.ts";

export type { Tracer };

/** Where finished spans go, through one batching processor per service. */
export interface SpanExportOptions {
  /** Zipkin's exporter or the memory span store; shared by every service. */
  readonly exporter: SpanExporter;
  /** @default 2048 */
  readonly maxQueueSize?: number;
  /** @default 512 */
  readonly maxBatchSize?: number;
  /** @default 1000 */
  readonly scheduledDelayMs?: number;
  /** @default 10_000 */
  readonly exportTimeoutMs?: number;
}

export interface TracingOptions {
  /** Processors every service's spans go to as well (test recorders), shared. */
  readonly spanProcessors?: SpanProcessor[];
  /** Exports every service's sampled spans; without it spans are only recorded. */
  readonly export?: SpanExportOptions;
  /**
   * Share of new traces that are sampled, from 0 to 1. A span with a parent
   * follows its parent's decision (a caller's `traceparent` flags included),
   * so a trace is recorded whole or not at all.
   * @default 1
   */
  readonly sampleRatio?: number;
  /**
   * Most new traces each service samples per second (of those `sampleRatio`
   * picks), with bursts of up to a second's worth: recording every span of a
   * busy pipeline costs about as much as its work (three spans per tweet were
   * half of the indexer's CPU per tweet), and the memory store keeps only
   * the last few thousand anyway. `Infinity`: no limit.
   * @default Infinity
   */
  readonly maxNewTracesPerSecond?: number;
}

interface ServiceTracing {
  readonly provider: TracerProvider;
  /** The service's own export queue, when spans are exported. */
  readonly exportProcessor: BatchingSpanProcessor | undefined;
  /** Counts of the export outcomes, for every registry that shows them. */
  readonly outcomes: Counter[][];
  readonly registries: WeakSet<MetricsRegistry>;
}

let configured = false;
let options: TracingOptions = {};
/** One provider per service, so that each span's resource names its own service. */
const services = new Map<string, ServiceTracing>();

/**
 * Parent-based sampling: new traces at `ratio`, at most `maxPerSecond` of
 * them a second (a budget of its own per sampler), children as their parent.
 */
export function samplerFor(ratio: number, maxPerSecond = Infinity): Sampler {
  if (!(ratio >= 0 && ratio <= 1)) {
    throw new RangeError(`Cannot sample traces as the ratio must be from 0 to 1: got ${ratio}`);
  }
  if (!(maxPerSecond >= 0)) {
    throw new RangeError(
      `Cannot sample traces as the most new traces per second must be 0 or more: got ${maxPerSecond}`,
    );
  }
  const byRatio = new TraceIdRatioBasedSampler(ratio);
  return new ParentBasedSampler({
    root: maxPerSecond === Infinity ? byRatio : new RateLimitedSampler(byRatio, maxPerSecond),
  });
}

const NOT_RECORDED: SamplingResult = { decision: SamplingDecision.NOT_RECORD };

/**
 * Samples what `inner` samples while a token bucket of `perSecond` tokens
 * (refilled continuously, holding at most a second's worth) has one left.
 */
class RateLimitedSampler implements Sampler {
  readonly #inner: Sampler;
  readonly #perSecond: number;
  #tokens: number;
  #refilledAt = performance.now();

  constructor(inner: Sampler, perSecond: number) {
    this.#inner = inner;
    this.#perSecond = perSecond;
    this.#tokens = perSecond;
  }

  shouldSample(...args: Parameters<Sampler["shouldSample"]>): SamplingResult {
    const result = this.#inner.shouldSample(...args);
    if (result.decision !== SamplingDecision.RECORD_AND_SAMPLED) return result;
    const now = performance.now();
    this.#tokens = Math.min(
      this.#perSecond,
      this.#tokens + (now - this.#refilledAt) * this.#perSecond / 1000,
    );
    this.#refilledAt = now;
    if (this.#tokens < 1) return NOT_RECORDED;
    this.#tokens -= 1;
    return result;
  }

  toString(): string {
    return `RateLimitedSampler{${this.#perSecond}/s of ${this.#inner.toString()}}`;
  }
}

/**
 * Installs the context manager and W3C propagator and sets where every
 * service's spans go and how many are sampled. Without it, no context
 * flows. Calling it again replaces the processors of every service (tests
 * record spans so); the previous export queues are flushed in the background.
 */
export function configureTracing(tracingOptions: TracingOptions = {}): void {
  if (!configured) {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    configured = true;
  }
  // Refused here, at configuration, rather than at a service's first span.
  samplerFor(tracingOptions.sampleRatio ?? 1, tracingOptions.maxNewTracesPerSecond);
  for (const { exportProcessor } of services.values()) void exportProcessor?.shutdown();
  options = tracingOptions;
  services.clear();
}

/**
 * Exports what every service has queued, then stops span processing; call
 * once at process shutdown.
 */
export async function shutdownTracing(): Promise<void> {
  await Promise.all(
    [...services.values()].map(({ exportProcessor }) => exportProcessor?.shutdown()),
  );
  await options.export?.exporter.shutdown();
  await Promise.all((options.spanProcessors ?? []).map((processor) => processor.shutdown()));
}

/** Exports what every service has queued now (tests read the exporter after it). */
export async function flushTracing(): Promise<void> {
  await Promise.all(
    [...services.values()].map(({ exportProcessor }) => exportProcessor?.forceFlush()),
  );
}

const OUTCOMES: readonly SpanOutcome[] = ["exported", "failed", "dropped"];

/**
 * The tracer of one service: its spans carry `service.name` on their
 * resource, also when several services share one process. With `metrics`,
 * the service's `/metrics` shows what became of its spans:
 * `tracing_spans_exported_total`, `tracing_spans_export_failed_total`,
 * `tracing_spans_dropped_total` (queue full) and `tracing_span_queue_size`.
 */
export function serviceTracer(service: string, metrics?: MetricsRegistry): Tracer {
  let tracing = services.get(service);
  if (tracing === undefined) {
    const outcomes: Counter[][] = [];
    const exportProcessor = options.export === undefined ? undefined : new BatchingSpanProcessor({
      ...options.export,
      onOutcome: (outcome, spans) => {
        const index = OUTCOMES.indexOf(outcome);
        for (const counters of outcomes) counters[index]!.inc({}, spans);
      },
    });
    const shared = (options.spanProcessors ?? []).map(sharedProcessor);
    tracing = {
      provider: new TracerProvider({
        resource: resourceFromAttributes({ "service.name": service }),
        sampler: samplerFor(options.sampleRatio ?? 1, options.maxNewTracesPerSecond),
        spanProcessors: exportProcessor === undefined ? shared : [...shared, exportProcessor],
      }),
      exportProcessor,
      outcomes,
      registries: new WeakSet(),
    };
    services.set(service, tracing);
  }
  if (metrics !== undefined && tracing.exportProcessor !== undefined) {
    registerExportMetrics(tracing, metrics);
  }
  return tracing.provider.getTracer("twitterapi");
}

function registerExportMetrics(tracing: ServiceTracing, metrics: MetricsRegistry): void {
  if (tracing.registries.has(metrics)) return;
  tracing.registries.add(metrics);
  const processor = tracing.exportProcessor!;
  const counters = [
    metrics.counter("tracing_spans_exported_total", "Spans the trace exporter accepted."),
    metrics.counter(
      "tracing_spans_export_failed_total",
      "Spans lost because their export failed or timed out (the collector down or slow).",
    ),
    metrics.counter(
      "tracing_spans_dropped_total",
      "Spans dropped without export because the export queue was full.",
    ),
  ];
  // Shown from the start, so a scrape sees 0 rather than no series.
  for (const counter of counters) counter.inc({}, 0);
  tracing.outcomes.push(counters);
  metrics.gauge("tracing_span_queue_size", "Finished spans waiting for export.", () => [
    { labels: {}, value: processor.queued },
  ]);
}

/**
 * A processor shared by several providers: a provider's shutdown must not
 * shut down what other services still use (`shutdownTracing` does that once).
 */
function sharedProcessor(processor: SpanProcessor): SpanProcessor {
  return {
    onStart: (span, parent) => processor.onStart(span, parent),
    onEnd: (span) => processor.onEnd(span),
    forceFlush: () => processor.forceFlush(),
    shutdown: () => Promise.resolve(),
  };
}

/** The active trace and span ids, for log correlation. */
export function activeTraceIds(): { traceId: string; spanId: string } | undefined {
  const span = trace.getActiveSpan();
  if (span === undefined) return undefined;
  const { traceId, spanId } = span.spanContext();
  return { traceId, spanId };
}

/**
 * Writes the active context as `traceparent` (and `tracestate`, with the
 * request-line decision of `request_lines.ts`) into `carrier`.
 */
export function injectTraceContext(
  carrier: Record<string, string>,
  from: Context = context.active(),
): Record<string, string> {
  propagation.inject(from, carrier);
  if (carrier.traceparent !== undefined) injectRequestLines(carrier, from);
  return carrier;
}

/** The context described by a carrier's `traceparent`, or the active one. */
export function extractTraceContext(carrier: Readonly<Record<string, string>>): Context {
  return propagation.extract(context.active(), carrier);
}

export type SpanAttributes = Record<string, string | number | boolean>;

export interface SpanOptions {
  readonly kind?: SpanKind;
  /**
   * Set only when the span is recorded: most spans of a busy service are not
   * sampled, and the SDK sanitizes the attributes of every span it starts,
   * recorded or not (2 % of the gateway's CPU under load). A function is
   * called only then too, for attributes that cost something to make.
   */
  readonly attributes?: SpanAttributes | (() => SpanAttributes);
  /** Parent context; the active context by default. */
  readonly parent?: Context;
  /** Spans this one works for besides its parent's (the other callers of a batched command). */
  readonly links?: Link[];
}

/**
 * Runs `work` inside a new active span of `tracer`, ending it when `work`
 * settles and recording a failure as the span's error status.
 */
export function inSpan<T>(
  tracer: Tracer,
  name: string,
  options: SpanOptions,
  work: (span: Span) => Promise<T>,
): Promise<T> {
  return tracer.startActiveSpan(
    name,
    spanOptionsOf(options),
    options.parent ?? context.active(),
    async (span) => {
      try {
        setRecordedAttributes(span, options.attributes);
        return await work(span);
      } catch (error) {
        recordError(span, error);
        throw error;
      } finally {
        span.end();
      }
    },
  );
}

function spanOptionsOf(options: SpanOptions) {
  return {
    ...(options.kind === undefined ? {} : { kind: options.kind }),
    ...(options.links === undefined ? {} : { links: options.links }),
  };
}

function setRecordedAttributes(span: Span, attributes: SpanOptions["attributes"]): void {
  if (attributes === undefined || !span.isRecording()) return;
  span.setAttributes(typeof attributes === "function" ? attributes() : attributes);
}

/**
 * Starts a span of `tracer` under `parent` (not made active), with the
 * attributes set only when it is recorded: for spans started by hand, which
 * end elsewhere (one per produced record).
 */
export function startSpan(
  tracer: Tracer,
  name: string,
  options: Omit<SpanOptions, "parent">,
  parent: Context,
): Span {
  const span = tracer.startSpan(name, spanOptionsOf(options), parent);
  setRecordedAttributes(span, options.attributes);
  return span;
}

/**
 * As `inSpan`, but the span does not become the active one while `work`
 * runs: for a leaf call (one Redis command, one HTTP attempt) that starts no
 * span of its own. An active span runs `work` in a context of its own
 * (AsyncLocalStorage), which on the gateway's hot path cost more than the
 * span. `work` gets the context that holds the span, to propagate it
 * (`injectTraceContext(carrier, spanContext)`); what it logs carries the
 * caller's span.
 */
export async function inLeafSpan<T>(
  tracer: Tracer,
  name: string,
  options: SpanOptions,
  work: (span: Span, spanContext: Context) => Promise<T>,
): Promise<T> {
  const parent = options.parent ?? context.active();
  const span = startSpan(tracer, name, options, parent);
  try {
    return await work(span, trace.setSpan(parent, span));
  } catch (error) {
    recordError(span, error);
    throw error;
  } finally {
    span.end();
  }
}

/**
 * Marks `span` failed by `error`: the exception event, `error.type` (the
 * error's class) and an ERROR status with its message (Zipkin's UI shows a
 * span with a message as failed).
 */
export function recordError(span: Span, error: unknown): void {
  const exception = error instanceof Error ? error : new Error(String(error));
  span.recordException(exception);
  span.setAttribute("error.type", exception.name);
  span.setStatus({ code: SpanStatusCode.ERROR, message: exception.message.slice(0, 500) });
}
