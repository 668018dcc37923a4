import assert from "node:assert/strict";
import { MetricsRegistry, registerProcessMetrics } from "./metrics.ts";

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

Deno.test("A labelled histogram series observes into the same buckets, each on its bound", async () => {
  const registry = new MetricsRegistry();
  const histogram = registry.histogram("age_seconds", "Age.", [0.1, 0.2, 0.4, 0.8]);
  const received = histogram.labelled({ stage: "received" });
  for (const value of [0.1, 0.15, 0.2, 0.8, 0.9]) received.observe(value);
  histogram.observe({ stage: "received" }, 0.05);
  const text = await registry.render();
  assert.match(text, /age_seconds_bucket\{le="0.1",stage="received"\} 2\n/);
  assert.match(text, /age_seconds_bucket\{le="0.2",stage="received"\} 4\n/);
  assert.match(text, /age_seconds_bucket\{le="0.4",stage="received"\} 4\n/);
  assert.match(text, /age_seconds_bucket\{le="0.8",stage="received"\} 5\n/);
  assert.match(text, /age_seconds_bucket\{le="\+Inf",stage="received"\} 6\n/);
  assert.match(text, /age_seconds_count\{stage="received"\} 6\n/);
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
  registry.counter("a_total", "A.");
  assert.throws(() => registry.counter("a_total", "A."), /name is taken/);
  registry.gauge("b", "B.");
  assert.throws(() => registry.histogram("b", "B."), /name is taken/);
});

Deno.test("MetricsRegistry refuses names that break Prometheus's conventions", () => {
  const registry = new MetricsRegistry();
  assert.throws(() => registry.counter("requests", "R."), /must end in _total/);
  assert.throws(() => registry.gauge("open_total", "O."), /only a counter's name ends in _total/);
  assert.throws(() => registry.histogram("latency_ms", "L."), /seconds/);
  assert.throws(() => registry.gauge("bad-name", "B."), /must match/);
  assert.throws(() => registry.histogram("h_seconds", "H.", [1, 0.5]), /buckets must increase/);
});

Deno.test("metrics refuse labels that Prometheus sets on the target, or reserves", () => {
  const registry = new MetricsRegistry();
  const counter = registry.counter("calls_total", "Calls.");
  for (const label of ["service", "instance", "job", "__name", "bad-label"]) {
    assert.throws(() => counter.inc({ [label]: "x" }), /Cannot record metric 'calls_total'/);
  }
  const histogram = registry.histogram("wait_seconds", "Wait.");
  assert.throws(() => histogram.observe({ le: "1" }, 1), /'le' is reserved/);
  registry.gauge("depth", "Depth.", () => [{ labels: { instance: "a" }, value: 1 }]);
  return assert.rejects(() => registry.render(), /label 'instance'/);
});

Deno.test("counters only go up", () => {
  const counter = new MetricsRegistry().counter("ups_total", "Ups.");
  assert.throws(() => counter.inc({}, -1), /must be >= 0/);
  assert.throws(() => counter.inc({}, NaN), /must be >= 0/);
});

Deno.test("MetricsRegistry escapes HELP text and renders NaN and infinities", async () => {
  const registry = new MetricsRegistry();
  const gauge = registry.gauge("ratio", "A \\ backslash\nand a new line.");
  gauge.set({ kind: "nan" }, NaN);
  gauge.set({ kind: "up" }, Infinity);
  gauge.set({ kind: "down" }, -Infinity);
  assert.equal(
    await registry.render(),
    [
      "# HELP ratio A \\\\ backslash\\nand a new line.",
      "# TYPE ratio gauge",
      'ratio{kind="nan"} NaN',
      'ratio{kind="up"} +Inf',
      'ratio{kind="down"} -Inf',
      "",
    ].join("\n"),
  );
});

Deno.test("registerProcessMetrics() exports Prometheus's standard process metrics", async () => {
  const registry = new MetricsRegistry();
  registerProcessMetrics(registry);
  const text = await registry.render();
  const start = Number(/^process_start_time_seconds (\S+)$/m.exec(text)?.[1]);
  assert.ok(Math.abs(start - Date.now() / 1000) < 3600, `start time ${start}`);
  assert.match(text, /^# TYPE process_cpu_seconds_total counter$/m);
  assert.match(text, /^process_cpu_seconds_total \d+(\.\d+)?(e-\d+)?$/m);
  assert.match(text, /^process_resident_memory_bytes [1-9]\d*$/m);
  assert.match(text, /^deno_heap_used_bytes [1-9]\d*$/m);
});
