import assert from "node:assert/strict";
import { StaticDiscovery } from "../../shared/discovery/service_discovery.ts";
import { assertDescribesEveryRoute } from "../../shared/testing/openapi_assertions.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { MemorySpanStore } from "../../shared/trace/memory_span_store.ts";
import { MemoryTraceReader } from "../../shared/trace/memory_trace_reader.ts";
import { loadConfig } from "../config.ts";
import { createConsoleService } from "./main.ts";

const service = await createConsoleService({
  config: loadConfig({}),
  context: testContext("console"),
  discovery: new StaticDiscovery([]),
  tokens: { token: () => Promise.resolve("console-token"), invalidate() {} },
  traces: new MemoryTraceReader(new MemorySpanStore()),
  logs: { search: () => Promise.resolve([]) },
});
const app = service.app;

interface Operation {
  readonly requestBody?: { content: Record<string, unknown> };
  readonly responses: Record<string, { headers?: object; content?: Record<string, unknown> }>;
}

Deno.test("the console describes every route it serves: pages, redirects, forms, assets", async () => {
  const description = await assertDescribesEveryRoute(app);
  const paths = description.paths as Record<string, Record<string, Operation>>;
  assert.deepEqual(Object.keys(paths["/"]!.get!.responses[200]!.content!), [
    "text/html; charset=UTF-8",
  ]);
  assert.ok("Location" in paths["/login"]!.get!.responses[302]!.headers!);
  assert.ok("Location" in paths["/logout"]!.post!.responses[303]!.headers!);
  assert.deepEqual(Object.keys(paths["/permissions"]!.post!.requestBody!.content), [
    "application/x-www-form-urlencoded",
  ]);
  assert.deepEqual(Object.keys(paths["/static/console.css"]!.get!.responses[200]!.content!), [
    "text/css; charset=utf-8",
  ]);
  assert.ok("302" in paths["/search"]!.get!.responses);
});

Deno.test("the console answers as its description says", async () => {
  const home = await app.request("/");
  assert.equal(home.status, 200);
  assert.equal(home.headers.get("content-type"), "text/html; charset=UTF-8");
  await home.body?.cancel();
  const search = await app.request("/search?text=kafka");
  assert.equal(search.status, 302);
  assert.equal(search.headers.get("location"), "/login?returnTo=%2Fsearch%3Ftext%3Dkafka");
  const style = await app.request("/static/console.css");
  assert.equal(style.headers.get("content-type"), "text/css; charset=utf-8");
  await style.body?.cancel();
  // A form of another media type is refused before the page, as described.
  const json = await app.request("/logout", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: "{}",
  });
  assert.equal(json.status, 415);
  assert.equal((await json.json()).type, "urn:twitterapi:problem:unsupported-media-type");
  const refused = await app.request("/logout", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: "csrf=forged",
  });
  assert.equal(refused.status, 403);
  assert.match(refused.headers.get("content-type") ?? "", /^text\/html/);
  await refused.body?.cancel();
});
