/**
 * End to end in one process, on the embedded adapters: the stream service
 * produces a bounded set of tweets, the indexer indexes them, and the query
 * API finds every one of them by text, by user and by id, exactly once.
 */
import assert from "node:assert/strict";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import type { Hono } from "hono";
import { MemoryEventLog } from "../shared/event_log/memory_event_log.ts";
import { loadTweetCodec, type TweetEvent } from "../shared/events/tweet_event.ts";
import { MemorySearchIndex } from "../shared/search_index/memory_search_index.ts";
import { testContext } from "../shared/testing/test_context.ts";
import { waitFor } from "../shared/testing/wait.ts";
import { configureTracing } from "../shared/trace/tracing.ts";
import { tokenize } from "../shared/text/tokenize.ts";
import { loadConfig } from "./config.ts";
import { createIndexerService } from "./indexer/main.ts";
import { startQueryService, superUser } from "./query/_testing.ts";
import { createTestIssuer } from "../shared/testing/test_issuer.ts";
import { createStreamService } from "./stream/main.ts";

const COUNT = 600;
const V2 = "application/vnd.twitterapi.v2+json";

interface TweetV2 {
  id: string;
  text: string;
  createdAt: string;
  author: { id: string };
}

const issuer = await createTestIssuer();
// The pipeline is checked against every tweet: a super user sees them all.
const readerHeaders = await superUser(issuer);

async function getJson(app: Hono, path: string) {
  const response = await app.request(path, { headers: { accept: V2, ...readerHeaders } });
  assert.equal(response.status, 200, path);
  return await response.json();
}

/** Every tweet a v2 search returns, following `links.next` to the end. */
async function searchAll(app: Hono, query: string): Promise<TweetV2[]> {
  const found: TweetV2[] = [];
  let path: string | null = `/api/v2/tweets?size=100&${query}`;
  while (path !== null) {
    const body: { data: TweetV2[]; links: { next: string | null } } = await getJson(app, path);
    found.push(...body.data);
    path = body.links.next;
  }
  return found;
}

function assertExactlyOnce(found: TweetV2[], expected: TweetEvent[], what: string): void {
  const ids = found.map((tweet) => tweet.id);
  assert.equal(new Set(ids).size, ids.length, `${what}: no duplicates`);
  assert.deepEqual(
    new Set(ids),
    new Set(expected.map((tweet) => tweet.id.toString())),
    `${what}: exactly the expected tweets`,
  );
}

Deno.test("pipeline makes every produced tweet searchable by text, user and id, once", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const config = loadConfig({
    STREAM_COUNT: String(COUNT),
    STREAM_RATE_PER_SECOND: "3000",
    STREAM_USERS: "20",
    INDEXER_MAX_BATCH_SIZE: "50",
  });
  const eventLog = new MemoryEventLog();
  const index = new MemorySearchIndex();
  const codec = await loadTweetCodec();
  const stream = createStreamService({
    config,
    context: testContext("stream"),
    eventLog,
    codec,
    verifier: issuer.verifier("stream"),
  });
  const indexer = createIndexerService({
    config,
    context: testContext("indexer"),
    eventLog,
    index,
    codec,
  });
  await using running = await startQueryService({ issuer, index });
  const query = running.service;
  await indexer.start();
  await stream.start();

  // The known set: everything the stream acknowledged, read back from the log.
  const produced: TweetEvent[] = [];
  const traceOf = new Map<string, string>();
  const reader = await eventLog.consume(
    { groupId: "e2e-reader", topics: ["twitter-topic"] },
    (batch) => {
      for (const record of batch.records) {
        const tweet = codec.decode(record.value);
        produced.push(tweet);
        traceOf.set(tweet.id.toString(), record.headers.traceparent!.slice(3, 35));
      }
      return Promise.resolve();
    },
  );
  await waitFor(`${COUNT} produced tweets`, () => Promise.resolve(produced.length === COUNT));
  await waitFor(
    `${COUNT} searchable tweets`,
    async () => (await getJson(query.app, "/api/v2/tweets?size=1")).page.total === COUNT,
  );

  const everything = await searchAll(query.app, "");
  assertExactlyOnce(everything, produced, "all tweets");
  const times = everything.map((tweet) => Date.parse(tweet.createdAt));
  assert.deepEqual(times, [...times].sort((a, b) => b - a), "newest first");

  for (const keyword of config.stream.keywords) {
    const expected = produced.filter((tweet) =>
      tokenize(tweet.text).includes(keyword.toLowerCase())
    );
    assert.ok(expected.length > 0, keyword);
    assertExactlyOnce(await searchAll(query.app, `text=${keyword}`), expected, `text=${keyword}`);
  }

  const users = [...new Set(produced.map((tweet) => tweet.userId))];
  for (const userId of users) {
    const expected = produced.filter((tweet) => tweet.userId === userId);
    assertExactlyOnce(await searchAll(query.app, `userId=${userId}`), expected, `user ${userId}`);
  }

  for (const tweet of produced) {
    const v2 = await getJson(query.app, `/api/v2/tweets/${tweet.id}`);
    assert.equal(v2.text, tweet.text);
    assert.equal(v2.author.id, tweet.userId.toString());
    assert.equal(v2.createdAt, new Date(tweet.createdAt).toISOString());
    const v1 =
      await (await query.app.request(`/api/v1/tweets/${tweet.id}`, { headers: readerHeaders }))
        .json();
    assert.deepEqual(v1, {
      id: tweet.id.toString(),
      userId: tweet.userId.toString(),
      text: tweet.text,
      createdAt: new Date(tweet.createdAt).toISOString(),
    });
  }

  // One tweet is one trace: the indexer's span continues the producer's.
  const indexed = exporter.getFinishedSpans().filter((span) =>
    span.name === "process twitter-topic"
  );
  assert.equal(indexed.length, COUNT);
  for (const span of indexed) {
    assert.equal(span.spanContext().traceId, traceOf.get(String(span.attributes["tweet.id"])));
  }

  await reader.stop();
  await stream.stop();
  await indexer.stop();
  await eventLog.close();
  configureTracing();
});
