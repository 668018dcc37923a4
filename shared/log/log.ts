/**
 * Logging: JSON lines on stdout through LogTape. Every line carries the
 * service name and instance id (from the service's logger) and the active
 * trace and span ids, the seed's MDC correlation done with real trace context.
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

export type { Logger, LogLevel };

export const LOG_LEVELS = ["trace", "debug", "info", "warning", "error", "fatal"] as const;

export interface LoggingOptions {
  /** @default "info" */
  readonly level?: LogLevel;
  /** Where lines go. @default Deno.stdout.writable */
  readonly stream?: WritableStream<Uint8Array>;
}

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
 * errors readable, before the JSON formatter sees the record. Disposing it
 * flushes the wrapped sink, so no line is lost at exit.
 */
export function correlatingSink(sink: Sink & AsyncDisposable): Sink & AsyncDisposable {
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
    sink({ ...record, message: [message], properties });
  };
  return Object.assign(correlate, { [Symbol.asyncDispose]: () => sink[Symbol.asyncDispose]() });
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

function levelFilter(record: LogRecord): boolean {
  const service = record.category[1];
  const lowest = (service === undefined ? undefined : serviceLevels.get(service)) ?? processLevel;
  return LEVEL_ORDER[record.level] >= LEVEL_ORDER[lowest];
}

/** Configures process-wide logging; call once at start-up. */
export async function configureLogging(options: LoggingOptions = {}): Promise<void> {
  const sink = getStreamSink(options.stream ?? Deno.stdout.writable, {
    formatter: getJsonLinesFormatter({ properties: "flatten", categorySeparator: "." }),
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
  processLevel = options.level ?? "info";
  await configure({
    reset: true,
    sinks: { stdout: correlatingSink(sink) },
    filters: { level: levelFilter },
    loggers: [
      // Every level reaches the filter, which applies each service's live level.
      { category: ["twitterapi"], sinks: ["stdout"], filters: ["level"], lowestLevel: "trace" },
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
