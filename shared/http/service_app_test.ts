import assert from "node:assert/strict";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { testContext } from "../testing/test_context.ts";
import { configureLogging, shutdownLogging } from "../log/log.ts";
import { MemoryLogStore } from "../log/memory_log_store.ts";
import { configureTracing, injectTraceContext } from "../trace/tracing.ts";
import { assertDescribesEveryRoute } from "../testing/openapi_assertions.ts";
import { createOpenApiApp, createRoute, mountRoute, problemResponses, z } from "./openapi.ts";
import { ProblemError } from "./problem.ts";
import { createServiceApp, type ServiceAppOptions } from "./service_app.ts";

function app(options: Partial<ServiceAppOptions> = {}) {
  const hono = createServiceApp({ context: testContext("kernel"), ...options });
  hono.get("/boom", () => {
    throw new Error("secret internals");
  });
  hono.get("/teapot", () => {
    throw new ProblemError({ status: 418, code: "teapot", title: "I am a teapot" });
  });
  hono.post("/echo", async (c) => c.text(await c.req.text()));
  return hono;
}

Deno.test("service app answers /health", async () => {
  const response = await app().request("/health");
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { status: "up", service: "kernel" });
});

Deno.test("service app /ready reports each dependency and fails when one is down", async () => {
  const up = { name: "index", check: () => Promise.resolve() };
  const down = { name: "log", check: () => Promise.reject(new Error("connection refused")) };
  const slow = { name: "slow", check: () => new Promise<void>(() => {}) };
  const ready = await app({ readiness: [up] }).request("/ready");
  assert.equal(ready.status, 200);
  assert.deepEqual(await ready.json(), { status: "ready", checks: { index: { status: "up" } } });
  const notReady = await app({ readiness: [up, down, slow], readinessTimeoutMs: 50 })
    .request("/ready");
  assert.equal(notReady.status, 503);
  assert.deepEqual(await notReady.json(), {
    status: "not-ready",
    checks: {
      index: { status: "up" },
      log: { status: "down", error: "connection refused" },
      slow: { status: "down", error: "slow did not answer within 50 ms" },
    },
  });
});

Deno.test("service app /ready stays ready when only a non-critical dependency is down", async () => {
  const shared = {
    name: "rate-limit",
    critical: false,
    check: () => Promise.reject(new Error("served in process: Redis unreachable")),
  };
  const response = await app({
    readiness: [{ name: "index", check: () => Promise.resolve() }, shared],
  })
    .request("/ready");
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), {
    status: "degraded",
    checks: {
      index: { status: "up" },
      "rate-limit": { status: "degraded", error: "served in process: Redis unreachable" },
    },
  });
});

