import assert from "node:assert/strict";
import { MemorySearchIndex } from "../../shared/search_index/memory_search_index.ts";
import type { TweetDocument } from "../../shared/search_index/search_index.ts";
import { createTestIssuer } from "../../shared/testing/test_issuer.ts";
import { startQueryService, superUser } from "./_testing.ts";

const V1 = "application/vnd.twitterapi.v1+json";
const V2 = "application/vnd.twitterapi.v2+json";
const PROBLEM = "application/problem+json";
const BIG_USER = "9223372036854775807";

const documents: TweetDocument[] = Array.from({ length: 25 }, (_, i) => ({
  id: String(1_000_000_000_000_000_000n + BigInt(i)),
  userId: i % 2 === 0 ? BIG_USER : "42",
  text: i % 5 === 0 ? `Lorem Kafka ipsum number ${i}` : `dolor Java sit ${i}`,
  createdAt: Date.UTC(2026, 10, 24, 10, 0, i),
  source: "mock",
}));

const issuer = await createTestIssuer();
// Representation tests: a super user sees every tweet (permissions_app_test.ts covers grants).
const reader = await superUser(issuer);

const index = new MemorySearchIndex();
await index.upsert(documents);
const query = await startQueryService({ issuer, index });
const app = query.service.app;

async function get(path: string, accept?: string, headers: Record<string, string> = reader) {
  const response = await app.request(path, {
    headers: accept === undefined ? headers : { ...headers, accept },
  });
  return { response, body: await response.json() };
}

Deno.test("query v1 search returns a flat array, newest first, paged by Link header", async () => {
  const { response, body } = await get("/api/v1/tweets?text=kafka&size=2");
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), V1);
  assert.equal(response.headers.get("x-total-count"), "5");
  assert.deepEqual(body, [
    {
      id: "1000000000000000020",
      userId: BIG_USER,
      text: "Lorem Kafka ipsum number 20",
      createdAt: "2026-11-24T10:00:20.000Z",
    },
    {
      id: "1000000000000000015",
      userId: "42",
      text: "Lorem Kafka ipsum number 15",
      createdAt: "2026-11-24T10:00:15.000Z",
    },
  ]);
  const link = response.headers.get("link") ?? "";
  assert.match(link, /<\/api\/v2\/tweets\?text=kafka&size=2>; rel="successor-version"/);
  const next = /<([^>]+)>; rel="next"/.exec(link)?.[1];
  assert.ok(next !== undefined && next.startsWith("/api/v1/tweets?text=kafka&size=2&cursor="));
  const second = await get(next);
  assert.deepEqual(second.body.map((tweet: { id: string }) => tweet.id), [
    "1000000000000000010",
    "1000000000000000005",
  ]);
});

Deno.test("query v1 responses announce their deprecation", async () => {
  const { response } = await get("/api/v1/tweets/1000000000000000003");
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("deprecation"), `@${Date.UTC(2026, 10, 24) / 1000}`);
  assert.equal(
    response.headers.get("link"),
    '</api/v2/tweets/1000000000000000003>; rel="successor-version"',
  );
});

Deno.test("query v2 search returns an envelope with author, links and paging", async () => {
  const { response, body } = await get(`/api/v2/tweets?userId=${BIG_USER}&size=1`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), V2);
  assert.equal(response.headers.get("deprecation"), null);
  assert.deepEqual(body.data, [{
    id: "1000000000000000024",
    text: "dolor Java sit 24",
    createdAt: "2026-11-24T10:00:24.000Z",
    source: "mock",
    author: { id: BIG_USER, links: { tweets: `/api/v2/tweets?userId=${BIG_USER}` } },
    links: { self: "/api/v2/tweets/1000000000000000024" },
  }]);
  assert.equal(body.page.size, 1);
  assert.equal(body.page.total, 13);
  assert.equal(typeof body.page.nextCursor, "string");
  assert.equal(body.links.self, `/api/v2/tweets?userId=${BIG_USER}&size=1`);
  assert.equal(
    body.links.next,
    `/api/v2/tweets?userId=${BIG_USER}&size=1&cursor=${body.page.nextCursor}`,
  );
});

