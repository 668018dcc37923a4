import assert from "node:assert/strict";
import { SpanKind } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import {
  type ServiceDiscovery,
  type ServiceInstance,
  StaticDiscovery,
} from "../discovery/service_discovery.ts";
import { MetricsRegistry } from "../metrics/metrics.ts";
import { startTestServer, type TestServer } from "../testing/http_servers.ts";
import { waitFor } from "../testing/wait.ts";
import { configureTracing, inSpan, serviceTracer } from "../trace/tracing.ts";
import {
  BalancedClient,
  type BalancedClientOptions,
  NoInstanceError,
  UpstreamError,
} from "./balanced_client.ts";

const SERVICE = "query";

function instanceOf(instanceId: string, server: TestServer): ServiceInstance {
  return { service: SERVICE, instanceId, baseUrl: server.url, version: "test", metadata: {} };
}

/** Discovery whose answer the test changes. */
class MutableDiscovery implements ServiceDiscovery {
  constructor(public current: readonly ServiceInstance[]) {}
  instances(service: string): Promise<readonly ServiceInstance[]> {
    return Promise.resolve(this.current.filter((instance) => instance.service === service));
  }
}

function clientFor(
  servers: Readonly<Record<string, TestServer>>,
  options: Omit<BalancedClientOptions, "discovery"> = {},
): BalancedClient {
  const instances = Object.entries(servers).map(([id, server]) => instanceOf(id, server));
  return new BalancedClient({ discovery: new StaticDiscovery(instances), ...options });
}

/** Sends a GET and returns the status and body text. */
async function get(client: BalancedClient, path = "/"): Promise<[number, string]> {
  const response = await client.fetch(SERVICE, path);
  return [response.status, await response.text()];
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("expected a rejection");
}

function status(code: number): () => Response {
  return () => new Response(`status ${code}`, { status: code });
}

const echo = async (request: Request) => new Response(await request.text());

Deno.test("round-robin spreads requests evenly over three instances", async () => {
  await using a = startTestServer();
  await using b = startTestServer();
  await using c = startTestServer();
  const client = clientFor({ a, b, c }, { strategy: "round-robin" });
  for (let i = 0; i < 30; i++) assert.deepEqual(await get(client), [200, "ok"]);
  assert.deepEqual([a, b, c].map((server) => server.requests.length), [10, 10, 10]);
});

Deno.test("least-outstanding sends nothing to an instance holding a slow request", async () => {
  const release = Promise.withResolvers<void>();
  await using slow = startTestServer(async () => {
    await release.promise;
    return new Response("slow");
  });
  await using b = startTestServer();
  await using c = startTestServer();
  const client = clientFor({ slow, b, c });
  let answered = 0;
  const pending = [get(client), get(client), get(client)].map((call) =>
    call.then((result) => (answered += 1, result))
  );
  try {
    await waitFor(
      "three concurrent requests to reach three instances, and two to be answered",
      () => answered === 2 && slow.requests.length === 1,
    );
    for (let i = 0; i < 30; i++) assert.deepEqual(await get(client), [200, "ok"]);
    assert.equal(slow.requests.length, 1);
    assert.equal(b.requests.length + c.requests.length, 32);
  } finally {
    release.resolve();
    await Promise.allSettled(pending);
  }
});

Deno.test("a GET is retried on another instance when its instance is down", async () => {
  await using down = startTestServer();
  await using up = startTestServer();
  await down.shutdown();
  const client = clientFor({ down, up }, { strategy: "round-robin" });
  for (let i = 0; i < 10; i++) assert.deepEqual(await get(client), [200, "ok"]);
  assert.equal(up.requests.length, 10);
});

