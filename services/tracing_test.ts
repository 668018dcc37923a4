/**
 * Traces of the running system in the real Zipkin (`deno task engines up
 * zipkin`): `main.ts all` exports to it, and one request through the gateway
 * is one trace there, each service's spans under its own name. These tests
 * fail, never skip, when Zipkin is not reachable.
 */
import assert from "node:assert/strict";
import type { TraceSpan } from "../shared/trace/trace_span.ts";
import { ZipkinTraceReader } from "../shared/trace/zipkin_trace_reader.ts";
import { waitFor } from "../shared/testing/wait.ts";
import { passwordGrantToken } from "./identity/_testing.ts";
import { startMain } from "./_testing.ts";

const ZIPKIN_URL = Deno.env.get("ZIPKIN_URL") || "http://127.0.0.1:9411";

async function assertZipkinUp(): Promise<void> {
  try {
    const response = await fetch(`${ZIPKIN_URL}/health`, { signal: AbortSignal.timeout(2000) });
    await response.body?.cancel();
    if (!response.ok) throw new Error(`/health answered ${response.status}`);
  } catch (error) {
    throw new Error(
      `Zipkin is not reachable at ${ZIPKIN_URL} (${
        String(error)
      }): run \`deno task engines up zipkin\``,
    );
  }
}

function randomHex(bytes: number): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (byte) => byte.toString(16).padStart(2, "0"),
  ).join("");
}

/** A `traceparent` of the test's own: the caller the gateway's span continues. */
function testTraceparent(): { traceId: string; parentId: string; header: string } {
  const traceId = randomHex(16);
  const parentId = randomHex(8);
  return { traceId, parentId, header: `00-${traceId}-${parentId}-01` };
}

/** Waits until Zipkin holds spans of every one of `services` in the trace. */
async function traceWith(
  reader: ZipkinTraceReader,
  traceId: string,
  services: readonly string[],
): Promise<TraceSpan[]> {
  let spans: TraceSpan[] = [];
  await waitFor(`trace ${traceId} in Zipkin with spans of ${services.join(", ")}`, async () => {
    spans = await reader.trace(traceId) ?? [];
    const found = new Set(spans.map((span) => span.localEndpoint.serviceName));
    return services.every((service) => found.has(service));
  }, 30_000);
  return spans;
}

function spanOf(
  spans: readonly TraceSpan[],
  service: string,
  matches: (span: TraceSpan) => boolean,
  description: string,
): TraceSpan {
  const span = spans.find((span) => span.localEndpoint.serviceName === service && matches(span));
  assert.ok(
    span,
    `no ${description} of ${service} in ${
      JSON.stringify(spans.map((s) => [s.localEndpoint.serviceName, s.kind, s.name]))
    }`,
  );
  return span;
}

Deno.test("a request through the gateway is one trace in Zipkin: gateway, query, analytics, wordcount", async () => {
  await assertZipkinUp();
  const system = await startMain(["all"], {
    ZIPKIN_URL,
    TRACE_EXPORT_INTERVAL_MS: "100",
    STREAM_COUNT: "20",
    STREAM_RATE_PER_SECOND: "200",
  });
  try {
    const { urls } = system;
    const tokenEndpoint = `${urls.identity}/realms/twitterapi/protocol/openid-connect/token`;
    const authorization = `Bearer ${await passwordGrantToken(tokenEndpoint, "app_user")}`;
    const reader = new ZipkinTraceReader({ url: ZIPKIN_URL });

    // A search: the gateway calls query, which looks up the user's grants and asks analytics
    // for the word counts.
    const search = testTraceparent();
    const response = await fetch(`${urls.gateway}/api/v1/tweets?text=kafka&size=5`, {
      headers: { authorization, traceparent: search.header },
    });
    assert.equal(response.status, 200);
    await response.body?.cancel();
    const traceresponse = response.headers.get("traceresponse") ?? "";
    assert.match(traceresponse, new RegExp(`^00-${search.traceId}-[0-9a-f]{16}-01$`));

    const spans = await traceWith(reader, search.traceId, ["gateway", "query", "analytics"]);
    assert.ok(spans.every((span) => span.traceId === search.traceId));
    const gateway = spanOf(spans, "gateway", (s) => s.kind === "SERVER", "server span");
    assert.equal(gateway.parentId, search.parentId, "the gateway continues the caller's trace");
    assert.equal(gateway.id, traceresponse.split("-")[2], "traceresponse names the gateway span");
    assert.equal(gateway.tags["http.request.method"], "GET");
    assert.equal(gateway.tags["http.response.status_code"], "200");
    const toQuery = spanOf(spans, "gateway", (s) => s.kind === "CLIENT", "client span");
    assert.equal(toQuery.parentId, gateway.id);
    const query = spanOf(spans, "query", (s) => s.kind === "SERVER", "server span");
    assert.equal(query.parentId, toQuery.id);
    assert.equal(query.name, "get /api/v1/tweets");
    assert.equal(query.tags["http.route"], "/api/v1/tweets");
    const grants = spanOf(
      spans,
      "query",
      (s) => s.tags["db.system.name"] === "postgresql" && s.name.endsWith("grants"),
      "grant lookup",
    );
    assert.equal(grants.kind, "CLIENT");
    const toAnalytics = spanOf(
      spans,
      "query",
      (s) => s.kind === "CLIENT" && s.name === "get analytics",
      "client span to analytics",
    );
    const analytics = spanOf(spans, "analytics", (s) => s.kind === "SERVER", "server span");
    assert.equal(analytics.parentId, toAnalytics.id);

    // A word count: the gateway calls wordcount.
    const words = testTraceparent();
    const wordsResponse = await fetch(`${urls.gateway}/api/v1/words/kafka`, {
      headers: { authorization, traceparent: words.header },
    });
    await wordsResponse.body?.cancel();
    assert.ok(wordsResponse.status < 500, `words answered ${wordsResponse.status}`);
    const wordSpans = await traceWith(reader, words.traceId, ["gateway", "wordcount"]);
    const wordcount = spanOf(wordSpans, "wordcount", (s) => s.kind === "SERVER", "server span");
    assert.equal(wordcount.name, "get /api/v1/words/:word");

    // Every service of the process reports its exported spans on its own /metrics.
    for (const service of ["gateway", "query", "analytics"]) {
      await waitFor(`${service}'s exported span count`, async () => {
        const metrics = await (await fetch(`${urls[service]}/metrics`)).text();
        const exported = /^tracing_spans_exported_total (\d+)$/m.exec(metrics);
        return exported !== null && Number(exported[1]) > 0 &&
          /^tracing_spans_dropped_total 0$/m.test(metrics);
      });
    }
  } finally {
    await system.stop();
  }
});