Deno.test("service app /metrics counts requests by route and times them", async () => {
  const hono = app();
  await hono.request("/health");
  await hono.request("/nowhere");
  const response = await hono.request("/metrics");
  assert.equal(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const text = await response.text();
  assert.match(text, /http_requests_total\{method="GET",route="\/health",status="200"\} 1/);
  assert.match(text, /http_requests_total\{method="GET",route="unmatched",status="404"\} 1/);
  assert.match(text, /http_request_duration_seconds_count\{method="GET",route="\/health"\} 1/);
  assert.match(text, /service_info\{deno_version="[^"]+",version="0\.0\.0-test"\} 1/);
  assert.match(text, /process_start_time_seconds \d+(\.\d+)?\n/);
  assert.match(text, /process_cpu_seconds_total \d+(\.\d+)?\n/);
  assert.match(text, /process_resident_memory_bytes \d+/);
});

Deno.test("service app turns unknown paths into 404 problem+json", async () => {
  const response = await app().request("/nowhere");
  assert.equal(response.status, 404);
  assert.equal(response.headers.get("content-type"), "application/problem+json");
  assert.deepEqual(await response.json(), {
    type: "urn:twitterapi:problem:not-found",
    title: "Resource not found",
    status: 404,
    detail: "No resource at /nowhere",
    instance: "/nowhere",
  });
});

Deno.test("service app answers a method its routes do not serve at a path with 405 and Allow", async () => {
  const hono = app();
  hono.get("/things/:id", (c) => c.text(c.req.param("id")));
  hono.put("/things/:id", (c) => c.text("put"));
  const response = await hono.request("/things/7", { method: "DELETE" });
  assert.equal(response.status, 405);
  assert.equal(response.headers.get("allow"), "GET, HEAD, PUT");
  assert.equal(response.headers.get("content-type"), "application/problem+json");
  assert.deepEqual(await response.json(), {
    type: "urn:twitterapi:problem:method-not-allowed",
    title: "Method not allowed",
    status: 405,
    detail: "/things/7 answers GET, HEAD, PUT, not DELETE",
    instance: "/things/7",
  });
  const echo = await hono.request("/echo");
  assert.equal(echo.status, 405);
  assert.equal(echo.headers.get("allow"), "POST");
  assert.equal((await hono.request("/things/7/parts", { method: "DELETE" })).status, 404);
  assert.equal(
    (await hono.request("/health", { method: "POST" })).headers.get("allow"),
    "GET, HEAD",
  );
});

Deno.test("service app's management listener answers a wrong method with 405 too", async () => {
  const management = createOpenApiApp();
  createServiceApp({ context: testContext("kernel"), management });
  const response = await management.request("/metrics", { method: "POST" });
  assert.equal(response.status, 405);
  assert.equal(response.headers.get("allow"), "GET, HEAD");
});

Deno.test("service app hides unhandled errors behind a 500 problem", async () => {
  const response = await app().request("/boom");
  assert.equal(response.status, 500);
  const body = await response.json();
  assert.equal(body.type, "urn:twitterapi:problem:internal");
  assert.doesNotMatch(JSON.stringify(body), /secret internals|at /);
});

Deno.test("service app renders domain problems with their status", async () => {
  const response = await app().request("/teapot");
  assert.equal(response.status, 418);
  assert.equal((await response.json()).type, "urn:twitterapi:problem:teapot");
});

Deno.test("service app refuses bodies over the limit with 413 problem+json", async () => {
  const hono = app({ bodyLimitBytes: 10 });
  const small = await hono.request("/echo", { method: "POST", body: "0123456789" });
  assert.equal(small.status, 200);
  const large = await hono.request("/echo", { method: "POST", body: "0123456789A" });
  assert.equal(large.status, 413);
  assert.equal(large.headers.get("content-type"), "application/problem+json");
  assert.equal((await large.json()).type, "urn:twitterapi:problem:payload-too-large");
});

Deno.test("service app counts chunked bodies as they are read and refuses them past the limit", async () => {
  const hono = app({ bodyLimitBytes: 10 });
  const chunked = (...parts: string[]) => ({
    method: "POST",
    body: ReadableStream.from(parts.map((part) => new TextEncoder().encode(part))),
  });
  const small = await hono.request("/echo", chunked("01234", "56789"));
  assert.equal(small.status, 200);
  assert.equal(await small.text(), "0123456789");
  const large = await hono.request("/echo", chunked("01234", "56789", "A"));
  assert.equal(large.status, 413);
  assert.equal(large.headers.get("content-type"), "application/problem+json");
  assert.equal((await large.json()).type, "urn:twitterapi:problem:payload-too-large");
});

Deno.test("service app continues the caller's trace and reports it back", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  const response = await app().request("/health", {
    headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
  });
  assert.match(response.headers.get("traceresponse") ?? "", new RegExp(`^00-${traceId}-`));
  const [span] = exporter.getFinishedSpans();
  assert.equal(span?.spanContext().traceId, traceId);
  assert.equal(span?.parentSpanContext?.spanId, "00f067aa0ba902b7");
  assert.equal(span?.name, "GET /health");
});

Deno.test("service app's server span follows the HTTP semantic conventions", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const hono = app();
  hono.get("/items/:id", (c) => c.json({ id: c.req.param("id") }));
  const response = await hono.request("http://127.0.0.1:8183/items/42", {
    headers: { "user-agent": "test-agent" },
  });
  assert.equal(response.status, 200);
  const [span] = exporter.getFinishedSpans();
  assert.equal(span?.name, "GET /items/:id");
  assert.equal(span?.kind, SpanKind.SERVER);
  assert.deepEqual(span?.attributes, {
    "http.request.method": "GET",
    "url.path": "/items/42",
    "url.scheme": "http",
    "server.address": "127.0.0.1",
    "server.port": 8183,
    "user_agent.original": "test-agent",
    "http.route": "/items/:id",
    "http.response.status_code": 200,
  });
  assert.equal(span?.status.code, SpanStatusCode.UNSET);
  configureTracing();
});