Deno.test("killing an instance under load fails no GET", async () => {
  const servers = [startTestServer(), startTestServer(), startTestServer()];
  await using _cleanup = {
    [Symbol.asyncDispose]: async () => void await Promise.all(servers.map((s) => s.shutdown())),
  };
  const [victim, ...survivors] = servers as [TestServer, TestServer, TestServer];
  const metrics = new MetricsRegistry();
  const client = clientFor({ victim, b: survivors[0], c: survivors[1] }, { metrics });
  let next = 0;
  let completed = 0;
  let killed: Promise<void> | undefined;
  const failures: unknown[] = [];
  const worker = async () => {
    while (next < 200) {
      next += 1;
      if (completed >= 50) killed ??= victim.shutdown();
      try {
        const [code] = await get(client);
        if (code !== 200) failures.push(code);
      } catch (error) {
        failures.push(error);
      }
      completed += 1;
    }
  };
  await Promise.all(Array.from({ length: 10 }, worker));
  await killed;
  assert.deepEqual(failures, []);
  assert.equal(completed, 200);
  assert.ok(victim.requests.length < 200 - 50);
  assert.ok(survivors.every((server) => server.requests.length > 50));
  // Attempts did reach the killed instance, failed, and were retried elsewhere.
  assert.match(await metrics.render(), /http_client_ejections_total\{upstream="query"\} [1-9]/);
});

Deno.test("a POST is sent once and its 503 surfaces", async () => {
  await using a = startTestServer(status(503));
  await using b = startTestServer(status(503));
  const client = clientFor({ a, b });
  const error = await rejection(client.fetch(SERVICE, "/tweets", { method: "POST", body: "x" }));
  assert.ok(error instanceof UpstreamError);
  assert.equal(error.code, "upstream-failed");
  assert.equal(error.status, 503);
  assert.equal(
    error.message,
    "Cannot call query POST /tweets: 1 attempt failed, the last with status 503 from a",
  );
  assert.deepEqual(error.attempts, [
    { instanceId: "a", url: `${a.url}/tweets`, failure: "status", status: 503 },
  ]);
  assert.equal(a.requests.length + b.requests.length, 1);
});

Deno.test("a POST marked idempotent is retried on another instance with its body", async () => {
  await using a = startTestServer(status(503));
  await using b = startTestServer(echo);
  const client = clientFor({ a, b }, { strategy: "round-robin" });
  const response = await client.fetch(SERVICE, "/tweets", {
    method: "POST",
    body: "hello",
    idempotent: true,
  });
  assert.equal(response.status, 200);
  assert.equal(await response.text(), "hello");
  assert.deepEqual([a.requests.length, b.requests.length], [1, 1]);
});

Deno.test("a PUT fails with every attempt listed once its retries are spent", async () => {
  await using a = startTestServer(status(502));
  await using b = startTestServer(status(504));
  const client = clientFor({ a, b }, { strategy: "round-robin", retries: 2 });
  const error = await rejection(client.fetch(SERVICE, "/x", { method: "PUT", body: "x" }));
  assert.ok(error instanceof UpstreamError);
  assert.deepEqual(error.attempts.map((attempt) => attempt.instanceId), ["a", "b", "a"]);
  assert.equal(error.status, 502);
});

Deno.test("a request with a stream body is never retried", async () => {
  await using a = startTestServer(status(503));
  await using b = startTestServer(echo);
  const client = clientFor({ a, b }, { strategy: "round-robin" });
  const body = new Blob(["streamed"]).stream();
  const error = await rejection(
    client.fetch(SERVICE, "/x", { method: "PUT", body, idempotent: true }),
  );
  assert.ok(error instanceof UpstreamError);
  assert.equal(error.attempts.length, 1);
  assert.deepEqual([a.requests.length, b.requests.length], [1, 0]);
});

Deno.test("a 500 is returned as it is, without a retry", async () => {
  await using a = startTestServer(status(500));
  await using b = startTestServer();
  const client = clientFor({ a, b }, { strategy: "round-robin" });
  assert.deepEqual(await get(client), [500, "status 500"]);
  assert.deepEqual([a.requests.length, b.requests.length], [1, 0]);
});

Deno.test("an attempt that exceeds its timeout is retried on another instance", async () => {
  const release = Promise.withResolvers<void>();
  await using stuck = startTestServer(async () => {
    await release.promise;
    return new Response("late");
  });
  await using b = startTestServer();
  try {
    const client = clientFor({ stuck, b }, { strategy: "round-robin", timeoutMs: 300 });
    assert.deepEqual(await get(client), [200, "ok"]);
    assert.deepEqual([stuck.requests.length, b.requests.length], [1, 1]);

    const alone = clientFor({ stuck }, { timeoutMs: 50, retries: 1 });
    const error = await rejection(alone.fetch(SERVICE, "/"));
    assert.ok(error instanceof UpstreamError);
    assert.deepEqual(error.attempts.map((attempt) => attempt.failure), ["timeout", "timeout"]);
    assert.equal(error.status, undefined);
    assert.ok(error.cause instanceof DOMException);
    assert.equal(
      error.message,
      "Cannot call query GET /: 2 attempts failed, the last timed out at stuck: " +
        "No response within 50 ms",
    );
  } finally {
    release.resolve();
  }
});

