import assert from "node:assert/strict";
import { EventDecodeError } from "./single_object.ts";
import { loadTweetCodec } from "./tweet_event.ts";
import { loadWordCountCodec, type WordCountEvent } from "./word_count_event.ts";

Deno.test("WordCountCodec round-trips counts beyond 2^53 and unicode words", async () => {
  const codec = await loadWordCountCodec();
  const events: WordCountEvent[] = [
    { word: "kafka", count: 1n, updatedAt: 1_700_000_000_123 },
    { word: "\u00e9t\u00e9", count: 9_007_199_254_740_993n, updatedAt: 0 },
    { word: "\u65e5\u672c\u8a9e", count: 0n, updatedAt: Date.UTC(2026, 10, 24) },
  ];
  for (const event of events) {
    assert.deepEqual({ ...codec.decode(codec.encode(event)) }, event);
  }
});

Deno.test("WordCountCodec refuses a tweet event: the fingerprints differ", async () => {
  const words = await loadWordCountCodec();
  const tweets = await loadTweetCodec();
  const tweet = tweets.encode({
    id: 1n,
    userId: 2n,
    text: "hello",
    createdAt: 0,
    source: "mock",
  });
  assert.throws(() => words.decode(tweet), EventDecodeError);
});
