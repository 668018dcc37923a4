/**
 * The word-count event of the analytics topic: the wordcount service writes
 * it, the analytics service reads it (writer and reader schema:
 * word_count.v1.avsc). Keyed by the word.
 */
import { parseEventSchema, SingleObjectCodec } from "./single_object.ts";

export interface WordCountEvent {
  /** The word, as `tokenize()` gives it. */
  word: string;
  /** All-time count after this update. */
  count: bigint;
  /** Creation time of the newest tweet counted, epoch milliseconds, UTC. */
  updatedAt: number;
}

export type WordCountCodec = SingleObjectCodec<WordCountEvent>;

/** Reads the schema on demand (see `loadTweetCodec`), so importing does no I/O. */
export async function loadWordCountCodec(): Promise<WordCountCodec> {
  const schema = parseEventSchema(
    JSON.parse(
      await Deno.readTextFile(new URL("./schemas/word_count.v1.avsc", import.meta.url)),
    ),
  );
  return new SingleObjectCodec<WordCountEvent>(schema, [schema]);
}