Deno.test("an instance is ejected after consecutive failures and gets traffic again after", async () => {
  let broken = true;
  await using flaky = startTestServer(() => broken ? status(500)() : new Response("ok"));
  await using b = startTestServer();
  let clock = 0;
  const metrics = new MetricsRegistry();
  const client = clientFor({ flaky, b }, {
    strategy: "round-robin",
    ejectAfter: 3,
    ejectionMs: 1000,
    metrics,
    now: () => clock,
  });
  for (let i = 0; i < 6; i++) await get(client);
  assert.equal(flaky.requests.length, 3);
  for (let i = 0; i < 10; i++) assert.deepEqual(await get(client), [200, "ok"]);
  assert.equal(flaky.requests.length, 3, "ejected for 1000 ms");

  clock += 1000;
  for (let i = 0; i < 2; i++) await get(client);
  assert.equal(flaky.requests.length, 4, "back on probation: one failure ejects again");
  clock += 1999;
  for (let i = 0; i < 10; i++) assert.deepEqual(await get(client), [200, "ok"]);
  assert.equal(flaky.requests.length, 4, "ejected for twice as long");

  broken = false;
  clock += 1;
  for (let i = 0; i < 10; i++) assert.deepEqual(await get(client), [200, "ok"]);
  assert.equal(flaky.requests.length, 4 + 5, "traffic returns once the ejection ends");
  assert.match(await metrics.render(), /http_client_ejections_total\{upstream="query"\} 2/);
});

Deno.test("the last healthy instance is never ejected", async () => {
  await using a = startTestServer(status(500));
  await using b = startTestServer(status(500));
  const metrics = new MetricsRegistry();
  const discovery = new MutableDiscovery([instanceOf("a", a), instanceOf("b", b)]);
  const client = new BalancedClient({
    discovery,
    strategy: "round-robin",
    ejectAfter: 2,
    metrics,
    now: () => 0,
  });
  for (let i = 0; i < 20; i++) assert.deepEqual(await get(client), [500, "status 500"]);
  assert.deepEqual([a.requests.length, b.requests.length], [2, 18]);
  assert.match(await metrics.render(), /http_client_ejections_total\{upstream="query"\} 1/);

  discovery.current = [instanceOf("a", a)];
  assert.deepEqual(await get(client), [500, "status 500"]);
  assert.equal(a.requests.length, 3, "when every instance is ejected, all of them are used");
});

Deno.test("traceparent carries the caller's trace id, one CLIENT span per attempt", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  await using a = startTestServer(status(503));
  await using b = startTestServer();
  const tracer = serviceTracer("gateway");
  const client = clientFor({ a, b }, { strategy: "round-robin", tracer });
  const traceId = await inSpan(tracer, "caller", {}, async (span) => {
    assert.deepEqual(await get(client), [200, "ok"]);
    return span.spanContext().traceId;
  });
  const received = [...a.requests, ...b.requests].map((r) => r.headers.get("traceparent"));
  assert.equal(received.length, 2);
  const attempts = exporter.getFinishedSpans().filter((span) => span.name === "GET query");
  assert.deepEqual(attempts.map((span) => span.kind), [SpanKind.CLIENT, SpanKind.CLIENT]);
  assert.deepEqual(
    received,
    attempts.map((span) => `00-${traceId}-${span.spanContext().spanId}-01`),
  );
  assert.deepEqual(attempts.map((span) => span.attributes["http.response.status_code"]), [
    503,
    200,
  ]);
  configureTracing();
});

