import assert from "node:assert/strict";
import { SessionStore } from "./sessions.ts";
import { p99, parseMetrics, SystemView } from "./system.ts";

Deno.test("console metrics parsing reads labels and values of the Prometheus text format", () => {
  const series = parseMetrics(
    '# HELP x X.\nhttp_requests_total{method="GET",route="/a",status="200"} 7\n' +
      'gateway_breaker_state{service="query"} 2\nprocess_heap_used_bytes 12.5\n',
  );
  assert.deepEqual(series, [
    {
      name: "http_requests_total",
      labels: { method: "GET", route: "/a", status: "200" },
      value: 7,
    },
    { name: "gateway_breaker_state", labels: { service: "query" }, value: 2 },
    { name: "process_heap_used_bytes", labels: {}, value: 12.5 },
  ]);
});

Deno.test("console p99 is the upper bound of the bucket holding the 99th percentile", () => {
  assert.equal(
    p99([{ le: 0.01, count: 50 }, { le: 0.1, count: 99 }, { le: Infinity, count: 100 }]),
    0.1,
  );
  assert.equal(p99([{ le: 0.01, count: 100 }, { le: Infinity, count: 100 }]), 0.01);
  assert.equal(p99([{ le: 0.01, count: 0 }, { le: Infinity, count: 0 }]), undefined);
});

Deno.test("console sessions are bounded, least recently used first, and expire when idle", () => {
  let now = 0;
  const store = new SessionStore(1000, 2, () => now);
  const a = store.create();
  const b = store.create();
  assert.equal(store.get(a.id), a); // a is now the most recent
  const c = store.create();
  assert.equal(store.get(b.id), undefined);
  assert.equal(store.get(a.id), a);
  assert.equal(store.get(c.id), c);
  now += 1001;
  assert.equal(store.get(a.id), undefined);
  assert.notEqual(a.csrfToken, c.csrfToken);
  assert.equal(store.get(undefined), undefined);
});

Deno.test("console system view marks an instance down when its health fails and evicted once unlisted", async () => {
  let now = Date.parse("2026-12-01T10:00:10Z");
  let listed = ["a", "b"];
  let healthy = true;
  let requests = 10;
  const fetchStub: typeof fetch = (input) => {
    const url = String(input instanceof Request ? input.url : input);
    const json = (body: unknown) => Promise.resolve(Response.json(body));
    if (url.endsWith("/api/v1/registry/services")) {
      return json({ services: [{ service: "query" }] });
    }
    if (url.endsWith("/api/v1/registry/services/query/instances")) {
      return json({
        instances: listed.map((id) => ({
          service: "query",
          instanceId: id,
          baseUrl: `http://${id}.test`,
          version: "1",
          registeredAt: "2026-12-01T10:00:00Z",
        })),
      });
    }
    if (url.endsWith("/health")) {
      return Promise.resolve(
        new Response("{}", { status: healthy || url.includes("a.") ? 200 : 503 }),
      );
    }
    return Promise.resolve(
      new Response(
        `http_requests_total{status="200"} ${requests}\nhttp_requests_total{status="500"} 1\n`,
      ),
    );
  };
  const view = new SystemView({
    registryUrls: ["http://registry.test"],
    tokens: { token: () => Promise.resolve("t"), invalidate() {} },
    fetch: fetchStub,
    now: () => now,
  });
  const first = await view.instances();
  assert.deepEqual(first.map((instance) => [instance.instanceId, instance.state]), [["a", "up"], [
    "b",
    "up",
  ]]);
  assert.equal(first[0]!.uptimeSeconds, 10);
  now += 2000;
  requests = 30;
  healthy = false;
  const second = await view.instances();
  assert.deepEqual(second.map((instance) => [instance.instanceId, instance.state]), [["a", "up"], [
    "b",
    "down",
  ]]);
  assert.equal(second[0]!.requestsPerSecond, 10);
  listed = ["a"];
  now += 2000;
  const third = await view.instances();
  assert.deepEqual(third.map((instance) => [instance.instanceId, instance.state]), [["a", "up"], [
    "b",
    "evicted",
  ]]);
  now += 61_000;
  assert.deepEqual((await view.instances()).map((instance) => instance.instanceId), ["a"]);
});
