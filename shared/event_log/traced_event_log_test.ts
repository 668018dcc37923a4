import assert from "node:assert/strict";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace";
import { waitFor } from "../testing/wait.ts";
import { configureTracing, inSpan, serviceTracer } from "../trace/tracing.ts";
import type { ConsumedRecord, EventLog, RecordHeaders } from "./event_log.ts";
import { text } from "./event_log_contract.ts";
import { MemoryEventLog } from "./memory_event_log.ts";
import {
  inNewTraces,
  inRecordContext,
  inRecordsSpan,
  recordFailed,
  recordSpan,
  TracedEventLog,
  traceHeaders,
} from "./traced_event_log.ts";

/** Spans recorded while `test` runs, with a traced log per service over one memory log. */
async function withTracing(
  test: (
    logs: { of(service: string): EventLog; memory: MemoryEventLog },
    spans: () => ReadableSpan[],
  ) => Promise<void>,
): Promise<void> {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const memory = new MemoryEventLog({ retryBackoffMs: 10 });
  try {
    await test(
      { of: (service) => new TracedEventLog(memory, serviceTracer(service)), memory },
      () => exporter.getFinishedSpans(),
    );
  } finally {
    await memory.close();
    configureTracing();
  }
}

function traceIdOf(headers: RecordHeaders): string | undefined {
  return headers.traceparent?.split("-")[1];
}

function spanIdOf(headers: RecordHeaders): string | undefined {
  return headers.traceparent?.split("-")[2];
}

function named(spans: ReadableSpan[], name: string): ReadableSpan[] {
  return spans.filter((span) => span.name === name);
}

/** Consumes `topic` with `handler` until `count` records were handled, then leaves. */
async function consumeAll(
  log: EventLog,
  topic: string,
  count: number,
  handler: (records: readonly ConsumedRecord[]) => Promise<void> = () => Promise.resolve(),
): Promise<ConsumedRecord[]> {
  const seen: ConsumedRecord[] = [];
  const member = await log.consume(
    { groupId: `${topic}-group`, topics: [topic] },
    async (batch) => {
      await handler(batch.records);
      seen.push(...batch.records);
    },
  );
  await waitFor(`${count} records of ${topic}`, () => seen.length >= count);
  await member.stop();
  return seen;
}

Deno.test("TracedEventLog gives each record sent outside a trace a producer span and trace of its own", () =>
  withTracing(async (logs, spans) => {
    const log = logs.of("stream");
    await log.ensureTopic({ name: "tweets", partitions: 2 });
    await inSpan(
      serviceTracer("stream"),
      "surrounding",
      {},
      () =>
        inNewTraces(() =>
          log.send("tweets", [
            { key: text("a"), value: text("one") },
            { key: text("b"), value: text("two") },
            { key: text("c"), value: text("three") },
          ])
        ),
    );
    const records = await consumeAll(logs.memory, "tweets", 3);
    const producers = named(spans(), "send tweets");
    assert.equal(producers.length, 3);
    assert.equal(new Set(producers.map((span) => span.spanContext().traceId)).size, 3);
    for (const record of records) {
      const producer = producers.find((span) =>
        span.spanContext().spanId === spanIdOf(record.headers)
      );
      assert.ok(producer, "the record names its producer span");
      assert.equal(producer.spanContext().traceId, traceIdOf(record.headers));
      assert.equal(producer.parentSpanContext, undefined, "a root span");
      assert.equal(producer.kind, SpanKind.PRODUCER);
      assert.equal(producer.resource.attributes["service.name"], "stream");
      assert.deepEqual(
        {
          system: producer.attributes["messaging.system"],
          operation: producer.attributes["messaging.operation.type"],
          destination: producer.attributes["messaging.destination.name"],
          partition: producer.attributes["messaging.destination.partition.id"],
          offset: producer.attributes["messaging.kafka.offset"],
        },
        {
          system: "kafka",
          operation: "send",
          destination: "tweets",
          partition: String(record.partition),
          offset: record.offset,
        },
      );
    }
  }));

Deno.test("TracedEventLog sends inside the active trace, and a record's own trace headers win", () =>
  withTracing(async (logs, spans) => {
    const log = logs.of("api");
    await log.ensureTopic({ name: "commands", partitions: 1 });
    const forwarded = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const request = await inSpan(serviceTracer("api"), "request", {}, async (span) => {
      await log.send("commands", [
        { key: null, value: text("in the request's trace") },
        { key: null, value: text("forwarded"), headers: { traceparent: forwarded, kept: "yes" } },
      ]);
      return span.spanContext();
    });
    const [inRequest, inForwarded] = await consumeAll(logs.memory, "commands", 2);
    assert.equal(traceIdOf(inRequest!.headers), request.traceId);
    assert.equal(traceIdOf(inForwarded!.headers), "0af7651916cd43dd8448eb211c80319c");
    assert.equal(inForwarded!.headers.kept, "yes", "other headers are kept");
    const producers = named(spans(), "send commands");
    const byTrace = (traceId: string) =>
      producers.find((span) => span.spanContext().traceId === traceId);
    assert.equal(byTrace(request.traceId)?.parentSpanContext?.spanId, request.spanId);
    assert.equal(
      byTrace("0af7651916cd43dd8448eb211c80319c")?.parentSpanContext?.spanId,
      "b7ad6b7169203331",
    );
  }));

