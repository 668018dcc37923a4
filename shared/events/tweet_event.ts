/**
 * The tweet event: its TypeScript shape and the codec every producer and
 * consumer of tweet events uses (writer and reader schema: tweet.v2.avsc).
 */

import type { Type } from "avsc";
import { parseEventSchema, SingleObjectCodec } from "./single_object.ts";

export interface TweetEvent {
  id: bigint;
  userId: bigint;
  text: string | null;
  /** Epoch milliseconds, UTC. */
  createdAt: number;
  /** Where the tweet came from, e.g. `mock`; "unknown" for v1 events. */
  source: string;
}

export interface TweetSchemas {
  readonly v1: Type;
  readonly v2: Type;
}

// Read on demand, never at import, so importing needs no --allow-read and does
// no I/O; `deno compile --include shared/events/schemas` embeds the files.
async function readSchema(url: URL): Promise<Type> {
  return parseEventSchema(JSON.parse(await Deno.readTextFile(url)));
}

/** Every tweet schema version kept in the repo, parsed. */
export async function loadTweetSchemas(): Promise<TweetSchemas> {
  const [v1, v2] = await Promise.all([
    readSchema(new URL("./schemas/tweet.v1.avsc", import.meta.url)),
    readSchema(new URL("./schemas/tweet.v2.avsc", import.meta.url)),
  ]);
  return { v1, v2 };
}

/** Encodes tweet events with the current schema; decodes every known version. */
export type TweetCodec = SingleObjectCodec<TweetEvent>;

/** Writes v2 events; reads v1 and v2 events as v2 (a v1 event gets source "unknown"). */
export async function loadTweetCodec(): Promise<TweetCodec> {
  const { v1, v2 } = await loadTweetSchemas();
  return new SingleObjectCodec<TweetEvent>(v2, [v1, v2]);
}
