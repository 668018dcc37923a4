import assert from "node:assert/strict";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { testContext } from "../testing/test_context.ts";
import { configureTracing } from "../trace/tracing.ts";
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