Deno.test("TracedEventLog continues each consumed record's trace with a consumer span of its own", () =>
  withTracing(async (logs, spans) => {
    const producer = logs.of("stream");
    const consumer = logs.of("indexer");
    await producer.ensureTopic({ name: "tweets", partitions: 1 });
    await inNewTraces(() =>
      producer.send("tweets", [{ key: null, value: text("1") }, { key: null, value: text("2") }])
    );
    const handled = await consumeAll(consumer, "tweets", 2, (records) => {
      for (const record of records) {
        assert.ok(recordSpan(record)?.isRecording(), "the consumer span is open while handled");
      }
      return Promise.resolve();
    });
    const sent = named(spans(), "send tweets");
    const processed = named(spans(), "process tweets");
    assert.equal(processed.length, 2);
    for (const [i, span] of processed.entries()) {
      const parent = sent.find((p) => p.spanContext().spanId === span.parentSpanContext?.spanId);
      assert.ok(parent, "the consumer span is the child of the record's producer span");
      assert.equal(span.spanContext().traceId, parent.spanContext().traceId);
      assert.equal(span.kind, SpanKind.CONSUMER);
      assert.equal(span.resource.attributes["service.name"], "indexer");
      assert.equal(span.attributes["messaging.operation.type"], "process");
      assert.equal(span.attributes["messaging.consumer.group.name"], "tweets-group");
      assert.equal(span.attributes["messaging.kafka.offset"], i);
      // The handler saw the record with its consumer span's context.
      assert.equal(spanIdOf(handled[i]!.headers), span.spanContext().spanId);
    }
  }));

Deno.test("TracedEventLog: records sent while handling a record continue its trace", () =>
  withTracing(async (logs, spans) => {
    const stream = logs.of("stream");
    const worker = logs.of("worker");
    for (const name of ["in", "out"]) await stream.ensureTopic({ name, partitions: 1 });
    await inNewTraces(() =>
      stream.send("in", [{ key: null, value: text("a") }, { key: null, value: text("b") }])
    );
    await consumeAll(worker, "in", 2, async (records) => {
      // One record sent in a record's context, one carrying its headers.
      await inRecordContext(
        records[0]!,
        () => worker.send("out", [{ key: null, value: text("a") }]),
      );
      await worker.send("out", [{
        key: null,
        value: text("b"),
        headers: traceHeaders(records[1]!),
      }]);
    });
    const out = await consumeAll(logs.memory, "out", 2);
    const processed = named(spans(), "process in");
    const sentOut = named(spans(), "send out");
    for (const [i, record] of out.entries()) {
      const consumerSpan = processed[i]!;
      const producerSpan = sentOut.find((span) =>
        span.spanContext().spanId === spanIdOf(record.headers)
      );
      assert.equal(traceIdOf(record.headers), consumerSpan.spanContext().traceId);
      assert.equal(producerSpan?.parentSpanContext?.spanId, consumerSpan.spanContext().spanId);
      assert.equal(producerSpan?.resource.attributes["service.name"], "worker");
    }
  }));

Deno.test("TracedEventLog traces what a transactional handler and its commit send", () =>
  withTracing(async (logs, spans) => {
    const stream = logs.of("stream");
    const counter = logs.of("wordcount");
    for (const name of ["tweets", "words", "counts"]) {
      await stream.ensureTopic({ name, partitions: 1 });
    }
    await inNewTraces(() => stream.send("tweets", [{ key: null, value: text("hello world") }]));
    let pending: RecordHeaders | undefined;
    const member = await counter.consumeTransactional({
      groupId: "counter",
      topics: ["tweets"],
      transactionalId: "counter-1",
      commitIntervalMs: 10,
      beforeCommit(transaction) {
        if (pending === undefined) return;
        transaction.send("counts", [{ key: text("hello"), value: text("1"), headers: pending }]);
        pending = undefined;
      },
    }, (batch, transaction) => {
      for (const record of batch.records) {
        transaction.send("words", [{
          key: text("hello"),
          value: text("1"),
          headers: traceHeaders(record),
        }]);
        pending = traceHeaders(record);
      }
      return Promise.resolve();
    });
    const [word] = await consumeAll(logs.memory, "words", 1);
    const [count] = await consumeAll(logs.memory, "counts", 1);
    await member.stop();
    const [tweetSpan] = named(spans(), "send tweets");
    const [processSpan] = named(spans(), "process tweets");
    const traceId = tweetSpan!.spanContext().traceId;
    for (const [topic, record] of [["words", word], ["counts", count]] as const) {
      assert.equal(traceIdOf(record!.headers), traceId, `${topic} continue the tweet's trace`);
      const [sent] = named(spans(), `send ${topic}`);
      assert.equal(sent?.parentSpanContext?.spanId, processSpan!.spanContext().spanId);
      assert.equal(sent?.attributes["messaging.kafka.transactional"], true);
    }
  }));

