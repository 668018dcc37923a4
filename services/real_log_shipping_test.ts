/**
 * Log shipping on the real Elasticsearch, as users run it: `services/main.ts`
 * with registry, identity, gateway, query and analytics in a child process
 * shipping to Elasticsearch (through a relay the test kills and revives, in
 * front of the shared engine, which is never stopped), in indices of this
 * run's own prefix, deleted after.
 */
import assert from "node:assert/strict";
import { Client } from "@elastic/elasticsearch";
import { ElasticsearchLogReader } from "../shared/log/elasticsearch_log_reader.ts";
import type { LogEntry } from "../shared/log/log_reader.ts";
import {
  assertElasticsearchReachable,
  deleteLogIndices,
  ELASTICSEARCH_URL,
  testLogIndexPrefix,
} from "../shared/testing/elasticsearch.ts";
import { startKillableRelay } from "../shared/testing/http_servers.ts";
import { waitFor } from "../shared/testing/wait.ts";
import { clientCredentialsToken, passwordGrantToken } from "./identity/_testing.ts";

const MAIN = new URL("./main.ts", import.meta.url).pathname;
const SERVICES = ["registry", "identity", "gateway", "query", "analytics"];

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

function randomHex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** The child's JSON log lines, read in the background and all kept. */
function collectLines(stream: ReadableStream<Uint8Array>): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  void (async () => {
    let buffer = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (buffer + chunk).split("\n");
      buffer = parts.pop()!;
      lines.push(...parts.filter((part) => part !== "").map((part) => JSON.parse(part)));
    }
  })();
  return lines;
}

