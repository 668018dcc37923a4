/**
 * Dead letters: a consumed record that cannot be processed goes, unchanged,
 * to a dead-letter topic with the reason and its origin in its headers, so
 * one bad record never blocks its partition.
 */
import type { ConsumedRecord, ProducerRecord } from "./event_log.ts";

/** Headers a dead letter carries besides the original ones. */
export const DEAD_LETTER_HEADERS = {
  errorCode: "dlq.error.code",
  errorMessage: "dlq.error.message",
  topic: "dlq.original.topic",
  partition: "dlq.original.partition",
  offset: "dlq.original.offset",
  failedAt: "dlq.failed.at",
} as const;

/** The dead letter of `record`; the error's `code` (or name) and message go in the headers. */
export function deadLetter(record: ConsumedRecord, error: unknown): ProducerRecord {
  const reason = error instanceof Error ? error : new Error(String(error));
  const code = "code" in reason && typeof reason.code === "string" ? reason.code : reason.name;
  return {
    key: record.key,
    value: record.value,
    timestamp: record.timestamp,
    headers: {
      ...record.headers,
      [DEAD_LETTER_HEADERS.errorCode]: code,
      [DEAD_LETTER_HEADERS.errorMessage]: reason.message,
      [DEAD_LETTER_HEADERS.topic]: record.topic,
      [DEAD_LETTER_HEADERS.partition]: String(record.partition),
      [DEAD_LETTER_HEADERS.offset]: String(record.offset),
      [DEAD_LETTER_HEADERS.failedAt]: new Date().toISOString(),
    },
  };
}