Deno.test("query v2 paging visits every match exactly once and ends with null links", async () => {
  const seen: string[] = [];
  let path: string | null = "/api/v2/tweets?size=7";
  while (path !== null) {
    const { body } = await get(path);
    assert.equal(body.page.total, 25);
    seen.push(...body.data.map((tweet: { id: string }) => tweet.id));
    path = body.links.next;
  }
  assert.equal(seen.length, 25);
  assert.equal(new Set(seen).size, 25);
});

Deno.test("query v2 by id links itself and the author's tweets", async () => {
  const { response, body } = await get("/api/v2/tweets/1000000000000000001");
  assert.equal(response.status, 200);
  assert.equal(body.id, "1000000000000000001");
  assert.equal(body.author.id, "42");
  assert.equal(body.links.self, "/api/v2/tweets/1000000000000000001");
});

Deno.test("query /api/tweets chooses the version by media type", async () => {
  for (
    const [accept, type] of [
      [V1, V1],
      [V2, V2],
      ["application/json", V2],
      [undefined, V2],
      ["*/*", V2],
      [`${V1};q=0.9, ${V2};q=0.1`, V1],
    ] as const
  ) {
    const { response, body } = await get("/api/tweets?text=kafka", accept);
    assert.equal(response.status, 200, `${accept}`);
    assert.equal(response.headers.get("content-type"), type, `${accept}`);
    assert.equal(response.headers.get("vary"), "Accept");
    assert.equal(Array.isArray(body), type === V1, `${accept}`);
  }
  const { response } = await get("/api/tweets/1000000000000000000", V1);
  assert.equal(response.headers.get("content-type"), V1);
  assert.equal(
    response.headers.get("link"),
    `</api/tweets/1000000000000000000>; rel="successor-version"; type="${V2}"`,
  );
});

Deno.test("query answers an unknown vendor version with 406 problem+json", async () => {
  for (
    const path of [
      "/api/tweets",
      "/api/tweets/1000000000000000000",
      "/api/v1/tweets",
      "/api/v2/tweets/1000000000000000000",
    ]
  ) {
    const { response, body } = await get(path, "application/vnd.twitterapi.v3+json");
    assert.equal(response.status, 406, path);
    assert.equal(response.headers.get("content-type"), PROBLEM);
    assert.equal(body.type, "urn:twitterapi:problem:not-acceptable");
    assert.equal(body.status, 406);
  }
});

Deno.test("query answers bad parameters with 400 problem+json naming them", async () => {
  for (
    const [path, parameter] of [
      ["/api/v1/tweets?text=", "text"],
      ["/api/v2/tweets?size=0", "size"],
      ["/api/v2/tweets?size=101", "size"],
      ["/api/tweets?from=not-a-date", "from"],
      ["/api/v2/tweets?cursor=bogus", "cursor"],
      ["/api/v2/tweets?userId=abc", "userId"],
      ["/api/v1/tweets/not-a-number", "id"],
      ["/api/v2/tweets/99999999999999999999", "id"],
    ] as const
  ) {
    const { response, body } = await get(path);
    assert.equal(response.status, 400, path);
    assert.equal(response.headers.get("content-type"), PROBLEM);
    assert.equal(body.type, "urn:twitterapi:problem:invalid-parameter");
    assert.equal(body.errors[0].parameter, parameter, path);
    assert.match(body.detail, new RegExp(`^${parameter}: `));
    assert.equal(body.instance, path.split("?")[0]);
    assert.equal(body.stack, undefined);
  }
});