/** The value of an unlabelled (or `reason`-labelled) series in a Prometheus text page. */
function sample(metrics: string, series: string): number {
  const escaped = series.replace(/[{}"=]/g, (char) => `\\${char}`);
  const match = new RegExp(`^${escaped} (\\S+)$`, "m").exec(metrics);
  return match === null ? 0 : Number(match[1]);
}

Deno.test("a request's log lines reach Elasticsearch by its trace id from every service it passed; an outage only drops and counts lines", async () => {
  await assertElasticsearchReachable();
  const client = new Client({ node: ELASTICSEARCH_URL });
  const indexPrefix = testLogIndexPrefix();
  const reader = new ElasticsearchLogReader(client, { indexPrefix });
  const relay = startKillableRelay(ELASTICSEARCH_URL);
  const ports = Object.fromEntries(SERVICES.map((name) => [name, freePort()]));
  // The gateway answers /ready and /metrics on its management port only.
  const gatewayManagementPort = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-sys=hostname,osRelease,homedir",
      MAIN,
      ...SERVICES,
    ],
    env: {
      NO_COLOR: "1",
      LOG_FORMAT: "json",
      LOG_SHIPPING: "elasticsearch",
      LOG_SHIPPING_ELASTICSEARCH_URL: relay.url,
      LOG_SHIPPING_INDEX_PREFIX: indexPrefix,
      LOG_SHIPPING_FLUSH_INTERVAL_MS: "100",
      LOG_SHIPPING_QUEUE_SIZE: "20",
      REGISTRY_URLS: `http://127.0.0.1:${ports.registry}`,
      OIDC_ISSUER: `http://127.0.0.1:${ports.identity}/realms/twitterapi`,
      ...Object.fromEntries(
        SERVICES.map((name) => [`${name.toUpperCase()}_PORT`, String(ports[name])]),
      ),
      GATEWAY_MANAGEMENT_PORT: String(gatewayManagementPort),
    },
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = collectLines(child.stdout);
  const url = (service: string) => `http://127.0.0.1:${ports[service]}`;
  const managementUrl = (service: string) =>
    service === "gateway" ? `http://127.0.0.1:${gatewayManagementPort}` : url(service);
  // A hung child fails the test instead of hanging it.
  const watchdog = setTimeout(() => child.kill("SIGKILL"), 120_000);

  const latenciesMs: number[] = [];
  /** A search through the gateway under a trace of the test's own; its trace id. */
  async function tracedSearch(authorization: string): Promise<string> {
    const traceId = randomHex(16);
    const started = performance.now();
    const response = await fetch(`${url("gateway")}/api/v2/tweets?text=kafka&size=1`, {
      headers: { authorization, traceparent: `00-${traceId}-${randomHex(8)}-01` },
    });
    await response.body?.cancel();
    latenciesMs.push(performance.now() - started);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("traceresponse")?.split("-")[1], traceId);
    return traceId;
  }

  async function linesOfTrace(
    traceId: string,
    services: readonly string[],
    timeoutMs?: number,
  ): Promise<LogEntry[]> {
    let found: LogEntry[] = [];
    try {
      await waitFor(`log lines of trace ${traceId} from ${services.join(", ")}`, async () => {
        found = await reader.search({ traceId });
        const seen = new Set(found.map((entry) => entry.service));
        return services.every((service) => seen.has(service));
      }, timeoutMs);
    } catch (error) {
      const seen = found.map((entry) => `${entry.service}: ${entry.message}`);
      throw new Error(`${error}; found: ${JSON.stringify(seen)}`);
    }
    return found;
  }

  try {
    for (const service of SERVICES) {
      await waitFor(`${service} ready`, async () => {
        try {
          const response = await fetch(`${managementUrl(service)}/ready`);
          await response.body?.cancel();
          return response.status === 200;
        } catch {
          return false;
        }
      });
    }
    const tokenEndpoint = `${url("identity")}/realms/twitterapi/protocol/openid-connect/token`;
    // Reading the registry takes a token of a client with the registry's reader role.
    const registryReader = {
      authorization: `Bearer ${await clientCredentialsToken(tokenEndpoint, "prometheus")}`,
    };
    await waitFor("query and analytics registered", async () => {
      const response = await fetch(`${url("registry")}/api/v1/registry/services`, {
        headers: registryReader,
      });
      if (response.status !== 200) {
        await response.body?.cancel();
        return false;
      }
      const { services } = await response.json();
      const names = new Set(services.map((entry: { service: string }) => entry.service));
      return names.has("query") && names.has("analytics");
    });
    const authorization = `Bearer ${await passwordGrantToken(tokenEndpoint, "app_super_user")}`;

    // gateway -> query -> analytics (the search's word counts), one trace. Until
    // query's discovery has seen analytics, a search goes without word counts.
    let traceId = "";
    let found: LogEntry[] = [];
    for (let attempt = 1; found.length === 0; attempt++) {
      traceId = await tracedSearch(authorization);
      try {
        found = await linesOfTrace(traceId, ["gateway", "query", "analytics"], 5_000);
      } catch (error) {
        if (attempt === 5) throw error;
      }
    }
    const gatewayLine = found.find((entry) => entry.service === "gateway")!;
    assert.match(gatewayLine.message, /GET \/api\/v2\/tweets 200/);
    assert.equal(gatewayLine.traceId, traceId);
    assert.match(gatewayLine.spanId ?? "", /^[0-9a-f]{16}$/);
    assert.ok(gatewayLine.instance?.startsWith("gateway-"));
    assert.ok(
      found.some((entry) =>
        entry.service === "analytics" && /analytics\/words/.test(entry.message)
      ),
    );
    for (let index = 1; index < found.length; index++) {
      assert.ok(found[index - 1]!.timestamp >= found[index]!.timestamp, "newest first");
    }

    // Elasticsearch down: requests still succeed, lines beyond the queue are dropped and counted.
    for (let index = 0; index < 15; index++) await tracedSearch(authorization);
    const shippingUp = latenciesMs.splice(0);
    relay.kill();
    for (let index = 0; index < 15; index++) await tracedSearch(authorization);
    const shippingDown = latenciesMs.splice(0);
    // Latency is printed, not asserted (timing under load is no test result).
    Deno.stderr.writeSync(
      new TextEncoder().encode(
        `search latency through the gateway, median of 15: shipping up ${
          median(shippingUp).toFixed(1)
        } ms, Elasticsearch down ${median(shippingDown).toFixed(1)} ms\n`,
      ),
    );
    await waitFor("drops counted on the gateway's /metrics", async () => {
      const metrics = await (await fetch(`${managementUrl("gateway")}/metrics`)).text();
      return sample(metrics, 'log_records_dropped_total{reason="queue_full"}') > 0 &&
        sample(metrics, "log_shipping_up") === 0;
    });
    const queryMetrics = await (await fetch(`${url("query")}/metrics`)).text();
    assert.ok(sample(queryMetrics, 'log_records_dropped_total{reason="queue_full"}') > 0);

    // Back again: shipping resumes, and the outage was said once.
    relay.revive();
    let gatewayMetrics = "";
    await waitFor("shipping up again", async () => {
      gatewayMetrics = await (await fetch(`${managementUrl("gateway")}/metrics`)).text();
      return sample(gatewayMetrics, "log_shipping_up") === 1;
    });
    assert.ok(sample(gatewayMetrics, "log_records_shipped_total") > 0);
    const afterTraceId = await tracedSearch(authorization);
    await linesOfTrace(afterTraceId, ["gateway", "query", "analytics"]);
    const outageLines = lines.filter((line) => /^Cannot ship log lines/.test(String(line.message)));
    const recoveryLines = lines.filter((line) =>
      /^Shipping log lines to .* again after/.test(String(line.message))
    );
    assert.equal(outageLines.length, 1, JSON.stringify(outageLines));
    assert.equal(recoveryLines.length, 1, JSON.stringify(recoveryLines));
    // The outage lines went to stdout only.
    assert.deepEqual(await reader.search({ text: "Cannot ship log lines" }), []);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    clearTimeout(watchdog);
    await relay.close();
    await deleteLogIndices(client, indexPrefix);
    await client.close();
  }
});
