import assert from "node:assert/strict";
import { SessionStore } from "./sessions.ts";
import { p99, parseMetrics } from "./system.ts";

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
