/**
 * Turns a batch of word-count events into one write of the store.
 * Undecodable or invalid events go to the dead-letter topic, so one bad
 * event never blocks its partition. The handler resolves only once the
 * batch is committed in the database (and dead letters acknowledged), so the
 * event log commits the offsets only then; a redelivered batch is harmless.
 */
import { deadLetter } from "../../shared/event_log/dead_letter.ts";
import type {
  BatchHandler,
  EventLog,
  ProducerRecord,
  RecordBatch,
} from "../../shared/event_log/event_log.ts";
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

export interface WordCountConsumerOptions {
  readonly eventLog: EventLog;
  readonly store: WordCountStore;
  readonly codec: WordCountCodec;
  readonly deadLetterTopic: string;
  /** Called after every batch that is about to be committed, for metrics and logs. */
  readonly onStored?: (result: { stored: number; deadLettered: number }) => void;
}

export function createWordCountConsumer(options: WordCountConsumerOptions): BatchHandler {
  const { eventLog, store, codec, deadLetterTopic } = options;

  return async function storeBatch(batch: RecordBatch): Promise<void> {
    const updates: WordCountUpdate[] = [];
    const deadLetters: ProducerRecord[] = [];
    for (const record of batch.records) {
      try {
        updates.push(toUpdate(codec.decode(record.value)));
      } catch (error) {
        deadLetters.push(deadLetter(record, error));
      }
    }
    if (deadLetters.length > 0) await eventLog.send(deadLetterTopic, deadLetters);
    await store.record(updates);
    options.onStored?.({ stored: updates.length, deadLettered: deadLetters.length });
  };
}
