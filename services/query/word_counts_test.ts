/**
 * Word counts in search responses, from a stub analytics or wordcount
 * service found through discovery: present, not counted yet, and
 * unavailable when the source is down (the search still answers).
 */
import assert from "node:assert/strict";
import { StaticDiscovery } from "../../shared/discovery/service_discovery.ts";
import { MemorySearchIndex } from "../../shared/search_index/memory_search_index.ts";
import { startTestServer, type TestServer } from "../../shared/testing/http_servers.ts";
import { createTestIssuer } from "../../shared/testing/test_issuer.ts";
import realm from "../../shared/auth/twitterapi-realm.json" with { type: "json" };
import { loadConfig } from "../config.ts";
import { fixedTokens, startQueryService, superUser } from "./_testing.ts";
import {
  countedWords,
  MAX_COUNTED_WORDS,
  RemoteWordCounts,
  type RemoteWordCountsOptions,
  wordCountsHeader,
} from "./word_counts.ts";
import type { Logger } from "../../shared/log/log.ts";
import type { BalancedClient } from "../../shared/http/balanced_client.ts";

const V1 = "application/vnd.twitterapi.v1+json";
const issuer = await createTestIssuer();
const reader = await superUser(issuer);
const COUNTS: Record<string, number> = { kafka: 1234, streams: 0 };

/** A stub of the source: the analytics or wordcount word endpoint over `COUNTS`. */
function stubSource(source: "analytics" | "wordcount"): TestServer {
  const prefix = source === "analytics" ? "/api/v1/analytics/words/" : "/api/v1/words/";
  return startTestServer((request) => {
    const path = new URL(request.url).pathname;
    if (!path.startsWith(prefix)) return new Response("no route", { status: 404 });
    const word = decodeURIComponent(path.slice(prefix.length));
    const count = COUNTS[word];
    if (count === undefined) {
      return source === "analytics"
        ? Response.json({ type: "urn:twitterapi:problem:not-found" }, { status: 404 })
        : Response.json({ word, count: 0, windows: {} });
    }
    return Response.json({ word, count, updatedAt: "2026-11-24T10:00:00.000Z" });
  });
}

async function setUp(source: "analytics" | "wordcount", baseUrl: string) {
  const index = new MemorySearchIndex();
  await index.upsert([{
    id: "1",
    userId: "2",
    text: "Kafka streams and unicorns",
    createdAt: Date.UTC(2026, 10, 24),
    source: "mock",
  }]);
  const tokens = fixedTokens();
  const query = await startQueryService({
    issuer,
    index,
    env: { QUERY_WORD_COUNTS_FROM: source, QUERY_WORD_COUNTS_TIMEOUT_MS: "2000" },
    discovery: new StaticDiscovery([{
      service: source,
      instanceId: `${source}-1`,
      baseUrl,
      version: "test",
      metadata: {},
    }]),
    tokens,
  });
  const get = async (path: string, accept?: string) => {
    const response = await query.service.app.request(path, {
      headers: accept === undefined ? reader : { ...reader, accept },
    });
    return { response, body: await response.json() };
  };
  return { query, get, tokens };
}

Deno.test("search responses carry the analytics count of each searched word", async () => {
  await using upstream = stubSource("analytics");
  const { query, get, tokens } = await setUp("analytics", upstream.url);
  await using _ = query;
  const { response, body } = await get("/api/v2/tweets?text=Kafka%20STREAMS%20unicorns%20kafka");
  assert.equal(response.status, 200);
  assert.equal(body.page.total, 1);
  // An unknown word to analytics is "not counted yet" (null), not zero.
  assert.deepEqual(body.wordCounts, {
    status: "ok",
    counts: { kafka: 1234, streams: 0, unicorns: null },
  });
  const v1 = await get("/api/v1/tweets?text=kafka%20unicorns", V1);
  assert.equal(v1.response.status, 200);
  assert.equal(v1.response.headers.get("word-counts"), "kafka=1234, unicorns=none");
  assert.equal(v1.body.length, 1);
  // The source was called with the service's own token, one call per word.
  const calls = upstream.requests.filter((request) => request.path.includes("/words/"));
  assert.deepEqual(
    calls.map((request) => request.path).sort(),
    [
      "/api/v1/analytics/words/kafka",
      "/api/v1/analytics/words/kafka",
      "/api/v1/analytics/words/streams",
      "/api/v1/analytics/words/unicorns",
      "/api/v1/analytics/words/unicorns",
    ],
  );
  assert.ok(
    calls.every((request) => request.headers.get("authorization") === "Bearer query-service-token"),
  );
  assert.equal(tokens.calls, 2);
  // No text, no counts.
  const plain = await get("/api/v2/tweets");
  assert.equal(plain.body.wordCounts, undefined);
  assert.equal((await get("/api/v1/tweets", V1)).response.headers.get("word-counts"), null);
});

Deno.test("search responses take counts from wordcount when configured", async () => {
  await using upstream = stubSource("wordcount");
  const { query, get } = await setUp("wordcount", upstream.url);
  await using _ = query;
  const { body } = await get("/api/v2/tweets?text=kafka%20unicorns");
  assert.deepEqual(body.wordCounts, { status: "ok", counts: { kafka: 1234, unicorns: 0 } });
  assert.ok(upstream.requests.some((request) => request.path === "/api/v1/words/kafka"));
});

