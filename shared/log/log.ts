/**
 * Logging through LogTape: JSON lines on stdout (readable lines in a
 * terminal), and every line to the configured aggregation too (Elasticsearch
 * or the in-memory store). Every line carries the service name and instance
 * id (from the service's logger) and the active trace and span ids, the
 * seed's MDC correlation done with real trace context.
 */
import {
  configure,
  dispose,
  getJsonLinesFormatter,
  getLogger,
  getStreamSink,
  type Logger,
  type LogLevel,
  type LogRecord,
  type Sink,
} from "@logtape/logtape";
import { activeTraceIds } from "../trace/tracing.ts";
import { getPrettyFormatter } from "./pretty_formatter.ts";

export type { Logger, LogLevel, Sink };
export { LOG_LEVELS } from "./log_reader.ts";

/** How stdout lines look: JSON lines, or readable lines for a person at a terminal. */
export type LogFormat = "json" | "pretty";

export interface LoggingOptions {
  /** @default "info" */
  readonly level?: LogLevel;
  /** Where lines go. @default Deno.stdout.writable */
  readonly stream?: WritableStream<Uint8Array>;
  /** @default "json" */
  readonly format?: LogFormat;
  /** ANSI colours in pretty lines. @default true */
  readonly colors?: boolean;
  /**
   * Sinks that get every line besides the stream (the log aggregation), as
   * `correlatingSink` prepares them. Lines of `LOG_SHIPPING_CATEGORY` reach
   * the stream only, so that a sink's own status lines never come back to it.
   */
  readonly sinks?: readonly Sink[];
}

/** The category of lines about log shipping itself: written to the stream only. */
export const LOG_SHIPPING_CATEGORY = ["twitterapi", "log-shipping"] as const;

/** Plain data for an `Error`, which JSON would otherwise render as `{}`. */
function serializeError(error: Error): Record<string, unknown> {
  return {
    name: error.name,
    message: error.message,
    ...(error.stack === undefined ? {} : { stack: error.stack }),
    ...(error.cause === undefined
      ? {}
      : { cause: error.cause instanceof Error ? serializeError(error.cause) : error.cause }),
  };
}

/** A placeholder's text: strings as they are, not as quoted literals. */
function renderValue(value: unknown): string {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.message;
  if (typeof value === "bigint") return value.toString();
  return JSON.stringify(value) ?? String(value);
}

/**
 * Adds the active trace ids, renders the message with plain strings and makes
 * errors readable, then hands the record to every sink. Disposing it flushes
 * the sinks that need it, so no line is lost at exit.
 */
export function correlatingSink(...sinks: Sink[]): Sink & AsyncDisposable {
  const correlate = (record: LogRecord) => {
    const message = record.message.map((part, index) =>
      index % 2 === 0 ? String(part) : renderValue(part)
    ).join("");
    const properties: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(record.properties)) {
      properties[key] = value instanceof Error ? serializeError(value) : value;
    }
    const ids = activeTraceIds();
    if (ids !== undefined) Object.assign(properties, ids);
    const correlated = { ...record, message: [message], properties };
    for (const sink of sinks) sink(correlated);
  };
  // The last first: the aggregation sinks may still log about their last
  // shipment to the stream, which closes after them.
  const dispose = async () => {
    for (const sink of [...sinks].reverse()) {
      await (sink as Partial<AsyncDisposable>)[Symbol.asyncDispose]?.call(sink);
    }
  };
  return Object.assign(correlate, { [Symbol.asyncDispose]: dispose });
}

const LEVEL_ORDER: Readonly<Record<LogLevel, number>> = {
  trace: 0,
  debug: 1,
  info: 2,
  warning: 3,
  error: 4,
  fatal: 5,
};
let processLevel: LogLevel = "info";
/** Levels of services whose configuration set their own (a live refresh changes them). */
const serviceLevels = new Map<string, LogLevel>();

/** Sets the lowest level logged for one service's logger, at once. */
export function setServiceLogLevel(service: string, level: LogLevel): void {
  serviceLevels.set(service, level);
}

/**
 * Whether `service`'s lines at `level` are logged now: lets a hot path skip
 * building a line that the level filter would drop.
 */
export function logsAt(service: string, level: LogLevel): boolean {
  return LEVEL_ORDER[level] >= LEVEL_ORDER[serviceLevels.get(service) ?? processLevel];
}

function levelFilter(record: LogRecord): boolean {
  const service = record.category[1];
  const lowest = (service === undefined ? undefined : serviceLevels.get(service)) ?? processLevel;
  return LEVEL_ORDER[record.level] >= LEVEL_ORDER[lowest];
}

/** Configures process-wide logging; call once at start-up. */
export async function configureLogging(options: LoggingOptions = {}): Promise<void> {
  const formatter = options.format === "pretty"
    ? getPrettyFormatter({ colors: options.colors ?? true })
    : getJsonLinesFormatter({ properties: "flatten", categorySeparator: "." });
  const stream = getStreamSink(options.stream ?? Deno.stdout.writable, {
    formatter,
    // Lines are written in the background, so a request never waits for
    // stdout; a burst beyond twice the buffer before a flush drops lines,
    // and says so on stderr.
    nonBlocking: {
      bufferSize: 1000,
      flushInterval: 50,
      onDrop: ({ count }) => {
        Deno.stderr.writeSync(new TextEncoder().encode(`log: dropped ${count} lines\n`));
      },
    },
  });
  const level = options.level ?? "info";
  processLevel = level;
  await configure({
    reset: true,
    sinks: {
      // Only `all` disposes the stream (and the aggregation), once.
      stdout: correlatingSink((record) => stream(record)),
      all: correlatingSink(stream, ...options.sinks ?? []),
    },
    filters: { level: levelFilter },
    loggers: [
      // Every level reaches the filter, which applies each service's live level.
      { category: ["twitterapi"], sinks: ["all"], filters: ["level"], lowestLevel: "trace" },
      {
        category: [...LOG_SHIPPING_CATEGORY],
        sinks: ["stdout"],
        parentSinks: "override",
        lowestLevel: level,
      },
      { category: ["logtape", "meta"], sinks: ["stdout"], lowestLevel: "warning" },
    ],
  });
}

/** Flushes pending lines; call once at process shutdown. */
export async function shutdownLogging(): Promise<void> {
  await dispose();
}

/** The logger of one service instance: every line names both. */
export function serviceLogger(service: string, instanceId: string): Logger {
  return getLogger(["twitterapi", service]).with({ service, instance: instanceId });
}

/** The logger of a log-shipping sink's own status lines (stdout only). */
export function logShippingLogger(service: string, instanceId: string): Logger {
  return getLogger([...LOG_SHIPPING_CATEGORY]).with({ service, instance: instanceId });
}