Deno.test("sequential requests reuse a few connections, failed attempts included", async () => {
  await using a = startTestServer();
  const client = clientFor({ a });
  for (let i = 0; i < 100; i++) assert.deepEqual(await get(client), [200, "ok"]);
  const ports = new Set(a.requests.map((request) => request.remotePort));
  assert.ok(ports.size <= 5, `100 requests used ${ports.size} connections`);

  await using failing = startTestServer(status(503));
  const failingClient = clientFor({ failing }, { retries: 0 });
  for (let i = 0; i < 30; i++) {
    assert.ok(await rejection(failingClient.fetch(SERVICE, "/")) instanceof UpstreamError);
  }
  const failingPorts = new Set(failing.requests.map((request) => request.remotePort));
  assert.ok(failingPorts.size <= 5, `30 failed requests used ${failingPorts.size} connections`);
});

Deno.test("a failed attempt's body is cancelled, so its connection is released", async () => {
  const failing = startTestServer(() => new Response("x".repeat(4_000_000), { status: 503 }));
  const client = clientFor({ failing }, { retries: 0 });
  for (let i = 0; i < 3; i++) {
    assert.ok(await rejection(client.fetch(SERVICE, "/")) instanceof UpstreamError);
  }
  // The server waits for every response it is writing: an unread body would hold it.
  let stopped = false;
  const stopping = failing.shutdown().then(() => stopped = true);
  await waitFor("the server to finish its responses", () => stopped, 5000);
  await stopping;
});

Deno.test("a service without instances fails with NoInstanceError", async () => {
  const metrics = new MetricsRegistry();
  const client = new BalancedClient({ discovery: new StaticDiscovery([]), metrics });
  const error = await rejection(client.fetch("ghost", "/x"));
  assert.ok(error instanceof NoInstanceError);
  assert.equal(error.code, "no-instance");
  assert.equal(error.message, "Cannot call ghost GET /x: no instance is known");
  assert.match(
    await metrics.render(),
    /http_client_requests_total\{outcome="no-instance",upstream="ghost"\} 1/,
  );
});

Deno.test("metrics count outcomes and the requests awaiting an answer", async () => {
  const release = Promise.withResolvers<void>();
  await using a = startTestServer(async (request) => {
    if (new URL(request.url).pathname === "/slow") await release.promise;
    return new Response("ok");
  });
  const metrics = new MetricsRegistry();
  const client = clientFor({ a }, { metrics });
  const pending = get(client, "/slow");
  try {
    await waitFor("the request to arrive", () => a.requests.length === 1);
    assert.match(
      await metrics.render(),
      /http_client_outstanding\{upstream="query",upstream_instance="a"\} 1/,
    );
  } finally {
    release.resolve();
    await pending;
  }
  const text = await metrics.render();
  assert.match(text, /http_client_outstanding\{upstream="query",upstream_instance="a"\} 0/);
  assert.match(text, /http_client_requests_total\{outcome="ok",upstream="query"\} 1/);
});

Deno.test("a caller's abort stops the call without retry or ejection", async () => {
  const release = Promise.withResolvers<void>();
  await using a = startTestServer(async () => {
    await release.promise;
    return new Response("late");
  });
  await using b = startTestServer();
  try {
    const metrics = new MetricsRegistry();
    const client = clientFor({ a, b }, { strategy: "round-robin", ejectAfter: 1, metrics });
    const controller = new AbortController();
    const call = client.fetch(SERVICE, "/", { signal: controller.signal });
    await waitFor("the request to arrive", () => a.requests.length === 1);
    controller.abort(new Error("caller gave up"));
    const error = await rejection(call);
    assert.ok(error instanceof Error);
    assert.equal(error.message, "caller gave up");
    assert.equal(b.requests.length, 0);
    const text = await metrics.render();
    assert.match(text, /http_client_requests_total\{outcome="aborted",upstream="query"\} 1/);
    assert.doesNotMatch(text, /http_client_ejections_total\{/);
  } finally {
    release.resolve();
  }
});

Deno.test("BalancedClient rejects invalid options and paths", async () => {
  const discovery = new StaticDiscovery([]);
  assert.throws(() => new BalancedClient({ discovery, retries: -1 }), {
    name: "RangeError",
    message: "Cannot create balanced client as 'retries' must be a non-negative integer: " +
      "current value is -1",
  });
  assert.throws(() => new BalancedClient({ discovery, timeoutMs: 0 }), RangeError);
  assert.throws(() => new BalancedClient({ discovery, ejectAfter: 0 }), RangeError);
  await assert.rejects(new BalancedClient({ discovery }).fetch(SERVICE, "x"), TypeError);
});