Deno.test("TracedEventLog records a failed batch on every record's span, and a failed record on its own", () =>
  withTracing(async (logs, spans) => {
    const log = logs.of("indexer");
    await log.ensureTopic({ name: "tweets", partitions: 1 });
    await inNewTraces(() =>
      log.send("tweets", [{ key: null, value: text("good") }, { key: null, value: text("bad") }])
    );
    let attempts = 0;
    await consumeAll(log, "tweets", 2, (records) => {
      attempts++;
      if (attempts === 1) return Promise.reject(new Error("index unavailable"));
      recordFailed(records[1]!, new Error("undecodable"));
      return Promise.resolve();
    });
    const processed = named(spans(), "process tweets");
    assert.equal(processed.length, 4, "two deliveries of two records");
    const [firstGood, firstBad, good, bad] = processed;
    for (const span of [firstGood, firstBad]) {
      assert.equal(span?.status.code, SpanStatusCode.ERROR);
      assert.equal(span?.status.message, "index unavailable");
      assert.equal(span?.events[0]?.name, "exception");
    }
    assert.equal(good?.status.code, SpanStatusCode.UNSET);
    assert.equal(bad?.status.code, SpanStatusCode.ERROR);
    assert.equal(bad?.status.message, "undecodable");

    await assert.rejects(log.send("missing", [{ key: null, value: text("x") }]));
    const [failedSend] = named(spans(), "send missing");
    assert.equal(failedSend?.status.code, SpanStatusCode.ERROR);
  }));

Deno.test("inRecordsSpan puts one batch-wide piece of work in every record's trace", () =>
  withTracing(async (logs, spans) => {
    const log = logs.of("indexer");
    await log.ensureTopic({ name: "tweets", partitions: 1 });
    await inNewTraces(() =>
      log.send("tweets", ["a", "b", "c"].map((value) => ({ key: null, value: text(value) })))
    );
    const tracer = serviceTracer("indexer");
    await consumeAll(
      log,
      "tweets",
      3,
      (records) =>
        inRecordsSpan(records, "index tweets", { "index.documents": 3 }, () =>
          // What the work starts itself (the bulk request's client span) is in the first trace.
          inSpan(tracer, "bulk", { kind: SpanKind.CLIENT }, () => Promise.resolve())),
    );
    const processed = named(spans(), "process tweets");
    const indexed = named(spans(), "index tweets");
    assert.equal(indexed.length, 3, "one span per record's trace");
    const main = indexed.find((span) =>
      span.parentSpanContext?.spanId === processed[0]!.spanContext().spanId
    )!;
    assert.deepEqual(
      main.links.map((link) => link.context.spanId),
      processed.slice(1).map((span) => span.spanContext().spanId),
    );
    const [bulk] = named(spans(), "bulk");
    assert.equal(bulk?.parentSpanContext?.spanId, main.spanContext().spanId);
    for (const consumerSpan of processed.slice(1)) {
      const mirror = indexed.find((span) =>
        span.parentSpanContext?.spanId === consumerSpan.spanContext().spanId
      );
      assert.ok(mirror, "every other record's trace has the work's span");
      assert.equal(mirror.spanContext().traceId, consumerSpan.spanContext().traceId);
      assert.deepEqual(mirror.startTime, main.startTime);
      assert.deepEqual(mirror.endTime, main.endTime);
      // Zipkin refuses a timestamp with a fraction of a microsecond.
      assert.equal(mirror.startTime[1] % 1000, 0);
      assert.equal(mirror.endTime[1] % 1000, 0);
      assert.equal(mirror.attributes["batch.trace_id"], main.spanContext().traceId);
      assert.equal(mirror.attributes["messaging.batch.message_count"], 3);
    }
  }));

Deno.test("inRecordsSpan records a failure in every record's trace and rethrows it", () =>
  withTracing(async (logs, spans) => {
    const log = logs.of("analytics");
    await log.ensureTopic({ name: "counts", partitions: 1 });
    await inNewTraces(() =>
      log.send("counts", ["a", "b"].map((value) => ({ key: null, value: text(value) })))
    );
    let failed = false;
    await consumeAll(log, "counts", 2, async (records) => {
      if (failed) return;
      failed = true;
      await assert.rejects(
        inRecordsSpan(records, "store", {}, () => Promise.reject(new Error("database down"))),
        /database down/,
      );
    });
    const stored = named(spans(), "store");
    assert.equal(stored.length, 2);
    for (const span of stored) assert.equal(span.status.message, "database down");
  }));

Deno.test("inRecordsSpan and inRecordContext run untraced records' work as it is", async () => {
  const record: ConsumedRecord = {
    topic: "t",
    partition: 0,
    offset: 0,
    key: null,
    value: text("x"),
    headers: {},
    timestamp: 0,
  };
  assert.equal(await inRecordsSpan([record], "work", {}, () => Promise.resolve(42)), 42);
  assert.equal(inRecordContext(record, () => 7), 7);
  assert.equal(recordSpan(record), undefined);
  assert.deepEqual(traceHeaders(record), {});
});
