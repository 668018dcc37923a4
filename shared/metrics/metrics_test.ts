import assert from "node:assert/strict";
import { MetricsRegistry } from "./metrics.ts";

Deno.test("MetricsRegistry renders counters with escaped labels", async () => {
  const registry = new MetricsRegistry();
  const counter = registry.counter("requests_total", "Requests.");
  counter.inc({ route: '/a"b', method: "GET" });
  counter.inc({ method: "GET", route: '/a"b' }, 2);
  assert.equal(counter.get({ route: '/a"b', method: "GET" }), 3);
  assert.equal(
    await registry.render(),
    [
      "# HELP requests_total Requests.",
      "# TYPE requests_total counter",
      'requests_total{method="GET",route="/a\\"b"} 3',
      "",
    ].join("\n"),
  );
});

Deno.test("MetricsRegistry renders cumulative histogram buckets", async () => {
  const registry = new MetricsRegistry();
  const histogram = registry.histogram("latency_seconds", "Latency.", [0.1, 1]);
  histogram.observe({}, 0.05);
  histogram.observe({}, 0.5);
  histogram.observe({}, 5);
  const text = await registry.render();
  assert.match(text, /latency_seconds_bucket\{le="0.1"\} 1\n/);
  assert.match(text, /latency_seconds_bucket\{le="1"\} 2\n/);
  assert.match(text, /latency_seconds_bucket\{le="\+Inf"\} 3\n/);
  assert.match(text, /latency_seconds_sum 5.55\n/);
  assert.match(text, /latency_seconds_count 3\n/);
});

Deno.test("MetricsRegistry collects gauges at scrape time", async () => {
  const registry = new MetricsRegistry();
  let lag = 7;
  registry.gauge("lag", "Lag.", () => [{ labels: { partition: "0" }, value: lag }]);
  assert.match(await registry.render(), /lag\{partition="0"\} 7\n/);
  lag = 0;
  assert.match(await registry.render(), /lag\{partition="0"\} 0\n/);
});

Deno.test("MetricsRegistry refuses a name twice", () => {
  const registry = new MetricsRegistry();
  registry.counter("a", "A.");
  assert.throws(() => registry.gauge("a", "A."), /name is taken/);
});
