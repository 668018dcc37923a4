/**
 * The behaviour every `TraceReader` adapter must show, as Deno tests: spans
 * written through the adapter's own exporter (the memory store, or Zipkin's
 * exporter to a real Zipkin) are read back in the one span model. Service
 * names are unique per test, so the cases also hold on a shared Zipkin.
 * Reads poll until the spans are there: a collector may store them a moment
 * after it acknowledged them.
 */
import assert from "node:assert/strict";
import { ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { type SpanExporter, TracerProvider } from "@opentelemetry/sdk-trace";
import { BatchingSpanProcessor } from "./batching_span_processor.ts";
import type { TraceReader } from "./trace_reader.ts";
import type { TraceSpan } from "./trace_span.ts";

export interface TraceReaderFixture {
  /** Where the spans of the adapter's store are written. */
  readonly exporter: SpanExporter;
  readonly reader: TraceReader;
  close(): Promise<void>;
}

const POLL_DEADLINE_MS = 10_000;

/** A service name no other test run uses; mixed case, to check it is compared lower-cased. */
function uniqueService(prefix: string): string {
  return `${prefix}-Contract-${crypto.randomUUID().slice(0, 8)}`;
}

/**
 * Tracers of several services writing into one batching processor, so that
 * one batch mixes services as in a process running several.
 */
function recorder(exporter: SpanExporter) {
  let failed = 0;
  const counted = new BatchingSpanProcessor({
    exporter,
    scheduledDelayMs: 60_000,
    onOutcome: (outcome, spans) => {
      if (outcome !== "exported") failed += spans;
    },
  });
  const providers = new Map<string, TracerProvider>();
  return {
    tracer(service: string) {
      let provider = providers.get(service);
      if (provider === undefined) {
        provider = new TracerProvider({
          resource: resourceFromAttributes({ "service.name": service }),
          spanProcessors: [counted],
        });
        providers.set(service, provider);
      }
      return provider.getTracer("contract");
    },
    /** Sends every recorded span in one export; fails when the exporter refused them. */
    async flush() {
      await counted.forceFlush();
      assert.equal(failed, 0, "the exporter refused spans");
    },
    async close() {
      await counted.shutdown();
    },
  };
}

/** Polls `read` until `done` holds for its answer; fails with `description` at the deadline. */
async function eventually<T>(
  description: string,
  read: () => Promise<T>,
  done: (value: T) => boolean,
): Promise<T> {
  const deadline = Date.now() + POLL_DEADLINE_MS;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) {
      assert.fail(`Timed out waiting for ${description}; last answer: ${JSON.stringify(value)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function ended(span: Span, endTime?: number): string {
  span.end(endTime);
  return span.spanContext().traceId;
}

export function runTraceReaderContract(
  name: string,
  create: () => Promise<TraceReaderFixture>,
): void {
  async function withFixture(
    fn: (fixture: TraceReaderFixture, spans: ReturnType<typeof recorder>) => Promise<void>,
  ) {
    const fixture = await create();
    const spans = recorder(fixture.exporter);
    try {
      await fn(fixture, spans);
    } finally {
      await spans.close();
      await fixture.close();
    }
  }

  Deno.test(`${name} reads a trace back whole, each span under its own service`, async () => {
    await withFixture(async ({ reader }, spans) => {
      const gateway = uniqueService("gateway");
      const query = uniqueService("query");
      const root = spans.tracer(gateway).startSpan("GET /api/v1/tweets", {
        kind: SpanKind.SERVER,
        attributes: { "http.request.method": "GET", "http.response.status_code": 200 },
        // Clearly before the child, whose start then orders it second.
        startTime: Date.now() - 10,
      });
      const child = spans.tracer(query).startSpan("SELECT query.grants", {
        kind: SpanKind.CLIENT,
        attributes: { "db.system.name": "postgresql" },
      }, trace.setSpan(ROOT_CONTEXT, root));
      child.recordException(new Error("connection reset"));
      child.setStatus({ code: SpanStatusCode.ERROR, message: "connection reset" });
      child.end();
      const traceId = ended(root);
      await spans.flush();

      const read = await eventually(
        `trace ${traceId} with 2 spans`,
        () => reader.trace(traceId),
        (found) => found?.length === 2,
      );
      const rootId = root.spanContext().spanId;
      const byId = new Map(read!.map((span) => [span.id, span]));
      const readRoot = byId.get(rootId)!;
      const readChild = byId.get(child.spanContext().spanId)!;
      assert.equal(readRoot.traceId, traceId);
      assert.equal(readRoot.parentId, undefined);
      assert.equal(readRoot.name, "get /api/v1/tweets");
      assert.equal(readRoot.kind, "SERVER");
      assert.equal(readRoot.localEndpoint.serviceName, gateway.toLowerCase());
      assert.equal(readRoot.tags["http.request.method"], "GET");
      assert.equal(readRoot.tags["http.response.status_code"], "200");
      assert.ok(Number.isInteger(readRoot.timestamp) && readRoot.timestamp > 0);
      assert.ok(Number.isInteger(readRoot.duration) && readRoot.duration >= 0);

      assert.equal(readChild.parentId, rootId);
      assert.equal(readChild.name, "select query.grants");
      assert.equal(readChild.kind, "CLIENT");
      assert.equal(readChild.localEndpoint.serviceName, query.toLowerCase());
      assert.equal(readChild.tags["db.system.name"], "postgresql");
      assert.equal(readChild.tags["otel.status_code"], "ERROR");
      assert.equal(readChild.tags["error"], "connection reset");
      assert.deepEqual(readChild.annotations?.map((annotation) => annotation.value), [
        "exception",
      ]);
      // Reading order: by start time.
      assert.deepEqual(read!.map((span) => span.id), [rootId, child.spanContext().spanId]);
    });
  });

  Deno.test(`${name} answers undefined for an unknown trace and refuses a malformed id`, async () => {
    await withFixture(async ({ reader }) => {
      const unknown = crypto.randomUUID().replaceAll("-", "");
      assert.equal(await reader.trace(unknown), undefined);
      await assert.rejects(() => reader.trace("not-a-trace-id"), RangeError);
    });
  });

  Deno.test(`${name} lists a service's recent traces newest first, within the limit and lookback`, async () => {
    await withFixture(async ({ reader }, spans) => {
      const service = uniqueService("analytics");
      const other = uniqueService("wordcount");
      const now = Date.now();
      const at = (msAgo: number, tracerOf = service) => {
        const span = tracerOf === service
          ? spans.tracer(service).startSpan("GET /api/v1/analytics", { startTime: now - msAgo })
          : spans.tracer(tracerOf).startSpan("GET /api/v1/words", { startTime: now - msAgo });
        return ended(span, now - msAgo + 5);
      };
      const twoHoursAgo = at(7_200_000);
      const oldest = at(3000);
      const middle = at(2000);
      const newest = at(1000);
      const otherService = at(500, other);
      await spans.flush();

      const ids = (traces: TraceSpan[][]) => traces.map((spans) => spans[0]!.traceId);
      const recent = await eventually(
        `3 recent traces of ${service}`,
        () => reader.recentTraces({ serviceName: service, endTs: now }),
        (traces) => traces.length >= 3,
      );
      assert.deepEqual(ids(recent), [newest, middle, oldest]);
      assert.ok(!ids(recent).includes(otherService));
      assert.deepEqual(
        ids(await reader.recentTraces({ serviceName: service, limit: 2, endTs: now })),
        [newest, middle],
      );
      assert.deepEqual(
        ids(await reader.recentTraces({ serviceName: service, endTs: now - 1500 })),
        [middle, oldest],
      );
      assert.deepEqual(
        ids(
          await reader.recentTraces({
            serviceName: service.toUpperCase(),
            lookbackMs: 3 * 3_600_000,
            endTs: now,
          }),
        ),
        [newest, middle, oldest, twoHoursAgo],
      );
      assert.deepEqual(
        ids(await reader.recentTraces({ serviceName: other, endTs: now })),
        [otherService],
      );
      await assert.rejects(
        () => reader.recentTraces({ serviceName: service, limit: 0 }),
        RangeError,
      );
    });
  });

  Deno.test(`${name} names every service with recorded spans, lower-cased`, async () => {
    await withFixture(async ({ reader }, spans) => {
      const first = uniqueService("stream");
      const second = uniqueService("indexer");
      ended(spans.tracer(first).startSpan("twitter-topic publish"));
      ended(spans.tracer(second).startSpan("twitter-topic process"));
      await spans.flush();
      const names = await eventually(
        `service names ${first} and ${second}`,
        () => reader.serviceNames(),
        (names) => names.includes(first.toLowerCase()) && names.includes(second.toLowerCase()),
      );
      assert.deepEqual(names, [...names].sort());
    });
  });
}
