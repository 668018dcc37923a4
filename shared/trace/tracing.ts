/**
 * Trace context for the whole process: W3C `traceparent` in and out of HTTP
 * requests and event-log headers, and an active span that survives awaits
 * (AsyncLocalStorage), so that logs carry the trace and span ids.
 *
 * Spans are recorded by one OpenTelemetry SDK tracer provider per service;
 * exporting them (Zipkin) is a span processor added here, without touching
 * callers.
 */
import {
  type Context,
  context,
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
import { type SpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";

export type { Tracer };

export interface TracingOptions {
  /** Processors that receive finished spans (exporters, test recorders). */
  readonly spanProcessors?: SpanProcessor[];
}

let configured = false;
let spanProcessors: SpanProcessor[] = [];
/** One provider per service, so that each span's resource names its own service. */
const providers = new Map<string, TracerProvider>();

/**
 * Installs the context manager and W3C propagator and sets the processors
 * every service's spans go to. Without it, no context flows. Calling it
 * again replaces the processors of every service (tests record spans so).
 */
export function configureTracing(options: TracingOptions = {}): void {
  if (!configured) {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    configured = true;
  }
  spanProcessors = options.spanProcessors ?? [];
  providers.clear();
}

/** Flushes and stops span processing; call once at process shutdown. */
export async function shutdownTracing(): Promise<void> {
  await Promise.all(spanProcessors.map((processor) => processor.shutdown()));
}

/**
 * The tracer of one service: its spans carry `service.name` on their
 * resource, also when several services share one process.
 */
export function serviceTracer(service: string): Tracer {
  let provider = providers.get(service);
  if (provider === undefined) {
    provider = new TracerProvider({
      resource: resourceFromAttributes({ "service.name": service }),
      spanProcessors: spanProcessors.map(sharedProcessor),
    });
    providers.set(service, provider);
  }
  return provider.getTracer("twitterapi");
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

/** Writes the active context as `traceparent` (and `tracestate`) into `carrier`. */
export function injectTraceContext(
  carrier: Record<string, string>,
  from: Context = context.active(),
): Record<string, string> {
  propagation.inject(from, carrier);
  return carrier;
}

/** The context described by a carrier's `traceparent`, or the active one. */
export function extractTraceContext(carrier: Readonly<Record<string, string>>): Context {
  return propagation.extract(context.active(), carrier);
}

export interface SpanOptions {
  readonly kind?: SpanKind;
  readonly attributes?: Record<string, string | number | boolean>;
  /** Parent context; the active context by default. */
  readonly parent?: Context;
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
  const spanOptions = {
    ...(options.kind === undefined ? {} : { kind: options.kind }),
    ...(options.attributes === undefined ? {} : { attributes: options.attributes }),
  };
  return tracer.startActiveSpan(
    name,
    spanOptions,
    options.parent ?? context.active(),
    async (span) => {
      try {
        return await work(span);
      } catch (error) {
        span.recordException(error instanceof Error ? error : String(error));
        span.setStatus({ code: SpanStatusCode.ERROR });
        throw error;
      } finally {
        span.end();
      }
    },
  );
}
