import assert from "node:assert/strict";
import { context, propagation, trace, TraceFlags } from "@opentelemetry/api";
import { MetricsRegistry } from "../metrics/metrics.ts";
import { MemorySpanStore } from "./memory_span_store.ts";
import { MemoryTraceReader } from "./memory_trace_reader.ts";
import {
  configureTracing,
  flushTracing,
  inSpan,
  samplerFor,
  serviceTracer,
  shutdownTracing,
} from "./tracing.ts";

function sampled(span: { spanContext(): { traceFlags: number } }): boolean {
  return (span.spanContext().traceFlags & TraceFlags.SAMPLED) !== 0;
}

function remoteParent(flags: "01" | "00") {
  return propagation.extract(context.active(), {
    traceparent: `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-${flags}`,
  });
}

Deno.test("sampling at ratio 0 records no new trace but follows a sampled caller", () => {
  configureTracing({ sampleRatio: 0 });
  const tracer = serviceTracer("sampling-zero");
  assert.equal(sampled(tracer.startSpan("root")), false);
  const followed = tracer.startSpan("child", {}, remoteParent("01"));
  assert.equal(sampled(followed), true);
  assert.equal(followed.spanContext().traceId, "4bf92f3577b34da6a3ce929d0e0e4736");
  configureTracing();
});

Deno.test("sampling at ratio 1 follows a caller that did not sample", () => {
  configureTracing({ sampleRatio: 1 });
  const tracer = serviceTracer("sampling-one");
  assert.equal(sampled(tracer.startSpan("root")), true);
  assert.equal(sampled(tracer.startSpan("child", {}, remoteParent("00"))), false);
  configureTracing();
});

Deno.test("sampling at a ratio samples about that share of new traces, and whole traces", async () => {
  configureTracing({ sampleRatio: 0.25 });
  const tracer = serviceTracer("sampling-quarter");
  let roots = 0;
  let consistent = 0;
  for (let i = 0; i < 4000; i++) {
    await inSpan(tracer, "root", {}, async (root) => {
      if (sampled(root)) roots++;
      const child = tracer.startSpan("child");
      if (sampled(child) === sampled(root)) consistent++;
      child.end();
      await Promise.resolve();
    });
  }
  assert.ok(roots > 800 && roots < 1200, `expected about 1000 of 4000 sampled, got ${roots}`);
  assert.equal(consistent, 4000, "a child follows its parent's decision");
  configureTracing();
});

Deno.test("sampling keeps at most the new traces a second it may, each service its own, and whole traces", () => {
  configureTracing({ maxNewTracesPerSecond: 50 });
  const tracers = [serviceTracer("limited-a"), serviceTracer("limited-b")];
  const started = performance.now();
  const roots = [0, 0];
  let consistent = 0;
  for (let i = 0; i < 500; i++) {
    tracers.forEach((tracer, service) => {
      const root = tracer.startSpan("root");
      if (sampled(root)) roots[service]!++;
      const child = tracer.startSpan("child", {}, trace.setSpan(context.active(), root));
      if (sampled(child) === sampled(root)) consistent++;
    });
  }
  const elapsedSeconds = (performance.now() - started) / 1000;
  for (const count of roots) {
    // A full bucket of 50 at first, then 50 a second.
    assert.ok(count >= 50, `at least the first second's 50 sampled, got ${count}`);
    assert.ok(count <= 51 + 50 * elapsedSeconds, `${count} sampled in ${elapsedSeconds} s`);
  }
  assert.equal(consistent, 1000, "a child follows its parent's decision");
  assert.equal(sampled(tracers[0]!.startSpan("child", {}, remoteParent("01"))), true);
  configureTracing();
});

Deno.test("samplerFor refuses a ratio outside 0 to 1 and a negative limit", () => {
  assert.throws(() => samplerFor(1.5), RangeError);
  assert.throws(() => samplerFor(-0.1), RangeError);
  assert.throws(() => samplerFor(NaN), RangeError);
  assert.throws(() => samplerFor(1, -1), RangeError);
  assert.throws(() => samplerFor(1, NaN), RangeError);
});

Deno.test("each service exports its spans under its own name and counts them on its /metrics", async () => {
  const store = new MemorySpanStore();
  configureTracing({ export: { exporter: store } });
  const gatewayMetrics = new MetricsRegistry();
  const queryMetrics = new MetricsRegistry();
  const gateway = serviceTracer("gateway", gatewayMetrics);
  const query = serviceTracer("query", queryMetrics);
  const traceId = await inSpan(gateway, "GET /api/v1/tweets", {}, async (span) => {
    await inSpan(query, "GET /api/v1/tweets", {}, () => Promise.resolve());
    await inSpan(query, "SELECT query.grants", {}, () => Promise.resolve());
    return span.spanContext().traceId;
  });
  await flushTracing();
  const spans = await new MemoryTraceReader(store).trace(traceId);
  assert.deepEqual(
    spans?.map((span) => span.localEndpoint.serviceName).sort(),
    ["gateway", "query", "query"],
  );
  assert.match(await gatewayMetrics.render(), /^tracing_spans_exported_total 1$/m);
  assert.match(await queryMetrics.render(), /^tracing_spans_exported_total 2$/m);
  assert.match(await queryMetrics.render(), /^tracing_spans_dropped_total 0$/m);
  assert.match(await queryMetrics.render(), /^tracing_span_queue_size 0$/m);
  assert.equal(trace.getActiveSpan(), undefined);
  await shutdownTracing();
  configureTracing();
});
