/**
 * The query service's per-document permissions, end to end through the
 * HTTP API: grants by tweet, by author and on everything, on every read path,
 * with totals and paging; the permission API; development grants.
 */
import assert from "node:assert/strict";
import { connectPostgres, uniqueSchema } from "../../shared/database/database_contract.ts";
import { PostgresDatabase } from "../../shared/database/postgres_database.ts";
import { mockUserId } from "../../shared/events/mock_users.ts";
import { MemorySearchIndex } from "../../shared/search_index/memory_search_index.ts";
import type { TweetDocument } from "../../shared/search_index/search_index.ts";
import { createTestIssuer } from "../../shared/testing/test_issuer.ts";
import { waitFor } from "../../shared/testing/wait.ts";
import { startQueryService, superUser } from "./_testing.ts";
import { DEV_READABLE_AUTHORS, realmUserId } from "./dev_grants.ts";

const V1 = "application/vnd.twitterapi.v1+json";
const V2 = "application/vnd.twitterapi.v2+json";
const ALICE_AUTHOR = "111";
const BOB_AUTHOR = "222";

// 30 tweets: even ones by author 111, odd ones by author 222; every third mentions kafka.
const documents: TweetDocument[] = Array.from({ length: 30 }, (_, i) => ({
  id: String(2_000_000_000_000_000_000n + BigInt(i)),
  userId: i % 2 === 0 ? ALICE_AUTHOR : BOB_AUTHOR,
  text: i % 3 === 0 ? `kafka number ${i}` : `java number ${i}`,
  createdAt: Date.UTC(2026, 10, 24, 10, 0, i),
  source: "mock",
}));
const idOf = (i: number) => documents[i]!.id;

const issuer = await createTestIssuer();
const admin = await issuer.authorization({
  audience: "query",
  subject: "admin",
  roles: ["app_admin_role"],
});

