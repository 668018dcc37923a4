/**
 * The one span model of the trace readers: Zipkin's v2 JSON span, as Zipkin
 * stores and returns it (span and service names lower-cased, tag values
 * strings, times in epoch microseconds). The memory store keeps spans in this
 * shape too, so both readers answer alike.
 */
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { hrTimeToMicroseconds } from "@opentelemetry/core";
import type { Resource } from "@opentelemetry/resources";
import type { ReadableSpan } from "@opentelemetry/sdk-trace";

export type TraceSpanKind = "CLIENT" | "SERVER" | "PRODUCER" | "CONSUMER";

export interface TraceEndpoint {
  readonly serviceName?: string;
  readonly ipv4?: string;
  readonly ipv6?: string;
  readonly port?: number;
}

export interface TraceAnnotation {
  /** Epoch microseconds. */
  readonly timestamp: number;
  readonly value: string;
}

export interface TraceSpan {
  /** 32 lower-case hex digits. */
  readonly traceId: string;
  /** 16 lower-case hex digits. */
  readonly id: string;
  readonly parentId?: string;
  /** Lower-cased, as Zipkin stores it: `get /api/v1/tweets`. */
  readonly name: string;
  /** Absent for an internal span. */
  readonly kind?: TraceSpanKind;
  /** Start, epoch microseconds. */
  readonly timestamp: number;
  /** Microseconds. */
  readonly duration: number;
  readonly localEndpoint: TraceEndpoint;
  readonly remoteEndpoint?: TraceEndpoint;
  readonly annotations?: readonly TraceAnnotation[];
  readonly tags: Readonly<Record<string, string>>;
}

const KINDS: Readonly<Record<SpanKind, TraceSpanKind | undefined>> = {
  [SpanKind.CLIENT]: "CLIENT",
  [SpanKind.SERVER]: "SERVER",
  [SpanKind.PRODUCER]: "PRODUCER",
  [SpanKind.CONSUMER]: "CONSUMER",
  [SpanKind.INTERNAL]: undefined,
};

/** Tag naming the span's status, as the Zipkin exporter writes it. */
export const STATUS_CODE_TAG = "otel.status_code";
/** Tag with an error status's message; Zipkin's UI marks a span with it as failed. */
export const ERROR_TAG = "error";

/** The service a span belongs to: its resource's `service.name`. */
export function serviceNameOf(span: ReadableSpan): string {
  return String(
    span.attributes["service.name"] ?? span.resource.attributes["service.name"] ?? "unknown",
  );
}

/** The tags of each resource (one per service), made once rather than for every span. */
const tagsOfResources = new WeakMap<Resource, readonly (readonly [string, string])[]>();

function resourceTags(resource: Resource): readonly (readonly [string, string])[] {
  let tags = tagsOfResources.get(resource);
  if (tags === undefined) {
    tags = Object.entries(resource.attributes).flatMap(([key, value]) =>
      value === undefined ? [] : [[key, String(value)] as const]
    );
    tagsOfResources.set(resource, tags);
  }
  return tags;
}

/**
 * A finished OpenTelemetry span in the model, the way
 * `@opentelemetry/exporter-zipkin` writes it and Zipkin then stores it.
 */
export function toTraceSpan(span: ReadableSpan): TraceSpan {
  const { traceId, spanId } = span.spanContext();
  const tags: Record<string, string> = {};
  for (const [key, value] of Object.entries(span.attributes)) {
    if (value !== undefined) tags[key] = String(value);
  }
  if (span.status.code !== SpanStatusCode.UNSET) {
    tags[STATUS_CODE_TAG] = SpanStatusCode[span.status.code];
  }
  if (span.status.code === SpanStatusCode.ERROR && span.status.message) {
    tags[ERROR_TAG] = span.status.message;
  }
  for (const [key, value] of resourceTags(span.resource)) tags[key] = value;
  const kind = KINDS[span.kind];
  const parentId = span.parentSpanContext?.spanId;
  return {
    traceId,
    id: spanId,
    ...(parentId === undefined ? {} : { parentId }),
    name: span.name.toLowerCase(),
    ...(kind === undefined ? {} : { kind }),
    timestamp: hrTimeToMicroseconds(span.startTime),
    duration: Math.round(hrTimeToMicroseconds(span.duration)),
    localEndpoint: { serviceName: serviceNameOf(span).toLowerCase() },
    ...(span.events.length === 0 ? {} : {
      annotations: span.events.map((event) => ({
        timestamp: Math.round(hrTimeToMicroseconds(event.time)),
        value: event.name,
      })),
    }),
    tags,
  };
}

/** Spans in reading order: by start time, then id. */
export function sortSpans(spans: readonly TraceSpan[]): TraceSpan[] {
  return [...spans].sort((a, b) => a.timestamp - b.timestamp || (a.id < b.id ? -1 : 1));
}
