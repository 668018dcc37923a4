/**
 * The CQRS write side: tweet events become index documents, one bulk write
 * per batch. Decoding, dead-lettering and tracing are the consumer kit's
 * (`shared/event_log/consumer_service.ts`); this is what is the indexer's own.
 */
import type { Decoded } from "../../shared/event_log/consumer_service.ts";
import type { ConsumedRecord } from "../../shared/event_log/event_log.ts";
import { inRecordsSpan, recordSpan } from "../../shared/event_log/traced_event_log.ts";
import type { TweetCodec, TweetEvent } from "../../shared/events/tweet_event.ts";
import type { SearchIndex, TweetDocument } from "../../shared/search_index/search_index.ts";

export function toDocument(event: TweetEvent): TweetDocument {
  return {
    id: event.id.toString(),
    userId: event.userId.toString(),
    text: event.text ?? "",
    createdAt: event.createdAt,
    source: event.source,
  };
}

/** The document of a tweet event; throws `EventDecodeError` for a record that is not one. */
export function decodeTweet(codec: TweetCodec, record: ConsumedRecord): TweetDocument {
  return toDocument(codec.decode(record.value));
}

/**
 * Writes a batch's documents in one bulk request, in every tweet's trace;
 * resolves once they are durable, with the number of documents written.
 */
export async function indexTweets(
  index: SearchIndex,
  decoded: readonly Decoded<TweetDocument>[],
): Promise<number> {
  // The last event for an id wins within a batch, as it would across batches.
  const documents = new Map<string, TweetDocument>();
  for (const { record, value } of decoded) {
    recordSpan(record)?.setAttribute("tweet.id", value.id);
    documents.set(value.id, value);
  }
  if (documents.size === 0) return 0;
  await inRecordsSpan(
    decoded.map(({ record }) => record),
    "index tweets",
    { "index.documents": documents.size },
    () => index.upsert([...documents.values()]),
  );
  return documents.size;
}
