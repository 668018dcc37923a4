/**
 * Readable lines for a terminal: time, level, service, message and the short
 * trace id, with an error's stack below its line. Records come from
 * `correlatingSink` (message rendered, errors as plain data).
 */
import type { LogLevel, LogRecord, TextFormatter } from "@logtape/logtape";

export interface PrettyFormatterOptions {
  /** ANSI colours for levels and dim details. @default true */
  readonly colors?: boolean;
}

const LEVEL_LABELS: Record<LogLevel, string> = {
  trace: "TRACE",
  debug: "DEBUG",
  info: "INFO ",
  warning: "WARN ",
  error: "ERROR",
  fatal: "FATAL",
};

const LEVEL_COLORS: Record<LogLevel, string> = {
  trace: "\x1b[90m",
  debug: "\x1b[90m",
  info: "\x1b[32m",
  warning: "\x1b[33m",
  error: "\x1b[31m",
  fatal: "\x1b[35m",
};
const DIM = "\x1b[2m";
const RESET = "\x1b[0m";

/** The width services are padded to (the longest name, `wordcount`). */
const SERVICE_WIDTH = 9;

function time(timestamp: number): string {
  const date = new Date(timestamp);
  const pad = (value: number, width = 2) => String(value).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${
    pad(date.getMilliseconds(), 3)
  }`;
}

function errorDetail(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const { stack, message, cause } = error as Record<string, unknown>;
  const text = typeof stack === "string" ? stack : typeof message === "string" ? message : "";
  if (text === "") return undefined;
  const causeText = errorDetail(cause);
  return causeText === undefined ? text : `${text}\nCaused by: ${causeText}`;
}

export function getPrettyFormatter(options: PrettyFormatterOptions = {}): TextFormatter {
  const { colors = true } = options;
  const paint = (code: string, text: string) => colors ? `${code}${text}${RESET}` : text;
  return function prettyFormatter(record: LogRecord): string {
    const { properties } = record;
    const service = typeof properties.service === "string"
      ? properties.service
      : record.category.at(-1) ?? "";
    const message = record.message.map(String).join("");
    const traceId = typeof properties.traceId === "string" ? properties.traceId : undefined;
    let line = `${paint(DIM, time(record.timestamp))} ${
      paint(LEVEL_COLORS[record.level], LEVEL_LABELS[record.level])
    } ${service.padEnd(SERVICE_WIDTH)} ${message}`;
    if (traceId !== undefined) line += ` ${paint(DIM, `[${traceId.slice(0, 8)}]`)}`;
    const detail = errorDetail(properties.error);
    if (detail !== undefined) {
      line += "\n" + paint(DIM, detail.split("\n").map((part) => `    ${part}`).join("\n"));
    }
    return line + "\n";
  };
}
