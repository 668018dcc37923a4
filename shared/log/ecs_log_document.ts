/**
 * A log line as an Elastic Common Schema document, the index template of the
 * daily `<prefix>-YYYY.MM.DD` indices that hold them, and the way back.
 */
import type { LogLevel } from "@logtape/logtape";
import { LOG_LEVELS, type LogEntry } from "./log_reader.ts";

export const ECS_VERSION = "8.11.0";

export interface EcsLogDocument {
  readonly "@timestamp": string;
  readonly ecs: { readonly version: string };
  readonly log: { readonly level: string; readonly logger: string };
  readonly message: string;
  readonly service?: { readonly name?: string; readonly instance?: { readonly id: string } };
  readonly trace?: { readonly id: string };
  readonly span?: { readonly id: string };
  readonly error?: {
    readonly type: string;
    readonly message: string;
    readonly stack_trace?: string;
  };
  /** The line's structured properties (mapped `flattened`: any shape, searchable as keywords). */
  readonly labels: Readonly<Record<string, unknown>>;
  /** Orders the lines of one process within a millisecond. */
  readonly event: { readonly sequence: number };
}

export function ecsDocument(entry: LogEntry, sequence: number): EcsLogDocument {
  const service = {
    ...(entry.service === undefined ? {} : { name: entry.service }),
    ...(entry.instance === undefined ? {} : { instance: { id: entry.instance } }),
  };
  return {
    "@timestamp": new Date(entry.timestamp).toISOString(),
    ecs: { version: ECS_VERSION },
    log: { level: entry.level, logger: entry.logger },
    message: entry.message,
    ...(Object.keys(service).length === 0 ? {} : { service }),
    ...(entry.traceId === undefined ? {} : { trace: { id: entry.traceId } }),
    ...(entry.spanId === undefined ? {} : { span: { id: entry.spanId } }),
    ...(entry.error === undefined ? {} : {
      error: {
        type: entry.error.type,
        message: entry.error.message,
        ...(entry.error.stackTrace === undefined ? {} : { stack_trace: entry.error.stackTrace }),
      },
    }),
    labels: entry.labels,
    event: { sequence },
  };
}

function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

export function entryOfEcsDocument(document: EcsLogDocument): LogEntry {
  const level = document.log.level;
  return {
    timestamp: Date.parse(document["@timestamp"]),
    level: isLogLevel(level) ? level : "info",
    logger: document.log.logger,
    message: document.message,
    ...(document.service?.name === undefined ? {} : { service: document.service.name }),
    ...(document.service?.instance === undefined ? {} : { instance: document.service.instance.id }),
    ...(document.trace === undefined ? {} : { traceId: document.trace.id }),
    ...(document.span === undefined ? {} : { spanId: document.span.id }),
    ...(document.error === undefined ? {} : {
      error: {
        type: document.error.type,
        message: document.error.message,
        ...(document.error.stack_trace === undefined
          ? {}
          : { stackTrace: document.error.stack_trace }),
      },
    }),
    labels: document.labels ?? {},
  };
}

/** The daily index a line of `timestamp` goes to. */
export function dailyIndex(prefix: string, timestamp: number): string {
  const day = new Date(timestamp).toISOString().slice(0, 10).replaceAll("-", ".");
  return `${prefix}-${day}`;
}

/** The pattern of every daily index of `prefix`. */
export function indexPattern(prefix: string): string {
  return `${prefix}-*`;
}

/**
 * The composable index template of `prefix`'s indices. Its priority is above
 * Elasticsearch's built-in `logs-*-*` template (100), which would otherwise
 * turn `logs-twitterapi-...` into data streams with mappings of its own.
 */
export function logIndexTemplate(prefix: string) {
  const keyword = { type: "keyword", ignore_above: 1024 } as const;
  return {
    name: prefix,
    index_patterns: [indexPattern(prefix)],
    priority: 200,
    _meta: { description: "twitterapi log lines (ECS)", ecs_version: ECS_VERSION },
    template: {
      settings: { "index.auto_expand_replicas": "0-1", "index.refresh_interval": "1s" },
      mappings: {
        // Unknown top-level fields stay in _source without growing the mapping.
        dynamic: false,
        properties: {
          "@timestamp": { type: "date" },
          ecs: { properties: { version: keyword } },
          log: { properties: { level: keyword, logger: keyword } },
          message: { type: "text" },
          service: {
            properties: { name: keyword, instance: { properties: { id: keyword } } },
          },
          trace: { properties: { id: keyword } },
          span: { properties: { id: keyword } },
          error: {
            properties: {
              type: keyword,
              message: { type: "text" },
              stack_trace: { type: "text" },
            },
          },
          labels: { type: "flattened", ignore_above: 1024 },
          event: { properties: { sequence: { type: "long" } } },
        },
      },
    },
  } as const;
}