Deno.test("service app records a handler's exception on its span and marks it failed", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const response = await app().request("/boom");
  assert.equal(response.status, 500);
  const [span] = exporter.getFinishedSpans();
  assert.equal(span?.name, "GET /boom");
  assert.equal(span?.attributes["http.response.status_code"], 500);
  assert.equal(span?.attributes["error.type"], "Error");
  assert.equal(span?.status.code, SpanStatusCode.ERROR);
  const exception = span?.events.find((event) => event.name === "exception");
  assert.equal(exception?.attributes?.["exception.message"], "secret internals");
  configureTracing();
});

Deno.test("service app marks a 5xx answer failed with its status as error type, and not a 4xx", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const hono = app();
  hono.get("/unavailable", () => {
    throw new ProblemError({ status: 503, code: "unavailable", title: "Down" });
  });
  assert.equal((await hono.request("/unavailable")).status, 503);
  assert.equal((await hono.request("/teapot")).status, 418);
  assert.equal((await hono.request("/nowhere")).status, 404);
  const [unavailable, teapot, nowhere] = exporter.getFinishedSpans();
  assert.equal(unavailable?.attributes["error.type"], "503");
  assert.equal(unavailable?.status.code, SpanStatusCode.ERROR);
  assert.equal(teapot?.status.code, SpanStatusCode.UNSET);
  assert.equal(teapot?.attributes["error.type"], undefined);
  // An unmatched path is named by its method alone: raw paths would make names unbounded.
  assert.equal(nowhere?.name, "GET");
  assert.equal(nowhere?.attributes["http.route"], undefined);
  configureTracing();
});

