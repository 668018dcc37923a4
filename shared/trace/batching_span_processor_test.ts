import assert from "node:assert/strict";
import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import {
  AlwaysOffSampler,
  type ReadableSpan,
  type SpanExporter,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { BatchingSpanProcessor, type SpanOutcome } from "./batching_span_processor.ts";
import { waitFor } from "../testing/wait.ts";

/** An exporter whose answers the test gives: at once, later, or never. */
class ScriptedExporter implements SpanExporter {
  readonly batches: ReadableSpan[][] = [];
  readonly pending: ((result: ExportResult) => void)[] = [];
  answer: "success" | "failure" | "hold" = "success";

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    this.batches.push(spans);
    if (this.answer === "hold") this.pending.push(done);
    else {done({
        code: this.answer === "success" ? ExportResultCode.SUCCESS : ExportResultCode.FAILED,
      });}
  }
  release(code = ExportResultCode.SUCCESS): void {
    for (const done of this.pending.splice(0)) done({ code });
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

function setup(options: Partial<ConstructorParameters<typeof BatchingSpanProcessor>[0]> = {}) {
  const exporter = new ScriptedExporter();
  const outcomes: Record<SpanOutcome, number> = { exported: 0, failed: 0, dropped: 0 };
  const processor = new BatchingSpanProcessor({
    exporter,
    scheduledDelayMs: 60_000,
    onOutcome: (outcome, spans) => outcomes[outcome] += spans,
    ...options,
  });
  const tracer = new TracerProvider({ spanProcessors: [processor] }).getTracer("test");
  const finish = (count: number) => {
    for (let i = 0; i < count; i++) tracer.startSpan(`span ${i}`).end();
  };
  return { exporter, outcomes, processor, finish };
}

Deno.test("BatchingSpanProcessor never exports inside span.end(), even with a full batch", async () => {
  const { exporter, outcomes, processor, finish } = setup({ maxBatchSize: 2 });
  finish(5);
  assert.equal(exporter.batches.length, 0, "span.end() must only queue");
  await waitFor("the full batches to leave", () => exporter.batches.length >= 2);
  await processor.forceFlush();
  assert.deepEqual(exporter.batches.map((batch) => batch.length), [2, 2, 1]);
  assert.deepEqual(outcomes, { exported: 5, failed: 0, dropped: 0 });
  await processor.shutdown();
});

Deno.test("BatchingSpanProcessor sends a partial batch after the scheduled delay", async () => {
  const { exporter, outcomes, processor, finish } = setup({ scheduledDelayMs: 20 });
  finish(3);
  await waitFor("the delayed batch", () => outcomes.exported === 3);
  assert.deepEqual(exporter.batches.map((batch) => batch.length), [3]);
  await processor.shutdown();
});

Deno.test("BatchingSpanProcessor drops and counts spans beyond its queue while an export hangs", async () => {
  const { exporter, outcomes, processor, finish } = setup({ maxQueueSize: 4, maxBatchSize: 2 });
  exporter.answer = "hold";
  finish(2);
  await waitFor("the first batch in flight", () => exporter.batches.length === 1);
  finish(10); // 4 fit the queue, 6 are dropped
  assert.equal(processor.queued, 4);
  assert.equal(outcomes.dropped, 6);
  exporter.answer = "success";
  exporter.release();
  await processor.forceFlush();
  assert.deepEqual(outcomes, { exported: 6, failed: 0, dropped: 6 });
  await processor.shutdown();
});

Deno.test("BatchingSpanProcessor counts a failed export and exports the next batch", async () => {
  const { exporter, outcomes, processor, finish } = setup();
  exporter.answer = "failure";
  finish(3);
  await processor.forceFlush();
  assert.deepEqual(outcomes, { exported: 0, failed: 3, dropped: 0 });
  exporter.answer = "success";
  finish(2);
  await processor.forceFlush();
  assert.deepEqual(outcomes, { exported: 2, failed: 3, dropped: 0 });
  await processor.shutdown();
});

Deno.test("BatchingSpanProcessor counts an export unanswered within its timeout as failed", async () => {
  const { exporter, outcomes, processor, finish } = setup({ exportTimeoutMs: 50 });
  exporter.answer = "hold";
  finish(2);
  await processor.forceFlush();
  assert.deepEqual(outcomes, { exported: 0, failed: 2, dropped: 0 });
  exporter.release(); // a late answer changes nothing
  assert.deepEqual(outcomes, { exported: 0, failed: 2, dropped: 0 });
  await processor.shutdown();
});

Deno.test("BatchingSpanProcessor ignores spans that are not sampled", async () => {
  const exporter = new ScriptedExporter();
  const processor = new BatchingSpanProcessor({ exporter });
  const tracer = new TracerProvider({
    sampler: new AlwaysOffSampler(),
    spanProcessors: [processor],
  })
    .getTracer("test");
  tracer.startSpan("unsampled").end();
  assert.equal(processor.queued, 0);
  await processor.shutdown();
  assert.equal(exporter.batches.length, 0);
});

Deno.test("BatchingSpanProcessor's shutdown gives up at the first failed export, counting the rest", async () => {
  const { exporter, outcomes, processor, finish } = setup({ maxBatchSize: 2, exportTimeoutMs: 50 });
  exporter.answer = "hold";
  finish(7);
  await processor.shutdown();
  // One batch timed out; the other five spans were not tried against the dead collector.
  assert.equal(exporter.batches.length, 1);
  assert.deepEqual(outcomes, { exported: 0, failed: 7, dropped: 0 });
  finish(1);
  assert.equal(processor.queued, 0, "a shut-down processor takes no spans");
});

Deno.test("BatchingSpanProcessor's shutdown exports everything queued while the collector answers", async () => {
  const { exporter, outcomes, processor, finish } = setup({ maxBatchSize: 2 });
  finish(5);
  await processor.shutdown();
  assert.deepEqual(exporter.batches.map((batch) => batch.length), [2, 2, 1]);
  assert.deepEqual(outcomes, { exported: 5, failed: 0, dropped: 0 });
});
