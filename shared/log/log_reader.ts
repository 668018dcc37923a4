/**
 * The log reader port: search the lines every service logged, by trace id,
 * service, level, text and time range, newest first. The Elasticsearch
 * adapter reads the shipped `logs-twitterapi-*` indices; the in-memory one
 * reads the recent lines this process kept (the embedded default).
 */
import type { LogLevel, LogRecord } from "@logtape/logtape";

/** LogTape's levels, lowest first. */
export const LOG_LEVELS = ["trace", "debug", "info", "warning", "error", "fatal"] as const;

/** The levels at or above `level`. */
export function levelsFrom(level: LogLevel): LogLevel[] {
  return LOG_LEVELS.slice(LOG_LEVELS.indexOf(level));
}

/** One log line as the readers return it. */
export interface LogEntry {
  /** Epoch milliseconds. */
  readonly timestamp: number;
  readonly level: LogLevel;
  /** The logger's category, dot-separated: `twitterapi.query`. */
  readonly logger: string;
  /** The rendered message. */
  readonly message: string;
  readonly service?: string;
  readonly instance?: string;
  readonly traceId?: string;
  readonly spanId?: string;
  readonly error?: LoggedError;
  /** The line's other structured properties. */
  readonly labels: Readonly<Record<string, unknown>>;
}

export interface LoggedError {
  /** The error's class name: `TypeError`. */
  readonly type: string;
  readonly message: string;
  readonly stackTrace?: string;
}

export interface LogQuery {
  readonly traceId?: string;
  readonly service?: string;
  /** Lines at this level or above. */
  readonly level?: LogLevel;
  /** Every word of it appears in the message (case-insensitive). */
  readonly text?: string;
  /** Epoch milliseconds, inclusive. */
  readonly from?: number;
  /** Epoch milliseconds, exclusive. */
  readonly to?: number;
  /** @default 100 */
  readonly limit?: number;
}

/** The most lines one search returns. */
export const MAX_LOG_SEARCH_LIMIT = 10_000;

export interface LogReader {
  /** Matching lines, newest first, at most `query.limit`. */
  search(query: LogQuery): Promise<LogEntry[]>;
}

/** The limit of a query, checked. */
export function searchLimit(query: LogQuery): number {
  const limit = query.limit ?? 100;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LOG_SEARCH_LIMIT) {
    throw new RangeError(
      `Cannot search logs: 'limit' must be an integer from 1 to ${MAX_LOG_SEARCH_LIMIT}, got ${limit}`,
    );
  }
  return limit;
}

/** Properties that become fields of their own rather than labels. */
const FIELD_PROPERTIES = new Set(["service", "instance", "traceId", "spanId", "error"]);

function loggedError(value: unknown): LoggedError | undefined {
  if (value instanceof Error) {
    return {
      type: value.name,
      message: value.message,
      ...(value.stack === undefined ? {} : { stackTrace: value.stack }),
    };
  }
  if (typeof value !== "object" || value === null) return undefined;
  const { name, message, stack } = value as Record<string, unknown>;
  if (typeof message !== "string") return undefined;
  return {
    type: typeof name === "string" ? name : "Error",
    message,
    ...(typeof stack === "string" ? { stackTrace: stack } : {}),
  };
}

function optionalText(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

/**
 * The entry of a record that `correlatingSink` prepared: its message rendered
 * to one string, its errors plain data, its trace ids among its properties.
 */
export function logEntryOf(record: LogRecord): LogEntry {
  const properties = record.properties;
  const labels: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(properties)) {
    if (!FIELD_PROPERTIES.has(key)) labels[key] = value;
  }
  const error = loggedError(properties.error);
  if (properties.error !== undefined && error === undefined) labels.error = properties.error;
  const fields = {
    service: optionalText(properties.service),
    instance: optionalText(properties.instance),
    traceId: optionalText(properties.traceId),
    spanId: optionalText(properties.spanId),
  };
  return {
    timestamp: record.timestamp,
    level: record.level,
    logger: record.category.join("."),
    message: record.message.map(String).join(""),
    ...Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)),
    ...(error === undefined ? {} : { error }),
    labels,
  };
}

/** The lower-case words of a text, as the readers match them. */
export function wordsOf(text: string): string[] {
  return text.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter((word) => word !== "");
}