Deno.test("service app's traceresponse says whether the trace is sampled", async () => {
  configureTracing({ sampleRatio: 0 });
  const unsampled = await app().request("/teapot");
  assert.match(unsampled.headers.get("traceresponse") ?? "", /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  const followed = await app().request("/health", {
    headers: { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" },
  });
  assert.match(followed.headers.get("traceresponse") ?? "", /-01$/);
  configureTracing();
});

Deno.test("service app starts no trace for probes and quiet routes, but continues a caller's", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const hono = app({ quietRoutes: ["/api/v1/things/:id/heartbeat"] });
  hono.put("/api/v1/things/:id/heartbeat", (c) => c.body(null, 204));
  for (const path of ["/health", "/ready", "/metrics"]) {
    const response = await hono.request(path);
    await response.body?.cancel();
    assert.equal(response.headers.get("traceresponse"), null, path);
  }
  assert.equal((await hono.request("/api/v1/things/a1/heartbeat", { method: "PUT" })).status, 204);
  assert.equal(exporter.getFinishedSpans().length, 0);
  const traced = await hono.request("/api/v1/things/a1/heartbeat", {
    method: "PUT",
    headers: { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" },
  });
  assert.match(traced.headers.get("traceresponse") ?? "", /^00-4bf92f3577b34da6a3ce929d0e0e4736-/);
  assert.equal(exporter.getFinishedSpans()[0]?.name, "PUT /api/v1/things/:id/heartbeat");
  configureTracing();
});

Deno.test("service app logs one successful request in N at info, and every failed or traced one", async () => {
  const store = new MemoryLogStore();
  await configureLogging({ stream: new WritableStream(), sinks: [store.sink] });
  try {
    const hono = createServiceApp({ context: testContext("sampled"), successLogSampling: 3 });
    hono.get("/ok", (c) => c.text("ok"));
    for (let i = 0; i < 7; i++) await (await hono.request("/ok")).body?.cancel();
    await (await hono.request("/missing")).body?.cancel();
    await (await hono.request("/ok", {
      headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
    })).body?.cancel();
  } finally {
    await shutdownLogging();
  }
  const lines = (await store.search({ service: "sampled" })).map((entry) => ({
    message: entry.message,
    sampledOneIn: entry.labels.sampledOneIn,
  })).reverse();
  assert.deepEqual(lines, [
    // The 1st, the 4th and the 7th of the seven, each standing for three.
    { message: "GET /ok 200", sampledOneIn: 3 },
    { message: "GET /ok 200", sampledOneIn: 3 },
    { message: "GET /ok 200", sampledOneIn: 3 },
    { message: "GET /missing 404", sampledOneIn: undefined },
    { message: "GET /ok 200", sampledOneIn: undefined },
  ]);
});

Deno.test("service app passes its request-line choice on with the trace context, and follows a caller's", async () => {
  const store = new MemoryLogStore();
  await configureLogging({ stream: new WritableStream(), sinks: [store.sink] });
  configureTracing();
  /** The tracestate each request's upstream calls would carry. */
  const sent: string[] = [];
  try {
    const hono = createServiceApp({ context: testContext("chained"), successLogSampling: 2 });
    hono.get("/ok", (c) => {
      sent.push(injectTraceContext({}).tracestate ?? "");
      return c.text("ok");
    });
    hono.get("/missing", (c) => c.text("no", 404));
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const call = async (path: string, tracestate?: string) =>
      await (await hono.request(path, {
        headers: tracestate === undefined ? {} : { traceparent, tracestate },
      })).body?.cancel();
    // Begun here: the first of every two is logged, and its upstream calls say so.
    await call("/ok");
    await call("/ok");
    // A caller's choice is followed, the caller's other members kept.
    await call("/ok", "vendor=x,twitterapi=rl:0");
    await call("/ok", "twitterapi=rl:7");
    await call("/missing", "twitterapi=rl:0");
  } finally {
    await shutdownLogging();
  }
  assert.deepEqual(sent, [
    "twitterapi=rl:2",
    "twitterapi=rl:0",
    "twitterapi=rl:0,vendor=x",
    "twitterapi=rl:7",
  ]);
  const lines = (await store.search({ service: "chained" })).map((entry) => ({
    message: entry.message,
    sampledOneIn: entry.labels.sampledOneIn,
  })).reverse();
  assert.deepEqual(lines, [
    { message: "GET /ok 200", sampledOneIn: 2 },
    { message: "GET /ok 200", sampledOneIn: 7 },
    // Failed: logged whatever the choice.
    { message: "GET /missing 404", sampledOneIn: undefined },
  ]);
});

Deno.test("service app refuses a success log sampling that is not a positive integer", () => {
  assert.throws(
    () => createServiceApp({ context: testContext("kernel"), successLogSampling: 0 }),
    RangeError,
  );
});

Deno.test("service app describes its operational routes in a valid OpenAPI 3.1 /openapi.json", async () => {
  const hono = createServiceApp({ context: testContext("kernel"), description: "A kernel" });
  const description = await assertDescribesEveryRoute(hono);
  assert.deepEqual(description.info, {
    title: "kernel",
    version: "0.0.0-test",
    description: "A kernel",
  });
});

Deno.test("service app lists a route mounted without a description as undocumented", async () => {
  const hono = createServiceApp({ context: testContext("kernel") });
  hono.get("/secret", (c) => c.text("x"));
  await assert.rejects(assertDescribesEveryRoute(hono), /GET \/secret/);
});

Deno.test("service app answers a request its schemas refuse with a problem naming each parameter", async () => {
  const hono = createServiceApp({ context: testContext("kernel") });
  mountRoute(
    hono,
    createRoute({
      method: "post",
      path: "/things/{id}",
      request: {
        params: z.object({ id: z.string().regex(/^\d+$/) }),
        query: z.object({ size: z.coerce.number().int().min(1).max(10).optional() }),
        body: {
          required: true,
          content: { "application/json": { schema: z.object({ name: z.string() }) } },
        },
      },
      responses: { 204: { description: "Done" }, ...problemResponses(400, 415) },
    }),
    () => new Response(null, { status: 204 }),
  );
  const post = (path: string, body: string, type = "application/json") =>
    hono.request(path, { method: "POST", body, headers: { "content-type": type } });
  assert.equal((await post("/things/1?size=3", '{"name":"a"}')).status, 204);
  const badSize = await post("/things/1?size=30", '{"name":"a"}');
  assert.equal(badSize.status, 400);
  assert.equal(badSize.headers.get("content-type"), "application/problem+json");
  assert.deepEqual((await badSize.json()).errors, [
    { parameter: "size", detail: "Too big: expected number to be <=10" },
  ]);
  const badName = await (await post("/things/1", '{"name":1}')).json();
  assert.equal(badName.type, "urn:twitterapi:problem:invalid-parameter");
  assert.equal(badName.errors[0].parameter, "body.name");
  const malformed = await post("/things/1", "{bad");
  assert.equal(malformed.status, 400);
  assert.equal((await malformed.json()).type, "urn:twitterapi:problem:invalid-body");
  const text = await post("/things/1", "name=a", "text/plain");
  assert.equal(text.status, 415);
  assert.equal((await text.json()).type, "urn:twitterapi:problem:unsupported-media-type");
});
