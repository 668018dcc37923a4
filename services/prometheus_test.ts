/**
 * Prometheus, on the real engine: `main.ts all` as a child process with its
 * own registry and identity on free ports, and a private Prometheus (from
 * Debian's package, as `deno task engines up prometheus` installs it) with the
 * configuration the engine gets, pointed at that registry. Every instance
 * must become a healthy target through the registry's HTTP service
 * discovery (read with the `prometheus` client's token), and PromQL must
 * answer for the gateway's request rate.
 */
import assert from "node:assert/strict";
import { preparePrometheus, PROMETHEUS_BIN } from "../scripts/engines/prometheus.ts";
import {
  DEV_CLIENT_SECRET,
  JOB,
  prometheusConfig,
  tokenUrl,
} from "../scripts/engines/prometheus_config.ts";
import { waitFor } from "../shared/testing/wait.ts";
import { passwordGrantToken } from "./identity/_testing.ts";
import { selectServices } from "./main.ts";

const MAIN = new URL("./main.ts", import.meta.url).pathname;
const PERMISSIONS = [
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--allow-sys=hostname,osRelease,homedir",
];

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

async function requirePrometheus(): Promise<void> {
  try {
    await Deno.stat(PROMETHEUS_BIN);
  } catch {
    assert.fail(
      `Prometheus is not installed (${PROMETHEUS_BIN}): run \`deno task engines up prometheus\``,
    );
  }
}

interface ActiveTarget {
  labels: Record<string, string>;
  discoveredLabels: Record<string, string>;
  scrapePool: string;
  scrapeUrl: string;
  health: string;
  lastError: string;
}

interface RegisteredInstance {
  service: string;
  instanceId: string;
  baseUrl: string;
  version: string;
  metadata: Record<string, string>;
}

/** A client-credentials token of the realm's `prometheus` client: the registry's reads need one. */
async function prometheusToken(issuer: string): Promise<string> {
  const body = await json<{ access_token: string }>(tokenUrl(issuer), {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      authorization: `Basic ${btoa(`prometheus:${DEV_CLIENT_SECRET}`)}`,
    },
    body: "grant_type=client_credentials",
  });
  return body.access_token;
}

async function json<T>(url: string, init?: RequestInit): Promise<T> {
  const response = await fetch(url, init);
  const body = await response.text();
  assert.ok(response.ok, `${url} answered ${response.status}: ${body}`);
  return JSON.parse(body) as T;
}

async function registeredInstances(
  registry: string,
  token: string,
): Promise<RegisteredInstance[]> {
  const init = { headers: { authorization: `Bearer ${token}` } };
  const { services } = await json<{ services: { service: string }[] }>(
    `${registry}/api/v1/registry/services`,
    init,
  );
  const instances: RegisteredInstance[] = [];
  for (const { service } of services) {
    const snapshot = await json<{ instances: RegisteredInstance[] }>(
      `${registry}/api/v1/registry/services/${service}/instances`,
      init,
    );
    instances.push(...snapshot.instances);
  }
  return instances;
}

/** An instant query's vector: one [labels, value] per series. */
async function query(prometheus: string, promql: string) {
  const answer = await json<{
    status: string;
    data: {
      resultType: string;
      result: { metric: Record<string, string>; value: [number, string] }[];
    };
  }>(`${prometheus}/api/v1/query?query=${encodeURIComponent(promql)}`);
  assert.equal(answer.status, "success", promql);
  return answer.data.result.map((sample) => [sample.metric, Number(sample.value[1])] as const);
}