Deno.test("query answers an unknown tweet with 404 problem+json", async () => {
  for (const version of ["v1", "v2"]) {
    const { response, body } = await get(`/api/${version}/tweets/7`);
    assert.equal(response.status, 404);
    assert.equal(response.headers.get("content-type"), PROBLEM);
    assert.equal(body.type, "urn:twitterapi:problem:not-found");
    assert.equal(body.detail, "No tweet has the id 7");
  }
  const { response } = await get("/api/v3/tweets");
  assert.equal(response.status, 404);
});

Deno.test("query filters by time range, inclusive", async () => {
  const { body } = await get(
    "/api/v2/tweets?from=2026-11-24T10:00:03Z&to=2026-11-24T10:00:05Z",
  );
  assert.deepEqual(body.data.map((tweet: { id: string }) => tweet.id), [
    "1000000000000000005",
    "1000000000000000004",
    "1000000000000000003",
  ]);
});

Deno.test("query answers only requests with a valid token for the query audience", async () => {
  const anonymous = await get("/api/v2/tweets?text=kafka", undefined, {});
  assert.equal(anonymous.response.status, 401);
  assert.equal(anonymous.response.headers.get("content-type"), PROBLEM);
  assert.equal(anonymous.response.headers.get("www-authenticate"), 'Bearer realm="twitterapi"');

  const streamToken = await issuer.authorization({ audience: "stream" });
  const otherAudience = await get("/api/v1/tweets/1000000000000000000", undefined, streamToken);
  assert.equal(otherAudience.response.status, 401);
  assert.match(
    otherAudience.response.headers.get("www-authenticate") ?? "",
    /error="invalid_token".*does not include query/,
  );

  const expired = await issuer.authorization({ audience: "query", lifetimeSec: -120 });
  assert.equal((await get("/api/tweets", undefined, expired)).response.status, 401);
  const health = await app.request("/health");
  assert.equal(health.status, 200);
  await health.body?.cancel();
});

Deno.test({
  name: "query app_test releases its service",
  sanitizeResources: false,
  fn: async () => {
    await query[Symbol.asyncDispose]();
  },
});

Deno.test("query streaming search sends the newest matches, then each newer tweet once, as it is indexed", async () => {
  const streamIndex = new MemorySearchIndex();
  await using streaming = await startQueryService({ issuer, index: streamIndex });
  await streamIndex.upsert(documents);
  const response = await streaming.service.app.request("/api/v2/tweets/stream?text=kafka&size=3", {
    headers: reader,
  });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/event-stream");
  const reader_ = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  const events: { id: string; text: string }[] = [];
  let buffer = "";
  const readUntil = async (count: number) => {
    while (events.length < count) {
      const { value, done } = await reader_.read();
      if (done) throw new Error("the stream ended");
      buffer += value;
      const parts = buffer.split("\n\n");
      buffer = parts.pop()!;
      for (const part of parts) {
        const data = /^data: (.*)$/m.exec(part)?.[1];
        if (/^event: tweet$/m.test(part) && data !== undefined) events.push(JSON.parse(data));
      }
    }
  };
  // The newest page, oldest first: tweets 10, 15, 20 of the fixture.
  await readUntil(3);
  assert.deepEqual(events.map((event) => event.text), [
    "Lorem Kafka ipsum number 10",
    "Lorem Kafka ipsum number 15",
    "Lorem Kafka ipsum number 20",
  ]);
  const later = Date.UTC(2026, 10, 24, 11);
  await streamIndex.upsert([
    { id: "2", userId: "42", text: "Kafka later", createdAt: later, source: "mock" },
    { id: "3", userId: "42", text: "Java later", createdAt: later, source: "mock" },
  ]);
  await readUntil(4);
  assert.equal(events[3]!.text, "Kafka later");
  await streamIndex.upsert([
    { id: "4", userId: "42", text: "Kafka same time", createdAt: later, source: "mock" },
  ]);
  await readUntil(5);
  assert.equal(events[4]!.text, "Kafka same time");
  assert.equal(new Set(events.map((event) => event.id)).size, 5);
  await reader_.cancel();
});
