/**
 * The trace reader port: what a console asks of the recorded traces.
 *
 * Adapters: `MemoryTraceReader` (the process's bounded span store, the
 * embedded default) and `ZipkinTraceReader` (Zipkin's `/api/v2` read API).
 * Every adapter must pass `trace_reader_contract.ts`. Service names are
 * compared lower-cased, as Zipkin stores them.
 */
import type { TraceSpan } from "./trace_span.ts";

export interface RecentTracesQuery {
  /** Traces holding at least one span of this service. */
  readonly serviceName: string;
  /**
   * Most traces returned.
   * @default 10
   */
  readonly limit?: number;
  /**
   * How far back from `endTs` a span may have started, in milliseconds.
   * @default 3_600_000
   */
  readonly lookbackMs?: number;
  /**
   * Latest start of a span, epoch milliseconds.
   * @default Date.now()
   */
  readonly endTs?: number;
}

export interface TraceReader {
  /** The spans of one trace, by start time; undefined when none is known. */
  trace(traceId: string): Promise<TraceSpan[] | undefined>;
  /**
   * The most recent traces of a service, newest first, each with every
   * span (by start time) that the reader holds.
   */
  recentTraces(query: RecentTracesQuery): Promise<TraceSpan[][]>;
  /** Every service with recorded spans, sorted. */
  serviceNames(): Promise<string[]>;
}

export const DEFAULT_RECENT_LIMIT = 10;
export const DEFAULT_LOOKBACK_MS = 3_600_000;

const TRACE_ID = /^[0-9a-f]{16}([0-9a-f]{16})?$/;

/** Throws `RangeError` unless `traceId` is 16 or 32 lower-case hex digits. */
export function checkTraceId(traceId: string): void {
  if (!TRACE_ID.test(traceId)) {
    throw new RangeError(
      `Cannot read trace '${traceId}': a trace id is 16 or 32 lower-case hex digits`,
    );
  }
}

/** The query with its defaults, checked: `RangeError` for a bad limit or lookback. */
export function resolveRecentQuery(query: RecentTracesQuery): Required<RecentTracesQuery> {
  const {
    serviceName,
    limit = DEFAULT_RECENT_LIMIT,
    lookbackMs = DEFAULT_LOOKBACK_MS,
    endTs = Date.now(),
  } = query;
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new RangeError(
      `Cannot read recent traces as 'limit' must be a positive integer: current value is ${limit}`,
    );
  }
  if (!Number.isSafeInteger(lookbackMs) || lookbackMs < 1) {
    throw new RangeError(
      `Cannot read recent traces as 'lookbackMs' must be a positive integer: current value is ${lookbackMs}`,
    );
  }
  return { serviceName: serviceName.toLowerCase(), limit, lookbackMs, endTs };
}