Deno.test("Prometheus has every running instance as a healthy target, found through the registry, and answers a query for the gateway's request rate", async () => {
  await requirePrometheus();
  const registryPort = freePort();
  const identityPort = freePort();
  const registry = `http://127.0.0.1:${registryPort}`;
  const issuer = `http://127.0.0.1:${identityPort}/realms/twitterapi`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN, "all"],
    env: {
      NO_COLOR: "1",
      LOG_LEVEL: "warning",
      REGISTRY_PORT: String(registryPort),
      REGISTRY_URLS: registry,
      IDENTITY_PORT: String(identityPort),
      OIDC_ISSUER: issuer,
      GATEWAY_PORT: "0",
      GATEWAY_MANAGEMENT_PORT: "0",
      STREAM_PORT: "0",
      INDEXER_PORT: "0",
      WORDCOUNT_PORT: "0",
      QUERY_PORT: "0",
      ANALYTICS_PORT: "0",
      CONFIG_PORT: "0",
      STREAM_RATE_PER_SECOND: "5",
    },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();

  const dataDir = await Deno.makeTempDir({ prefix: "prometheus-test-" });
  const prometheusPort = freePort();
  const prometheusUrl = `http://127.0.0.1:${prometheusPort}`;
  const process = await preparePrometheus(dataDir, {
    config: prometheusConfig({
      registryUrls: [registry],
      oauth2: {
        clientId: "prometheus",
        clientSecret: DEV_CLIENT_SECRET,
        tokenUrl: tokenUrl(issuer),
      },
      scrapeIntervalSeconds: 1,
      refreshIntervalSeconds: 1,
    }),
    listen: `127.0.0.1:${prometheusPort}`,
  });
  const prometheus = new Deno.Command(process.command, {
    args: [...process.args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const prometheusLog = new Response(prometheus.stderr).text();
  let failure: unknown;
  try {
    await waitFor("Prometheus to be ready", async () => {
      const ready = await fetch(`${prometheusUrl}/-/ready`).catch(() => undefined);
      await ready?.body?.cancel();
      return ready?.status === 200;
    });
    // Every service of `all` registered, but the registry, which lists itself.
    const registering = selectServices(["all"])!.length - 1;
    let instances: RegisteredInstance[] = [];
    await waitFor("every service to register", async () => {
      const token = await prometheusToken(issuer).catch(() => undefined);
      if (token === undefined) return false;
      instances = await registeredInstances(registry, token).catch(() => []);
      return instances.length === registering;
    }, 60_000);

    let targets: ActiveTarget[] = [];
    const expected = [
      { service: "registry", baseUrl: registry, metricsUrl: `${registry}/metrics` },
      // Scraped where each registered: the gateway's management port, the others' base URL.
      ...instances.map(({ service, instanceId, baseUrl, metadata }) => ({
        service,
        instanceId,
        baseUrl,
        metricsUrl: metadata.metricsUrl ?? `${baseUrl}/metrics`,
      })),
    ];
    await waitFor("every instance to be a healthy Prometheus target", async () => {
      const answer = await json<{ data: { activeTargets: ActiveTarget[] } }>(
        `${prometheusUrl}/api/v1/targets?state=active`,
      );
      targets = answer.data.activeTargets;
      return targets.length === expected.length &&
        targets.every((target) => target.health === "up");
    }, 60_000).catch((error) => {
      throw new Error(`${error.message}; targets: ${JSON.stringify(targets, null, 1)}`);
    });
    for (const instance of expected) {
      const target = targets.find((candidate) => candidate.scrapeUrl === instance.metricsUrl);
      assert.ok(target !== undefined, `no target scrapes ${instance.metricsUrl}`);
      assert.equal(target.scrapePool, JOB);
      assert.equal(target.labels.service, instance.service);
      if ("instanceId" in instance) assert.equal(target.labels.instance, instance.instanceId);
      assert.ok(
        target.discoveredLabels.__meta_registry_version !== "",
        `${instance.service}: the registry's version label`,
      );
    }

    // Prometheus read the registry with the `prometheus` client's own token.
    const identityMetrics = await (await fetch(
      `${issuer.replace(/\/realms\/twitterapi$/, "")}/metrics`,
    )).text();
    assert.match(
      identityMetrics,
      /identity_tokens_issued_total\{client="prometheus",grant_type="client_credentials"\} [1-9]/,
    );

    // Traffic through the gateway, until Prometheus sees it as a rate.
    const gateway = instances.find((instance) => instance.service === "gateway")!.baseUrl;
    const token = await passwordGrantToken(tokenUrl(issuer), "app_user");
    const promql =
      'sum(rate(http_requests_total{service="gateway",route!~"/metrics|/health|/ready"}[5s]))';
    let rate = 0;
    await waitFor("Prometheus to answer the gateway's request rate", async () => {
      for (let i = 0; i < 5; i++) {
        const response = await fetch(`${gateway}/api/v1/tweets?text=kafka`, {
          headers: { authorization: `Bearer ${token}` },
        });
        await response.body?.cancel();
        // The query service answers 503 until its search index is ready; a 429
        // (this user's limit, reached while Prometheus is slow to scrape) is traffic too.
        if (response.status !== 200 && response.status !== 429) return false;
      }
      rate = (await query(prometheusUrl, promql))[0]?.[1] ?? 0;
      return rate > 0;
    }, 60_000);
    assert.ok(rate > 0, `gateway request rate ${rate}`);

    // Every instance reports its version once, and no metric label clashes
    // with a target label (Prometheus would rename it exported_<name>).
    const info = await query(prometheusUrl, "service_info");
    assert.equal(info.length, expected.length, JSON.stringify(info));
    for (const [labels] of info) assert.ok(labels.version !== undefined && labels.version !== "");
    const clashes = await query(
      prometheusUrl,
      'count by (__name__) ({exported_service=~".+"} or {exported_instance=~".+"} or {exported_job=~".+"})',
    );
    assert.deepEqual(clashes, [], "metrics with labels that clash with target labels");
  } catch (error) {
    failure = error;
  }
  // The private Prometheus and the services stop with the test, passed or not.
  prometheus.kill("SIGTERM");
  child.kill("SIGTERM");
  await Promise.all([prometheus.status, child.status]);
  const [prometheusText, childText] = await Promise.all([prometheusLog, stderr]);
  await Deno.remove(dataDir, { recursive: true });
  if (failure !== undefined) {
    const tail = (text: string) => text.split("\n").slice(-30).join("\n");
    throw new Error(
      `${failure instanceof Error ? failure.message : String(failure)}\n` +
        `Prometheus log:\n${tail(prometheusText)}\nservices' stderr:\n${tail(childText)}`,
      { cause: failure },
    );
  }
});
