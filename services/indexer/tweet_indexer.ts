/**
 * The CQRS write side: turns a batch of tweet events into index documents.
 * Undecodable events go to the dead-letter topic with the reason in their
 * headers, so one bad event never blocks its partition. The batch handler
 * resolves only once the documents are durable in the index (and dead letters
 * acknowledged), so the event log commits the offsets only then.
 */
import { type Span, SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { deadLetter } from "../../shared/event_log/dead_letter.ts";
import type {
  BatchHandler,
  EventLog,
  ProducerRecord,
  RecordBatch,
} from "../../shared/event_log/event_log.ts";
import type { TweetCodec, TweetEvent } from "../../shared/events/tweet_event.ts";
import type { SearchIndex, TweetDocument } from "../../shared/search_index/search_index.ts";
import { extractTraceContext, type Tracer } from "../../shared/trace/tracing.ts";

export interface TweetIndexerOptions {
  readonly eventLog: EventLog;
  readonly index: SearchIndex;
  readonly codec: TweetCodec;
  readonly deadLetterTopic: string;
  /** Continues each tweet's trace. */
  readonly tracer: Tracer;
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

export function createTweetIndexer(options: TweetIndexerOptions): BatchHandler {
  const { eventLog, index, codec, deadLetterTopic, tracer } = options;

  return async function indexBatch(batch: RecordBatch): Promise<void> {
    // The last event for an id wins within a batch, as it would across batches.
    const documents = new Map<string, TweetDocument>();
    const deadLetters: ProducerRecord[] = [];
    const spans: Span[] = [];
    for (const record of batch.records) {
      const span = tracer.startSpan(`${batch.topic} process`, {
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
