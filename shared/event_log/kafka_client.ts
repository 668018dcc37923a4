/**
 * The kafkajs client: brokers, timeouts, retries, and log lines routed to a
 * callback of the caller's, never to the console.
 */

import {
  Kafka,
  type logCreator as KafkaLogCreator,
  type LogEntry,
  logLevel as KafkaLogLevel,
  type RetryOptions,
} from "kafkajs";

/** One kafkajs log line, as `createKafkaClient` hands it to `onLog`. */
export interface KafkaLogEntry {
  readonly level: "error" | "warn" | "info" | "debug";
  /** The kafkajs component, such as `Consumer` or `Connection`. */
  readonly namespace: string;
  readonly message: string;
  /** Everything else kafkajs attached (group id, broker, error, stack...). */
  readonly details: Readonly<Record<string, unknown>>;
}

export interface KafkaClientOptions {
  /** Bootstrap brokers, `host:port`. */
  readonly brokers: readonly string[];
  /**
   * Names this client in the broker's logs and metrics.
   * @default "twitterapi"
   */
  readonly clientId?: string;
  /**
   * Longest wait for a TCP connection to a broker, in milliseconds.
   * @default 3_000
   */
  readonly connectionTimeoutMs?: number;
  /**
   * Longest wait for a broker's answer to one request, in milliseconds.
   * @default 30_000
   */
  readonly requestTimeoutMs?: number;
  /**
   * kafkajs's retries of failed requests and connections (its `retry` option).
   * @default kafkajs's: 5 retries from 300 ms, doubling
   */
  readonly retry?: RetryOptions;
  /**
   * Least severe kafkajs log level handed to `onLog`.
   * @default "error"
   */
  readonly logLevel?: KafkaLogEntry["level"];
  /**
   * Receives kafkajs's log lines at `logLevel` and above.
   * @default nothing: the lines are dropped
   */
  readonly onLog?: (entry: KafkaLogEntry) => void;
  /** Replaces `onLog` with a kafkajs `logCreator` of the caller's (still at `logLevel`). */
  readonly logCreator?: KafkaLogCreator;
}

const LOG_LEVELS: Readonly<Record<KafkaLogEntry["level"], KafkaLogLevel>> = {
  error: KafkaLogLevel.ERROR,
  warn: KafkaLogLevel.WARN,
  info: KafkaLogLevel.INFO,
  debug: KafkaLogLevel.DEBUG,
};

function levelName(level: KafkaLogLevel): KafkaLogEntry["level"] {
  if (level <= KafkaLogLevel.ERROR) return "error";
  if (level <= KafkaLogLevel.WARN) return "warn";
  return level <= KafkaLogLevel.INFO ? "info" : "debug";
}

/**
 * kafkajs logs every error answer of the broker as an error, including the
 * expected ones (a rebalance announced by a heartbeat, a topic that exists
 * already); the component that sent the request logs again when it is a real
 * failure. Those answers are passed on as warnings.
 */
function severity(entry: LogEntry): KafkaLogEntry["level"] {
  const level = levelName(entry.level);
  return level === "error" && entry.namespace === "Connection" &&
      entry.log.message.startsWith("Response ")
    ? "warn"
    : level;
}

/** A kafkajs client whose log lines go to `onLog` only, never to the console. */
export function createKafkaClient(options: KafkaClientOptions): Kafka {
  const { onLog } = options;
  const threshold = LOG_LEVELS[options.logLevel ?? "error"];
  const routed: KafkaLogCreator = () => (entry) => {
    if (onLog === undefined) return;
    const level = severity(entry);
    if (LOG_LEVELS[level] > threshold) return;
    const { message, timestamp: _timestamp, logger: _logger, ...details } = entry.log;
    try {
      onLog({ level, namespace: entry.namespace, message, details });
    } catch {
      // A failing log callback must not break the client.
    }
  };
  return new Kafka({
    brokers: [...options.brokers],
    clientId: options.clientId ?? "twitterapi",
    connectionTimeout: options.connectionTimeoutMs ?? 3_000,
    requestTimeout: options.requestTimeoutMs ?? 30_000,
    ...(options.retry === undefined ? {} : { retry: options.retry }),
    logLevel: threshold,
    logCreator: options.logCreator ?? routed,
  });
}
