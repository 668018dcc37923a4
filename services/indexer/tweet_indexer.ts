/**
 * The CQRS write side: turns a batch of tweet events into index documents.
 * Undecodable events go to the dead-letter topic with the reason in their
 * headers, so one bad event never blocks its partition. The batch handler
 * resolves only once the documents are durable in the index (and dead letters
 * acknowledged), so the event log commits the offsets only then.
 */
import { type Span, SpanKind, SpanStatusCode } from "@opentelemetry/api";
import type {
  BatchHandler,
  ConsumedRecord,
  EventLog,
  ProducerRecord,
  RecordBatch,
} from "../../shared/event_log/event_log.ts";
import type { TweetCodec, TweetEvent } from "../../shared/events/tweet_event.ts";
import type { SearchIndex, TweetDocument } from "../../shared/search_index/search_index.ts";
import { extractTraceContext, tracer } from "../../shared/trace/tracing.ts";

/** Headers a dead letter carries besides the original ones. */
export const DEAD_LETTER_HEADERS = {
  errorCode: "dlq.error.code",
  errorMessage: "dlq.error.message",
  topic: "dlq.original.topic",
  partition: "dlq.original.partition",
  offset: "dlq.original.offset",
  failedAt: "dlq.failed.at",
} as const;

export interface TweetIndexerOptions {
  readonly eventLog: EventLog;
  readonly index: SearchIndex;
  readonly codec: TweetCodec;
  readonly deadLetterTopic: string;
  /** Called after every committed-to-be batch, for metrics and logs. */
  readonly onIndexed?: (result: { indexed: number; deadLettered: number }) => void;
}

export function toDocument(event: TweetEvent): TweetDocument {
  return {
    id: event.id.toString(),
    userId: event.userId.toString(),
    text: event.text ?? "",
    createdAt: event.createdAt,
    source: event.source,
  };
}

function deadLetter(record: ConsumedRecord, error: unknown): ProducerRecord {
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

export function createTweetIndexer(options: TweetIndexerOptions): BatchHandler {
  const { eventLog, index, codec, deadLetterTopic } = options;

  return async function indexBatch(batch: RecordBatch): Promise<void> {
    // The last event for an id wins within a batch, as it would across batches.
    const documents = new Map<string, TweetDocument>();
    const deadLetters: ProducerRecord[] = [];
    const spans: Span[] = [];
    for (const record of batch.records) {
      const span = tracer().startSpan(`${batch.topic} process`, {
        kind: SpanKind.CONSUMER,
        attributes: {
          "messaging.destination.name": batch.topic,
          "messaging.destination.partition.id": String(batch.partition),
          "messaging.kafka.offset": record.offset,
        },
      }, extractTraceContext(record.headers));
      spans.push(span);
      try {
        const document = toDocument(codec.decode(record.value));
        span.setAttribute("tweet.id", document.id);
        documents.set(document.id, document);
      } catch (error) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: "dead-lettered" });
        deadLetters.push(deadLetter(record, error));
      }
    }
    try {
      if (deadLetters.length > 0) await eventLog.send(deadLetterTopic, deadLetters);
      if (documents.size > 0) await index.upsert([...documents.values()]);
    } catch (error) {
      for (const span of spans) span.setStatus({ code: SpanStatusCode.ERROR });
      throw error;
    } finally {
      for (const span of spans) span.end();
    }
    options.onIndexed?.({ indexed: documents.size, deadLettered: deadLetters.length });
  };
}