Deno.test("search still answers when the word-count source is down, marking counts unavailable", async () => {
  const upstream = stubSource("analytics");
  const baseUrl = upstream.url;
  await upstream.shutdown();
  const { query, get } = await setUp("analytics", baseUrl);
  await using _ = query;
  for (let attempt = 0; attempt < 8; attempt++) {
    const { response, body } = await get("/api/v2/tweets?text=kafka");
    assert.equal(response.status, 200);
    assert.equal(body.page.total, 1);
    assert.deepEqual(body.wordCounts, { status: "unavailable" });
  }
  const v1 = await get("/api/v1/tweets?text=kafka", V1);
  assert.equal(v1.response.status, 200);
  assert.equal(v1.response.headers.get("word-counts"), "unavailable");

  // A source answering 5xx is unavailable too; so is no instance at all.
  await using failing = startTestServer(() => new Response("boom", { status: 500 }));
  const broken = await setUp("analytics", failing.url);
  await using __ = broken.query;
  for (let attempt = 0; attempt < 10; attempt++) {
    assert.deepEqual((await broken.get("/api/v2/tweets?text=kafka")).body.wordCounts, {
      status: "unavailable",
    });
  }
  // The breaker opened after five failures: later searches did not call the source.
  assert.ok(failing.requests.length <= 5, `${failing.requests.length} calls reached the source`);
  const lonely = await startQueryService({ issuer, index: new MemorySearchIndex() });
  await using ___ = lonely;
  const response = await lonely.service.app.request("/api/v2/tweets?text=kafka", {
    headers: reader,
  });
  assert.deepEqual((await response.json()).wordCounts, { status: "unavailable" });
});

Deno.test("word counts: the counted words and the v1 header", () => {
  assert.deepEqual(countedWords("Kafka, kafka STREAMS!"), ["kafka", "streams"]);
  const many = Array.from({ length: 20 }, (_, i) => `w${i}`).join(" ");
  assert.equal(countedWords(many).length, MAX_COUNTED_WORDS);
  assert.equal(
    wordCountsHeader({ status: "ok", counts: { "caf\u00e9": 3, kafka: null } }),
    "caf%C3%A9=3, kafka=none",
  );
  assert.equal(wordCountsHeader({ status: "unavailable" }), "unavailable");
});

Deno.test("the query service's default client secret is the realm file's development secret", () => {
  const client = realm.clients.find((candidate) => candidate.clientId === "query-service");
  assert.ok(client !== undefined && "secret" in client);
  const config = loadConfig({});
  assert.equal(config.query.clientId, client.clientId);
  assert.equal(config.query.clientSecret, client.secret);
  const audiences = client.protocolMappers.map((mapper) =>
    mapper.config["included.custom.audience"]
  );
  assert.deepEqual(audiences.sort(), ["analytics", "config", "registry", "wordcount"]);
});

Deno.test("a source not answering yet at start is logged at info; past the start-up grace it warns", async () => {
  const lines: string[] = [];
  const record = (level: string) => (message: string) => void lines.push(`${level} ${message}`);
  const logger = { info: record("info"), warn: record("warn"), error: record("error") };
  const options = (startupGraceMs: number): RemoteWordCountsOptions => ({
    source: "analytics",
    discovery: new StaticDiscovery([]),
    client: {} as BalancedClient, // never reached: no instance is known
    tokens: fixedTokens(),
    timeoutMs: 1000,
    breaker: {
      errorThresholdPercentage: 100,
      volumeThreshold: 100,
      resetTimeoutMs: 1000,
      rollingCountTimeoutMs: 1000,
    },
    logger: logger as unknown as Logger,
    startupGraceMs,
  });
  const starting = new RemoteWordCounts(options(30_000));
  assert.deepEqual(await starting.countsOf(["kafka"]), { status: "unavailable" });
  starting.shutdown();
  assert.deepEqual(lines, ["info Word counts not available yet from {source} (starting): {error}"]);

  lines.length = 0;
  const down = new RemoteWordCounts(options(0));
  assert.deepEqual(await down.countsOf(["kafka"]), { status: "unavailable" });
  assert.deepEqual(await down.countsOf(["kafka"]), { status: "unavailable" });
  down.shutdown();
  // Once per kind of failure.
  assert.deepEqual(lines, ["warn Word counts unavailable from {source}: {error}"]);
});

Deno.test("a source answering 503 while it starts never opens its circuit: its counts come once it is up", async () => {
  let up = false;
  await using upstream = startTestServer((request) =>
    up
      ? Response.json({ word: "kafka", count: 7, updatedAt: "2026-11-24T10:00:00.000Z" })
      : Response.json({ path: new URL(request.url).pathname }, {
        status: 503,
        headers: { "retry-after": "1" },
      })
  );
  const { query, get } = await setUp("analytics", upstream.url);
  await using _ = query;
  const searches = 10;
  for (let attempt = 0; attempt < searches; attempt++) {
    const { body } = await get("/api/v2/tweets?text=kafka");
    assert.deepEqual(body.wordCounts, { status: "unavailable" });
  }
  // Every search asked the source: its circuit stayed closed.
  assert.ok(upstream.requests.length >= searches, `${upstream.requests.length} calls`);
  up = true;
  const { body } = await get("/api/v2/tweets?text=kafka");
  assert.deepEqual(body.wordCounts, { status: "ok", counts: { kafka: 7 } });
});
