import assert from "node:assert/strict";
import { MemorySpanStore } from "./memory_span_store.ts";
import { MemoryTraceReader } from "./memory_trace_reader.ts";
import type { TraceSpan } from "./trace_span.ts";

function span(traceId: string, id: string, timestamp: number): TraceSpan {
  return {
    traceId: traceId.padStart(32, "0"),
    id: id.padStart(16, "0"),
    name: "work",
    timestamp,
    duration: 1,
    localEndpoint: { serviceName: "svc" },
    tags: {},
  };
}

Deno.test("MemorySpanStore keeps only the newest maxSpans spans", async () => {
  const store = new MemorySpanStore({ maxSpans: 3 });
  const reader = new MemoryTraceReader(store);
  store.add([span("a", "1", 1), span("a", "2", 2), span("b", "3", 3)]);
  assert.equal(store.size, 3);
  store.add([span("c", "4", 4), span("c", "5", 5)]);
  assert.equal(store.size, 3);
  // Trace a lost both its spans, trace b none, trace c is whole.
  assert.equal(await reader.trace("a".padStart(32, "0")), undefined);
  assert.deepEqual((await reader.trace("b".padStart(32, "0")))?.map((s) => s.id), [
    "3".padStart(16, "0"),
  ]);
  assert.equal((await reader.trace("c".padStart(32, "0")))?.length, 2);
  assert.deepEqual([...store.newestFirst()].map((s) => s.timestamp), [5, 4, 3]);
});

Deno.test("MemorySpanStore forgets the oldest spans of a trace first", async () => {
  const store = new MemorySpanStore({ maxSpans: 2 });
  store.add([span("a", "1", 1), span("a", "2", 2), span("a", "3", 3)]);
  const spans = await new MemoryTraceReader(store).trace("a".padStart(32, "0"));
  assert.deepEqual(spans?.map((s) => s.timestamp), [2, 3]);
});

Deno.test("MemorySpanStore stays at its bound under many spans", () => {
  const store = new MemorySpanStore({ maxSpans: 1000 });
  for (let i = 0; i < 50_000; i++) store.add([span(String(i % 7000), String(i), i)]);
  assert.equal(store.size, 1000);
  let held = 0;
  for (let t = 0; t < 7000; t++) held += store.trace(String(t).padStart(32, "0")).length;
  assert.equal(held, 1000);
});

Deno.test("MemorySpanStore refuses a bound that is not a positive integer", () => {
  assert.throws(() => new MemorySpanStore({ maxSpans: 0 }), RangeError);
});
