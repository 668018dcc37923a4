/**
 * Trace context for the whole process: W3C `traceparent` in and out of HTTP
 * requests and event-log headers, and an active span that survives awaits
 * (AsyncLocalStorage), so that logs carry the trace and span ids.
 *
 * Spans are recorded by an OpenTelemetry SDK tracer provider; exporting them
 * (Zipkin) is a span processor added here later, without touching callers.
 */
import {
  type Context,
  context,
  propagation,
  type Span,
  type SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { type SpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";

export interface TracingOptions {
  /** Processors that receive finished spans (exporters, test recorders). */
  readonly spanProcessors?: SpanProcessor[];
}

let provider: TracerProvider | undefined;

/**
 * Installs the global tracer provider, context manager and W3C propagator.
 * Without it, the OpenTelemetry API is a no-op and no context flows. Calling it
 * again replaces the span processors (tests use that to record spans).
 */
export function configureTracing(options: TracingOptions = {}): void {
  if (provider === undefined) {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  } else {
    trace.disable();
  }
  provider = new TracerProvider({ spanProcessors: options.spanProcessors ?? [] });
  trace.setGlobalTracerProvider(provider);
}

/** Flushes and stops span processing; call once at process shutdown. */
export async function shutdownTracing(): Promise<void> {
  await provider?.shutdown();
}

export function tracer() {
  return trace.getTracer("twitterapi");
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
 * Runs `work` inside a new active span, ending it when `work` settles and
 * recording a failure as the span's error status.
 */
export function inSpan<T>(
  name: string,
  options: SpanOptions,
  work: (span: Span) => Promise<T>,
): Promise<T> {
  const spanOptions = {
    ...(options.kind === undefined ? {} : { kind: options.kind }),
    ...(options.attributes === undefined ? {} : { attributes: options.attributes }),
  };
  return tracer().startActiveSpan(
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
