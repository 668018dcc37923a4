import assert from "node:assert/strict";
import { MockTweets, mockUserId, VOCABULARY } from "./mock_tweets.ts";
import { SnowflakeIds } from "./tweet_ids.ts";

const keywords = ["Java", "Microservices", "Spring", "Kafka", "Elasticsearch"];

function generator(random?: () => number) {
  return new MockTweets({
    keywords,
    minWords: 5,
    maxWords: 15,
    users: 10,
    ids: new SnowflakeIds(1),
    ...(random === undefined ? {} : { random }),
  });
}

Deno.test("MockTweets writes 6 to 16 words with exactly one keyword after the middle", () => {
  const tweets = generator();
  const vocabulary = new Set<string>(VOCABULARY);
  for (let i = 0; i < 2000; i++) {
    const words = tweets.text().split(" ");
    assert.ok(words.length >= 6 && words.length <= 16, `length ${words.length}`);
    const keywordPositions = words.flatMap((word, index) => keywords.includes(word) ? [index] : []);
    assert.equal(keywordPositions.length, 1);
    assert.equal(keywordPositions[0], Math.floor((words.length - 1) / 2) + 1);
    assert.ok(words.every((word) => vocabulary.has(word) || keywords.includes(word)));
  }
});

Deno.test("MockTweets covers the shortest and the longest tweet", () => {
  assert.equal(generator(() => 0).text().split(" ").length, 6);
  assert.equal(generator(() => 0.999999).text().split(" ").length, 16);
});

Deno.test("MockTweets gives unique ids, authors from the pool and source mock", () => {
  const tweets = generator();
  const authors = new Set(Array.from({ length: 10 }, (_, index) => mockUserId(index)));
  const ids = new Set<bigint>();
  for (let i = 0; i < 5000; i++) {
    const tweet = tweets.next();
    ids.add(tweet.id);
    assert.ok(authors.has(tweet.userId));
    assert.equal(tweet.source, "mock");
  }
  assert.equal(ids.size, 5000);
});

Deno.test("mockUserId gives distinct positive 63-bit ids", () => {
  const ids = new Set(Array.from({ length: 100_000 }, (_, index) => mockUserId(index)));
  assert.equal(ids.size, 100_000);
  for (const id of ids) assert.ok(id >= 0n && id < 2n ** 63n);
});
