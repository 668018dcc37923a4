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
import { freePort, startMain } from "./_testing.ts";
import { VERSIONS } from "../scripts/engines/versions.ts";

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
    const { urls, managementUrls } = system;
    const tokenEndpoint = `${urls.identity}/realms/twitterapi/protocol/openid-connect/token`;
    const authorization = `Bearer ${await passwordGrantToken(tokenEndpoint, "app_user")}`;
    const reader = new ZipkinTraceReader({ url: ZIPKIN_URL });

    // Warmed up with another user, so that app_user's grants are looked up in the traced request.
    const warmUp = `Bearer ${await passwordGrantToken(tokenEndpoint, "app_admin")}`;
    await waitFor("query and wordcount reachable through the gateway", async () => {
      const statuses = await Promise.all(["/api/v1/tweets?text=kafka", "/api/v1/words/kafka"].map(
        async (path) => {
          const response = await fetch(`${urls.gateway}${path}`, {
            headers: { authorization: warmUp },
          });
          await response.body?.cancel();
          return response.status;
        },
      ));
      return statuses.every((status) => status === 200);
    });
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
        const metrics = await (await fetch(`${managementUrls[service]}/metrics`)).text();
        const exported = /^tracing_spans_exported_total (\d+)$/m.exec(metrics);
        return exported !== null && Number(exported[1]) > 0 &&
          /^tracing_spans_dropped_total 0$/m.test(metrics);
      });
    }
  } finally {
    await system.stop();
  }
});

/** Accepts connections and never answers: a Zipkin that hangs. */
function hangingServer(port: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const connections: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const connection of listener) connections.push(connection);
    } catch {
      // Closed.
    }
  })();
  return {
    get connections() {
      return connections.length;
    },
    async close() {
      listener.close();
      for (const connection of connections) connection.close();
      await accepting;
    },
  };
}

/** A Zipkin of the test's own on `port` (never the shared one), from the engines' cached jar. */
async function privateZipkin(port: number) {
  const jar = new URL(
    `../.data/cache/zipkin-${VERSIONS.zipkin}/zipkin-server-${VERSIONS.zipkin}-exec.jar`,
    import.meta.url,
  ).pathname;
  await Deno.stat(jar).catch(() => {
    throw new Error(`No Zipkin jar at ${jar}: run \`deno task engines up zipkin\` once`);
  });
  const process = new Deno.Command("/usr/lib/jvm/java-17-openjdk-amd64/bin/java", {
    args: [
      "-Xms32m",
      "-Xmx128m",
      "-jar",
      jar,
      "--armeria.ports[0].ip=127.0.0.1",
      `--armeria.ports[0].port=${port}`,
      "--armeria.ports[0].protocols[0]=http",
    ],
    env: { STORAGE_TYPE: "mem", MEM_MAX_SPANS: "10000", COLLECTOR_SCRIBE_ENABLED: "false" },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    try {
      process.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    await process.status;
  };
  try {
    await waitFor(`the private Zipkin at ${url}`, async () => {
      try {
        const response = await fetch(`${url}/health`);
        await response.body?.cancel();
        return response.ok;
      } catch {
        return false;
      }
    }, 180_000);
  } catch (error) {
    await stop();
    throw error;
  }
  return { url, stop };
}

function metricValue(metrics: string, name: string): number {
  const match = new RegExp(`^${name} (\\d+)$`, "m").exec(metrics);
  assert.ok(match, `no ${name} in /metrics`);
  return Number(match[1]);
}

Deno.test("Zipkin down: requests keep succeeding, lost spans are counted, export resumes when it is back", async () => {
  const port = freePort();
  let hanging: ReturnType<typeof hangingServer> | undefined = hangingServer(port);
  const system = await startMain(["registry", "identity", "gateway", "query", "analytics"], {
    ZIPKIN_URL: `http://127.0.0.1:${port}`,
    TRACE_EXPORT_INTERVAL_MS: "50",
    TRACE_EXPORT_BATCH_SIZE: "5",
    TRACE_EXPORT_QUEUE_SIZE: "10",
    // Far longer than the test waits: a hung export must hold no request up.
    TRACE_EXPORT_TIMEOUT_MS: "600000",
  });
  let zipkin: Awaited<ReturnType<typeof privateZipkin>> | undefined;
  try {
    const { urls, managementUrls } = system;
    const tokenEndpoint = `${urls.identity}/realms/twitterapi/protocol/openid-connect/token`;
    const authorization = `Bearer ${await passwordGrantToken(tokenEndpoint, "app_user")}`;
    const search = async (traceparent?: string) => {
      const response = await fetch(`${urls.gateway}/api/v1/tweets?text=kafka&size=1`, {
        headers: { authorization, ...(traceparent === undefined ? {} : { traceparent }) },
        signal: AbortSignal.timeout(30_000),
      });
      await response.body?.cancel();
      return response.status;
    };
    const gatewayMetrics = async () =>
      await (await fetch(`${managementUrls.gateway}/metrics`)).text();

    await waitFor("query reachable through the gateway", async () => await search() === 200);
    // Zipkin hangs: the first batch's export never returns, the queue fills, and every
    // request still gets its answer.
    for (let i = 0; i < 30; i++) assert.equal(await search(), 200);
    assert.ok(hanging.connections > 0, "the exporter reached the hanging Zipkin");
    let metrics = await gatewayMetrics();
    assert.ok(metricValue(metrics, "tracing_spans_dropped_total") > 0, metrics);
    assert.equal(metricValue(metrics, "tracing_span_queue_size"), 10);
    assert.equal(metricValue(metrics, "tracing_spans_exported_total"), 0);

    // Zipkin goes away: the hung export fails, and so do the next ones; requests still succeed.
    await hanging.close();
    hanging = undefined;
    for (let i = 0; i < 5; i++) assert.equal(await search(), 200);
    await waitFor(
      "failed exports counted",
      async () => metricValue(await gatewayMetrics(), "tracing_spans_export_failed_total") > 0,
    );

    // Zipkin is back: new spans reach it.
    zipkin = await privateZipkin(port);
    const resumed = testTraceparent();
    await waitFor("a traced request exported to the returned Zipkin", async () => {
      assert.equal(await search(resumed.header), 200);
      const trace = await new ZipkinTraceReader({ url: zipkin!.url }).trace(resumed.traceId);
      const services = new Set(trace?.map((span) => span.localEndpoint.serviceName));
      return services.has("gateway") && services.has("query") && services.has("analytics");
    }, 60_000);
    metrics = await gatewayMetrics();
    assert.ok(metricValue(metrics, "tracing_spans_exported_total") > 0, metrics);
  } finally {
    await system.stop();
    await hanging?.close();
    await zipkin?.stop();
  }
});
