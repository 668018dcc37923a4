import assert from "node:assert/strict";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { configureTracing, inSpan, serviceTracer } from "../trace/tracing.ts";
import { tracedFetch } from "./traced_fetch.ts";

Deno.test("tracedFetch is a client span of the caller's trace and sends it as traceparent", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const received: (string | null)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    received.push(request.headers.get("traceparent"));
    return new Response("down", { status: request.url.endsWith("/fail") ? 503 : 200 });
  });
  try {
    const tracer = serviceTracer("wordcount");
    const base = `http://127.0.0.1:${server.addr.port}`;
    const traceId = await inSpan(tracer, "GET /api/v1/words/:word", {}, async (parent) => {
      await (await tracedFetch(tracer, `${base}/ok`, { peerService: "wordcount" })).text();
      await (await tracedFetch(tracer, `${base}/fail`)).text();
      return parent.spanContext().traceId;
    });
    const [ok, fail] = exporter.getFinishedSpans();
    assert.equal(ok?.name, "GET wordcount");
    assert.equal(ok?.kind, SpanKind.CLIENT);
    assert.equal(ok?.spanContext().traceId, traceId);
    assert.equal(received[0], `00-${traceId}-${ok?.spanContext().spanId}-01`);
    assert.equal(ok?.attributes["http.response.status_code"], 200);
    assert.equal(ok?.attributes["server.port"], server.addr.port);
    assert.equal(fail?.name, "GET");
    assert.equal(fail?.status.code, SpanStatusCode.ERROR);
    assert.equal(fail?.attributes["error.type"], "503");
    assert.equal(received[1], `00-${traceId}-${fail?.spanContext().spanId}-01`);
  } finally {
    await server.shutdown();
    configureTracing();
  }
});

Deno.test("tracedFetch records a network failure on its span and rethrows it", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  // A port nothing listens on: bound then closed.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await assert.rejects(() => tracedFetch(serviceTracer("query"), `http://127.0.0.1:${port}/`));
  const [span] = exporter.getFinishedSpans();
  assert.equal(span?.status.code, SpanStatusCode.ERROR);
  assert.ok(span?.events.some((event) => event.name === "exception"));
  configureTracing();
});