async function setUp() {
  const index = new MemorySearchIndex();
  await index.upsert(documents);
  const query = await startQueryService({ issuer, index });
  const app = query.service.app;
  const request = async (path: string, init: RequestInit = {}) => {
    const response = await app.request(path, init);
    const text = await response.text();
    return { response, body: text === "" ? undefined : JSON.parse(text) };
  };
  const permission = (method: "POST" | "DELETE", body: unknown, headers = admin) =>
    request("/api/v1/permissions", {
      method,
      headers: { ...headers, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  return { query, request, permission };
}

type Setup = Awaited<ReturnType<typeof setUp>>;

/** Every id the user sees by paging v2, v1 and /api/tweets, checking totals on each page. */
async function visibleIds(
  { request }: Setup,
  headers: Record<string, string>,
  params = "",
): Promise<string[]> {
  const seen: string[][] = [];
  for (const [start, accept] of [[`/api/v2/tweets`, V2], ["/api/tweets", V2]] as const) {
    const ids: string[] = [];
    let path: string | null = `${start}?size=4${params}`;
    let total: number | undefined;
    while (path !== null) {
      const { response, body } = await request(path, { headers: { ...headers, accept } });
      assert.equal(response.status, 200, path);
      total ??= body.page.total;
      assert.equal(body.page.total, total);
      ids.push(...body.data.map((tweet: { id: string }) => tweet.id));
      path = body.links.next;
    }
    assert.equal(ids.length, total);
    seen.push(ids);
  }
  for (const start of ["/api/v1/tweets", "/api/tweets"]) {
    const ids: string[] = [];
    let path: string | null = `${start}?size=4${params}`;
    let total: string | null = null;
    while (path !== null) {
      const { response, body } = await request(path, { headers: { ...headers, accept: V1 } });
      assert.equal(response.status, 200, path);
      total ??= response.headers.get("x-total-count");
      assert.equal(response.headers.get("x-total-count"), total);
      ids.push(...body.map((tweet: { id: string }) => tweet.id));
      path = /<([^>]+)>; rel="next"/.exec(response.headers.get("link") ?? "")?.[1] ?? null;
    }
    assert.equal(String(ids.length), total);
    seen.push(ids);
  }
  for (const ids of seen.slice(1)) assert.deepEqual(ids, seen[0]);
  return seen[0]!;
}

/** Status of the tweet by id on v1, v2 and /api/tweets; all must agree. */
async function byIdStatus({ request }: Setup, headers: Record<string, string>, id: string) {
  const statuses = new Set<number>();
  const bodies = new Set<string>();
  for (const path of [`/api/v1/tweets/${id}`, `/api/v2/tweets/${id}`, `/api/tweets/${id}`]) {
    const { response, body } = await request(path, { headers });
    statuses.add(response.status);
    if (response.status === 404) bodies.add(JSON.stringify({ ...body, instance: undefined }));
  }
  assert.equal(statuses.size, 1);
  assert.ok(bodies.size <= 1);
  return [...statuses][0];
}

const newestFirst = (indexes: number[]) => [...indexes].sort((a, b) => b - a).map((i) => idOf(i));

Deno.test("a user without grants sees nothing: 200 and empty, hidden ids are 404 like missing ones", async () => {
  const setup = await setUp();
  await using _ = setup.query;
  const nobody = await issuer.authorization({ audience: "query", subject: "nobody" });
  assert.deepEqual(await visibleIds(setup, nobody), []);
  assert.deepEqual(await visibleIds(setup, nobody, "&text=kafka"), []);
  assert.equal(await byIdStatus(setup, nobody, idOf(0)), 404);
  const hidden = await setup.request(`/api/v2/tweets/${idOf(0)}`, { headers: nobody });
  const missing = await setup.request("/api/v2/tweets/7", { headers: nobody });
  assert.equal(hidden.body.type, "urn:twitterapi:problem:not-found");
  assert.equal(hidden.body.title, missing.body.title);
  assert.equal(hidden.body.detail, `No tweet has the id ${idOf(0)}`);
});

Deno.test("a user sees exactly the tweets granted, by tweet and by author, on every path", async () => {
  const setup = await setUp();
  await using _ = setup.query;
  const carol = await issuer.authorization({ audience: "query", subject: "carol" });
  for (const i of [1, 3, 9]) {
    const { response } = await setup.permission("POST", {
      userId: "carol",
      scope: "tweet",
      target: idOf(i),
      level: i === 9 ? "ADMIN" : "READ",
    });
    assert.equal(response.status, 201);
  }
  const { response, body } = await setup.permission("POST", {
    userId: "carol",
    scope: "author",
    target: ALICE_AUTHOR,
    level: "WRITE",
  });
  assert.equal(response.status, 201);
  assert.deepEqual(body, {
    userId: "carol",
    scope: "author",
    target: ALICE_AUTHOR,
    level: "WRITE",
  });

  const evens = Array.from({ length: 15 }, (_, k) => 2 * k);
  assert.deepEqual(await visibleIds(setup, carol), newestFirst([...evens, 1, 3, 9]));
  assert.deepEqual(
    await visibleIds(setup, carol, "&text=kafka"),
    newestFirst([...evens, 3, 9].filter((i) => i % 3 === 0)),
  );
  assert.deepEqual(await visibleIds(setup, carol, `&userId=${BOB_AUTHOR}`), newestFirst([1, 3, 9]));
  assert.equal(await byIdStatus(setup, carol, idOf(3)), 200);
  assert.equal(await byIdStatus(setup, carol, idOf(4)), 200);
  assert.equal(await byIdStatus(setup, carol, idOf(5)), 404);

  // The super user sees everything, without a grant.
  const all = await visibleIds(setup, await superUser(issuer));
  assert.deepEqual(all, newestFirst(Array.from({ length: 30 }, (_, i) => i)));
  assert.equal(await byIdStatus(setup, await superUser(issuer), idOf(5)), 200);
});

Deno.test("a grant on everything shows every tweet; a revoke takes effect on the next request", async () => {
  const setup = await setUp();
  await using _ = setup.query;
  const dave = await issuer.authorization({ audience: "query", subject: "dave" });
  // Cached as "nothing" first: the grant must invalidate it.
  assert.deepEqual(await visibleIds(setup, dave), []);
  assert.equal(
    (await setup.permission("POST", { userId: "dave", scope: "all", level: "READ" })).response
      .status,
    201,
  );
  assert.equal((await visibleIds(setup, dave)).length, 30);
  assert.equal(
    (await setup.permission("DELETE", { userId: "dave", scope: "all" })).response.status,
    204,
  );
  assert.deepEqual(await visibleIds(setup, dave), []);
  assert.equal(await byIdStatus(setup, dave, idOf(0)), 404);

  await setup.permission("POST", {
    userId: "dave",
    scope: "tweet",
    target: idOf(2),
    level: "READ",
  });
  assert.equal(await byIdStatus(setup, dave, idOf(2)), 200);
  await setup.permission("DELETE", { userId: "dave", scope: "tweet", target: idOf(2) });
  assert.equal(await byIdStatus(setup, dave, idOf(2)), 404);
});

Deno.test("the permission API: idempotent grants, 404 for a missing revoke, listing, validation, roles", async () => {
  const setup = await setUp();
  await using _ = setup.query;
  const grant = { userId: "erin", scope: "author", target: BOB_AUTHOR, level: "READ" };
  assert.equal((await setup.permission("POST", grant)).response.status, 201);
  assert.equal((await setup.permission("POST", grant)).response.status, 200);
  assert.equal((await setup.permission("POST", { ...grant, level: "ADMIN" })).response.status, 201);
  const listed = await setup.request("/api/v1/permissions?userId=erin", { headers: admin });
  assert.equal(listed.response.status, 200);
  assert.equal(listed.body.userId, "erin");
  assert.deepEqual(
    listed.body.grants.map(({ grantedAt, ...rest }: { grantedAt: string }) => {
      assert.ok(!Number.isNaN(Date.parse(grantedAt)));
      return rest;
    }),
    [{ userId: "erin", scope: "author", target: BOB_AUTHOR, level: "ADMIN" }],
  );

  const missing = await setup.permission("DELETE", { userId: "erin", scope: "all" });
  assert.equal(missing.response.status, 404);
  assert.equal(missing.body.type, "urn:twitterapi:problem:not-found");

  for (
    const [method, body, parameters] of [
      ["POST", { scope: "all", level: "READ" }, ["body.userId"]],
      ["POST", { userId: "x", scope: "everything", level: "READ" }, ["body.scope"]],
      ["POST", { userId: "x", scope: "tweet", level: "READ" }, ["body.target"]],
      ["POST", { userId: "x", scope: "tweet", target: "12a", level: "READ" }, ["body.target"]],
      ["POST", { userId: "x", scope: "all", target: "1", level: "READ" }, ["body.target"]],
      ["POST", { userId: "x", scope: "all", level: "read" }, ["body.level"]],
      ["POST", { userId: "", scope: "all", level: "OWNER", extra: 1 }, [
        "body.userId",
        "body.level",
        "body.extra",
      ]],
      ["DELETE", { userId: "x", scope: "all", level: "READ" }, ["body.level"]],
      ["DELETE", { userId: 7, scope: "author", target: "1" }, ["body.userId"]],
      ["POST", [], ["body"]],
    ] as const
  ) {
    const { response, body: problem } = await setup.permission(method, body);
    assert.equal(response.status, 400, JSON.stringify(body));
    assert.equal(problem.type, "urn:twitterapi:problem:invalid-parameter");
    assert.deepEqual(
      problem.errors.map((error: { parameter: string }) => error.parameter),
      parameters,
      JSON.stringify(body),
    );
  }
  const notJson = await setup.request("/api/v1/permissions", {
    method: "POST",
    headers: { ...admin, "content-type": "application/json" },
    body: "{",
  });
  assert.equal(notJson.response.status, 400);
  const noUser = await setup.request("/api/v1/permissions", { headers: admin });
  assert.equal(noUser.response.status, 400);

  const user = await issuer.authorization({ audience: "query", subject: "erin" });
  assert.equal((await setup.permission("POST", grant, user)).response.status, 403);
  const anonymous = await setup.request("/api/v1/permissions?userId=erin");
  assert.equal(anonymous.response.status, 401);
  assert.equal((await setup.request("/api/v2/tweets")).response.status, 401);
  assert.equal((await setup.request(`/api/v1/tweets/${idOf(0)}`)).response.status, 401);
});

Deno.test("development grants: app_user reads the first mock authors, app_admin everything", async () => {
  const mockDocuments = Array.from({ length: 2 * DEV_READABLE_AUTHORS }, (_, i) => ({
    id: String(3_000_000_000_000_000_000n + BigInt(i)),
    userId: mockUserId(i).toString(),
    text: "mock",
    createdAt: Date.UTC(2026, 10, 24, 11, 0, i),
    source: "mock",
  }));
  const index = new MemorySearchIndex();
  await index.upsert(mockDocuments);
  await using query = await startQueryService({
    issuer,
    index,
    env: { QUERY_SEED_DEV_GRANTS: "true" },
  });
  // Seeding again (a restart) changes nothing.
  await query.service.start();
  const search = async (subject: string, roles: string[]) => {
    const headers = await issuer.authorization({ audience: "query", subject, roles });
    const response = await query.service.app.request("/api/v2/tweets?size=100", { headers });
    return (await response.json()).data.map((tweet: { userId?: string; author: { id: string } }) =>
      tweet.author.id
    );
  };
  const readable = Array.from({ length: DEV_READABLE_AUTHORS }, (_, i) => mockUserId(i).toString());
  assert.deepEqual(
    new Set(await search(realmUserId("app_user"), ["app_user_role"])),
    new Set(readable),
  );
  assert.equal(
    (await search(realmUserId("app_user"), ["app_user_role"])).length,
    DEV_READABLE_AUTHORS,
  );
  assert.equal(
    (await search(realmUserId("app_admin"), ["app_admin_role"])).length,
    2 * DEV_READABLE_AUTHORS,
  );
  assert.equal(
    (await search(realmUserId("app_super_user"), ["app_super_user_role"])).length,
    2 * DEV_READABLE_AUTHORS,
  );
  const listed = await query.service.app.request(
    `/api/v1/permissions?userId=${realmUserId("app_user")}`,
    { headers: admin },
  );
  assert.equal((await listed.json()).grants.length, DEV_READABLE_AUTHORS);
});

Deno.test("a change through one instance reaches another at once, by database notification (PostgreSQL)", async () => {
  const schema = uniqueSchema("query_test");
  const index = new MemorySearchIndex();
  await index.upsert(documents);
  // An hour-long cache: only the notification can make the second instance see the change.
  const env = { QUERY_GRANT_CACHE_TTL_MS: "3600000" };
  const [first, second] = [
    new PostgresDatabase(await connectPostgres()),
    new PostgresDatabase(await connectPostgres()),
  ];
  try {
    await using one = await startQueryService({ issuer, index, env, database: first, schema });
    await using two = await startQueryService({ issuer, index, env, database: second, schema });
    const frank = await issuer.authorization({ audience: "query", subject: "frank" });
    const total = async () => {
      const response = await two.service.app.request("/api/v2/tweets", { headers: frank });
      return (await response.json()).page.total;
    };
    assert.equal(await total(), 0);
    const grant = await one.service.app.request("/api/v1/permissions", {
      method: "POST",
      headers: { ...admin, "content-type": "application/json" },
      body: JSON.stringify({ userId: "frank", scope: "author", target: BOB_AUTHOR, level: "READ" }),
    });
    assert.equal(grant.status, 201);
    await grant.body?.cancel();
    await waitFor("the other instance to see the grant", async () => await total() === 15);
    const revoke = await one.service.app.request("/api/v1/permissions", {
      method: "DELETE",
      headers: { ...admin, "content-type": "application/json" },
      body: JSON.stringify({ userId: "frank", scope: "author", target: BOB_AUTHOR }),
    });
    assert.equal(revoke.status, 204);
    await waitFor("the other instance to see the revoke", async () => await total() === 0);
  } finally {
    await first.execute(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await first.close();
    await second.close();
  }
});

Deno.test("a user's search made while the permission database starts waits for it, then answers", async () => {
  const index = new MemorySearchIndex();
  await index.upsert(documents);
  await using query = await startQueryService({ issuer, index, start: false });
  const app = query.service.app;
  const user = await issuer.authorization({ audience: "query", subject: "frank" });
  const pending = app.request("/api/v2/tweets?text=kafka", { headers: user });
  // A super user needs no grants: answered at once.
  const early = await app.request("/api/v2/tweets?text=kafka", {
    headers: await superUser(issuer),
  });
  assert.equal(early.status, 200);
  assert.equal((await early.json()).page.total, 10);
  await query.service.start();
  const response = await pending;
  assert.equal(response.status, 200);
  assert.equal((await response.json()).page.total, 0, "no grants: nothing visible");
});
