/**
 * What tracing the event log costs per record, on the embedded log:
 * `deno bench shared/event_log/traced_event_log_bench.ts`. Spans are recorded
 * (sampled) or not (an unsampled parent), and dropped at the end instead of
 * exported, so the numbers are the wrapper's share only; exporting is the
 * span processor's.
 */
import type { SpanProcessor } from "@opentelemetry/sdk-trace";
import { configureTracing, serviceTracer } from "../trace/tracing.ts";
import type { BatchHandler, ConsumerOptions, EventLog, RecordBatch } from "./event_log.ts";
import { MemoryEventLog } from "./memory_event_log.ts";
import { inRecordsSpan, TracedEventLog } from "./traced_event_log.ts";

const SEND = 1000;
const BATCH = 500;

const discard: SpanProcessor = {
  onStart() {},
  onEnd() {},
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
};
configureTracing({ spanProcessors: [discard] });
const tracer = serviceTracer("bench");

/** A memory log whose consumers are driven by the benchmark, one batch per call. */
class DrivenEventLog extends MemoryEventLog {
  handler: BatchHandler | undefined;
  override consume(options: ConsumerOptions, handler: BatchHandler) {
    this.handler = handler;
    return super.consume(options, () => Promise.resolve());
  }
}

const SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
const value = new TextEncoder().encode("x".repeat(150));

function batchOf(traceparent: string): RecordBatch {
  return {
    topic: "bench",
    partition: 0,
    highWatermark: BATCH,
    records: Array.from({ length: BATCH }, (_, offset) => ({
      topic: "bench",
      partition: 0,
      offset,
      key: null,
      value,
      headers: { traceparent },
      timestamp: 0,
    })),
  };
}

async function driven(log: EventLog, inner: DrivenEventLog): Promise<BatchHandler> {
  await inner.ensureTopic({ name: "bench", partitions: 1 });
  // The handler's one batch-wide piece of work, as the indexer's bulk write.
  await log.consume(
    { groupId: crypto.randomUUID(), topics: ["bench"] },
    (batch) => inRecordsSpan(batch.records, "bulk", {}, () => Promise.resolve()),
  );
  return inner.handler!;
}

const plain = new DrivenEventLog({ retentionRecords: 10_000 });
const tracedInner = new DrivenEventLog({ retentionRecords: 10_000 });
const traced = new TracedEventLog(tracedInner, tracer);
const plainHandler = await driven(plain, plain);
const tracedHandler = await driven(traced, tracedInner);
const sampledBatch = batchOf(SAMPLED);
const unsampledBatch = batchOf(UNSAMPLED);
const records = (traceparent: string) =>
  Array.from({ length: SEND }, () => ({ key: null, value, headers: { traceparent } }));

Deno.bench(`send ${SEND} records, untraced`, { group: "send", baseline: true }, async () => {
  await plain.send("bench", records(SAMPLED));
});
Deno.bench(`send ${SEND} records, traced and sampled`, { group: "send" }, async () => {
  await traced.send("bench", records(SAMPLED));
});
Deno.bench(`send ${SEND} records, traced, not sampled`, { group: "send" }, async () => {
  await traced.send("bench", records(UNSAMPLED));
});

Deno.bench(
  `handle a batch of ${BATCH} with one bulk write, untraced`,
  { group: "consume", baseline: true },
  async () => {
    await plainHandler(sampledBatch);
  },
);
Deno.bench(
  `handle a batch of ${BATCH} with one bulk write, traced and sampled`,
  { group: "consume" },
  async () => {
    await tracedHandler(sampledBatch);
  },
);
Deno.bench(
  `handle a batch of ${BATCH} with one bulk write, traced, not sampled`,
  { group: "consume" },
  async () => {
    await tracedHandler(unsampledBatch);
  },
);
