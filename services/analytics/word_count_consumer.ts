/**
 * Word-count events become one write of the store per batch. Undecodable or
 * invalid events are dead-lettered by the consumer kit
 * (`shared/event_log/consumer_service.ts`), so one bad event never blocks its
 * partition; the batch commits only once the write is durable, and a
 * redelivered batch is harmless.
 */
import type { Decoded } from "../../shared/event_log/consumer_service.ts";
import type { ConsumedRecord } from "../../shared/event_log/event_log.ts";
import { inRecordsSpan } from "../../shared/event_log/traced_event_log.ts";
import type { WordCountCodec, WordCountEvent } from "../../shared/events/word_count_event.ts";
import { tokenize } from "../../shared/text/tokenize.ts";
import type { WordCountStore, WordCountUpdate } from "./word_count_store.ts";

/** A decodable event the store cannot take: not a normalised word, or a count out of range. */
export class InvalidWordCountError extends Error {
  readonly code = "invalid-word-count";
  constructor(reason: string) {
    super(`Cannot store the word-count event: ${reason}`);
    this.name = "InvalidWordCountError";
  }
}

/** The latest epoch millisecond a JavaScript date holds. */
const MAX_TIME_MS = 8.64e15;

export function toUpdate(event: WordCountEvent): WordCountUpdate {
  const [token, ...rest] = tokenize(event.word);
  if (token !== event.word || rest.length > 0) {
    throw new InvalidWordCountError(
      `the word ${JSON.stringify(event.word)} is not one normalised token`,
    );
  }
  if (event.count < 0n || event.count > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new InvalidWordCountError(`the count ${event.count} is not from 0 to 2^53 - 1`);
  }
  if (!Number.isSafeInteger(event.updatedAt) || Math.abs(event.updatedAt) > MAX_TIME_MS) {
    throw new InvalidWordCountError(`the time ${event.updatedAt} is not a valid epoch millisecond`);
  }
  return { word: event.word, count: Number(event.count), updatedAt: event.updatedAt };
}

/** The update a word-count event makes; throws for one that is undecodable or invalid. */
export function decodeWordCount(codec: WordCountCodec, record: ConsumedRecord): WordCountUpdate {
  return toUpdate(codec.decode(record.value));
}

/** Writes a batch's updates in one transaction of the store, in every word count's trace. */
export async function storeWordCounts(
  store: WordCountStore,
  decoded: readonly Decoded<WordCountUpdate>[],
): Promise<number> {
  await inRecordsSpan(
    decoded.map(({ record }) => record),
    "store word counts",
    { "word_counts.updates": decoded.length },
    () => store.record(decoded.map(({ value }) => value)),
  );
  return decoded.length;
}
