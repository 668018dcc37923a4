import assert from "node:assert/strict";
import { MemorySearchIndex } from "../../shared/search_index/memory_search_index.ts";
import { assertDescribesEveryRoute } from "../../shared/testing/openapi_assertions.ts";
import { createTestIssuer } from "../../shared/testing/test_issuer.ts";
import { startQueryService, superUser } from "./_testing.ts";

const V1 = "application/vnd.twitterapi.v1+json";
const V2 = "application/vnd.twitterapi.v2+json";

const issuer = await createTestIssuer();

interface Operation {
  readonly operationId?: string;
  readonly deprecated?: boolean;
  readonly security?: unknown;
  readonly parameters?: { name: string; in: string; schema: Record<string, unknown> }[];
  readonly responses: Record<string, { headers?: object; content?: Record<string, unknown> }>;
}

Deno.test("the query service describes every route it serves in valid OpenAPI 3.1", async () => {
  await using query = await startQueryService({ issuer, index: new MemorySearchIndex() });
  const description = await assertDescribesEveryRoute(query.service.app);
  const paths = description.paths as Record<string, Record<string, Operation>>;

  const v1Search = paths["/api/v1/tweets"]!.get!;
  assert.equal(v1Search.deprecated, true);
  assert.deepEqual(Object.keys(v1Search.responses[200]!.content!), [V1]);
  assert.ok("Deprecation" in v1Search.responses[200]!.headers!);
  assert.deepEqual(
    v1Search.parameters!.map((parameter) => parameter.name),
    ["text", "userId", "from", "to", "size", "cursor"],
  );
  assert.equal(v1Search.parameters!.find((p) => p.name === "size")!.schema.maximum, 100);
  // "Try it out" at the gateway's /docs fills each parameter with its example: only the words
  // and the page size have one, so that a developer's first try finds tweets.
  for (const path of ["/api/v1/tweets", "/api/v2/tweets", "/api/v2/tweets/stream"]) {
    assert.deepEqual(
      paths[path]!.get!.parameters!
        .filter((parameter) => "example" in parameter || "example" in parameter.schema)
        .map((parameter) => parameter.name),
      ["text", "size"],
      path,
    );
  }
  assert.deepEqual(Object.keys(paths["/api/tweets/{id}"]!.get!.responses[200]!.content!), [V2, V1]);
  assert.ok("406" in paths["/api/tweets"]!.get!.responses);
  const stream = paths["/api/v2/tweets/stream"]!.get!;
  assert.deepEqual(Object.keys(stream.responses[200]!.content!), ["text/event-stream"]);
  assert.ok(!stream.parameters!.some((parameter) => parameter.name === "cursor"));
  assert.deepEqual(Object.keys(paths["/api/v1/permissions"]!), ["post", "delete", "get"]);

  const operations = Object.values(paths).flatMap((item) => Object.values(item));
  const ids = operations.map((operation) => operation.operationId).filter(Boolean);
  assert.equal(new Set(ids).size, ids.length, "operationIds are unique");
  for (const [path, item] of Object.entries(paths)) {
    if (!path.startsWith("/api/")) continue;
    for (const operation of Object.values(item)) {
      assert.deepEqual(operation.security, [{ bearerAuth: [] }], path);
    }
  }
});

Deno.test("query validation comes from the described schemas", async () => {
  await using query = await startQueryService({ issuer, index: new MemorySearchIndex() });
  const app = query.service.app;
  const reader = await superUser(issuer);
  const admin = await issuer.authorization({
    audience: "query",
    subject: "admin",
    roles: ["app_admin_role"],
  });

  const search = await app.request("/api/v2/tweets?size=1e9&from=2026-11-02&to=2026-11-01", {
    headers: reader,
  });
  assert.equal(search.status, 400);
  assert.deepEqual(
    (await search.json()).errors.map((error: { parameter: string }) => error.parameter),
    ["size", "to"],
  );
  const range = await app.request("/api/v2/tweets?from=2026-11-02&to=2026-11-01", {
    headers: reader,
  });
  assert.deepEqual((await range.json()).errors, [
    { parameter: "to", detail: "must not be before from" },
  ]);

  const notJson = await app.request("/api/v1/permissions", {
    method: "POST",
    headers: { ...admin, "content-type": "text/plain" },
    body: "userId=erin",
  });
  assert.equal(notJson.status, 415);
  assert.equal((await notJson.json()).type, "urn:twitterapi:problem:unsupported-media-type");
  const list = await app.request("/api/v1/permissions", { headers: admin });
  assert.equal(list.status, 400);
  assert.equal((await list.json()).errors[0].parameter, "userId");
});
