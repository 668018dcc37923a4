/**
 * Live refresh end to end: a config service on a temporary copy of a
 * repository, two gateways that load their settings from it and follow it,
 * and their `RateLimit-Policy` as the repository changes.
 */
import assert from "node:assert/strict";
import type { TokenSource } from "../../shared/auth/client_credentials.ts";
import type { RefreshableConfig } from "../../shared/config/refreshable_config.ts";
import {
  ConfigServiceError,
  loadRemoteConfig,
  type RemoteConfig,
} from "../../shared/config/remote_config.ts";
import { ConfigError } from "../../shared/config/setting.ts";
import { serveApp } from "../../shared/http/serve.ts";
import type { HttpServer } from "../../shared/http/serve.ts";
import { MemoryRateLimitStore } from "../../shared/rate_limit/memory_rate_limit_store.ts";
import { startTestServer } from "../../shared/testing/http_servers.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { createTestIssuer, type TestIssuer } from "../../shared/testing/test_issuer.ts";
import { delay, waitFor } from "../../shared/testing/wait.ts";
import {
  type AppConfig,
  ENVIRONMENT_ONLY,
  loadConfig,
  REFRESHABLE,
  SETTING_NAMES,
} from "../config.ts";
import { createGatewayService } from "../gateway/main.ts";
import { DEFAULT_BREAKER, type GatewayRoute } from "../gateway/routes.ts";
import { createConfigService } from "./main.ts";

const ROUTES: readonly GatewayRoute[] = [{
  prefix: "/api/v1/tweets",
  service: "query",
  auth: { mode: "none" },
  rateLimit: { policy: "tweets", limit: 600, windowMs: 60_000 },
  breaker: DEFAULT_BREAKER,
  timeoutMs: 2000,
  retries: 0,
  fallback: { retryAfterSec: 1 },
}];

function gatewayFile(limit: string): string {
  return `gateway:\n  rate-limits:\n    - ${limit}\n`;
}

/** The gateway's client credentials, as the issuer would sign them. */
function gatewayTokens(issuer: TestIssuer): TokenSource {
  return {
    token: () => issuer.token({ audience: "config", roles: ["service:gateway"], subject: "gw" }),
    invalidate: () => {},
  };
}

async function startConfigServer(
  issuer: TestIssuer,
  folder: string,
  port = 0,
): Promise<{ url: string; port: number; stop(): Promise<void> }> {
  const service = await createConfigService({
    config: loadConfig({ CONFIG_REPOSITORY: folder }),
    context: testContext("config"),
    verifier: issuer.verifier("config"),
  });
  await service.start();
  const server: HttpServer = serveApp(service.app, { hostname: "127.0.0.1", port });
  return {
    url: server.url,
    port: server.port,
    async stop() {
      await service.stop();
      await server.shutdown();
    },
  };
}

function remoteGateway(
  issuer: TestIssuer,
  url: string,
  cacheDir: string,
  options: { startTimeoutMs?: number; environment?: Record<string, string> } = {},
): Promise<RemoteConfig<AppConfig>> {
  return loadRemoteConfig({
    url,
    application: "gateway",
    profile: "default",
    tokens: gatewayTokens(issuer),
    environment: options.environment ?? {},
    load: loadConfig,
    names: SETTING_NAMES,
    refreshable: REFRESHABLE,
    environmentOnly: ENVIRONMENT_ONLY,
    cacheDir,
    startTimeoutMs: options.startTimeoutMs ?? 2_000,
    pollMs: 200,
    logger: testContext("gateway").logger,
  });
}

async function startGateway(configuration: RefreshableConfig<AppConfig>, upstream: string) {
  const context = testContext("gateway");
  const gateway = createGatewayService({
    config: configuration.current,
    configuration,
    context: { ...context, configStatus: () => configuration.status },
    discovery: {
      instances: () =>
        Promise.resolve([{
          service: "query",
          instanceId: "q",
          baseUrl: upstream,
          version: "t",
          metadata: {},
        }]),
    },
    rateLimitStore: new MemoryRateLimitStore(),
    routes: ROUTES,
  });
  await gateway.start();
  const server = serveApp(gateway.app, { hostname: "127.0.0.1", port: 0 });
  const management = serveApp(gateway.management!.app, { hostname: "127.0.0.1", port: 0 });
  return {
    async policy(): Promise<string | null> {
      const response = await fetch(`${server.url}/api/v1/tweets`);
      await response.body?.cancel();
      return response.headers.get("ratelimit-policy");
    },
    async ready() {
      return await (await fetch(`${management.url}/ready`)).json();
    },
    async metrics() {
      return await (await fetch(`${management.url}/metrics`)).text();
    },
    async stop() {
      await gateway.stop();
      await server.shutdown();
      await management.shutdown();
    },
  };
}

async function fixture() {
  const folder = await Deno.makeTempDir({ prefix: "config-repo-" });
  const cacheDir = await Deno.makeTempDir({ prefix: "config-cache-" });
  await Deno.writeTextFile(`${folder}/application.yml`, "log:\n  level: info\n");
  await Deno.writeTextFile(`${folder}/gateway.yml`, gatewayFile("tweets=5/60000"));
  const issuer = await createTestIssuer();
  const upstream = startTestServer(() => Response.json([]));
  return {
    folder,
    cacheDir,
    issuer,
    upstream,
    async [Symbol.asyncDispose]() {
      await upstream.shutdown();
      await Deno.remove(folder, { recursive: true });
      await Deno.remove(cacheDir, { recursive: true });
    },
  };
}

Deno.test("a rate-limit change in the repository reaches two running gateways within 2 s; an invalid one is refused", async () => {
  await using env = await fixture();
  const server = await startConfigServer(env.issuer, env.folder);
  const remotes = [
    await remoteGateway(env.issuer, server.url, env.cacheDir),
    await remoteGateway(env.issuer, server.url, env.cacheDir),
  ];
  const gateways = await Promise.all(
    remotes.map((remote) => startGateway(remote.config, env.upstream.url)),
  );
  try {
    for (const gateway of gateways) assert.equal(await gateway.policy(), '"tweets";q=5;w=60');
    const before = remotes[0]!.config.status.version;

    await Deno.writeTextFile(`${env.folder}/gateway.yml`, gatewayFile("tweets=7/30000"));
    const changedAt = Date.now();
    for (const gateway of gateways) {
      await waitFor(
        "the new policy",
        async () => await gateway.policy() === '"tweets";q=7;w=30',
        2_000 - (Date.now() - changedAt),
      );
    }
    const ready = await gateways[1]!.ready();
    assert.notEqual(ready.config.version, before);
    assert.equal(ready.config.source, "config-service");
    assert.deepEqual(ready.config.restartRequired, []);
    assert.match(
      await gateways[0]!.metrics(),
      new RegExp(`config_info\\{source="config-service",version="${ready.config.version}"\\} 1`),
    );

    // Invalid: a bad item, then a policy the route table lacks. Both refused, the old limit stays.
    for (const bad of ["tweets=lots/60000", "nope=1/1000"]) {
      await Deno.writeTextFile(`${env.folder}/gateway.yml`, gatewayFile(bad));
      await waitFor(
        "the refusal",
        () =>
          remotes.every((remote) =>
            remote.config.status.refused !== undefined &&
            remote.config.status.refused.version !== ready.config.version
          ),
        2_000,
      );
      for (const gateway of gateways) assert.equal(await gateway.policy(), '"tweets";q=7;w=30');
      for (const remote of remotes) {
        assert.match(remote.config.status.refused!.reason, /GATEWAY_RATE_LIMITS/);
      }
      assert.equal(remotes[0]!.config.status.version, ready.config.version);
      await Deno.writeTextFile(`${env.folder}/gateway.yml`, gatewayFile("tweets=7/30000"));
      await waitFor(
        "the valid copy back",
        () =>
          remotes.every((remote) =>
            remote.config.status.refused === undefined ||
            remote.config.status.version === ready.config.version
          ),
        2_000,
      );
    }

    // A restart-only setting is reported, not applied.
    await Deno.writeTextFile(
      `${env.folder}/gateway.yml`,
      `${gatewayFile("tweets=8/30000")}  port: 9999\n`,
    );
    await waitFor(
      "the restart-required report",
      async () => (await gateways[0]!.ready()).config.restartRequired.includes("GATEWAY_PORT"),
      2_000,
    );
    assert.equal(await gateways[0]!.policy(), '"tweets";q=8;w=30');
    assert.equal(remotes[0]!.config.current.gateway.port, 9092);
  } finally {
    for (const remote of remotes) remote.close();
    for (const gateway of gateways) await gateway.stop();
    await server.stop();
  }
});

Deno.test("the config service down during the run: gateways keep their limit and catch up when it returns", async () => {
  await using env = await fixture();
  let server = await startConfigServer(env.issuer, env.folder);
  const remote = await remoteGateway(env.issuer, server.url, env.cacheDir);
  const gateway = await startGateway(remote.config, env.upstream.url);
  try {
    assert.equal(await gateway.policy(), '"tweets";q=5;w=60');
    await server.stop();
    await Deno.writeTextFile(`${env.folder}/gateway.yml`, gatewayFile("tweets=9/60000"));
    await delay(600);
    assert.equal(
      await gateway.policy(),
      '"tweets";q=5;w=60',
      "the old limit stays while it is down",
    );
    server = await startConfigServer(env.issuer, env.folder, server.port);
    await waitFor(
      "the catch-up",
      async () => await gateway.policy() === '"tweets";q=9;w=60',
      5_000,
    );
  } finally {
    remote.close();
    await gateway.stop();
    await server.stop();
  }
});

Deno.test("the config service down at start: the cached copy is used, and without one the start fails clearly", async () => {
  await using env = await fixture();
  const server = await startConfigServer(env.issuer, env.folder);
  const first = await remoteGateway(env.issuer, server.url, env.cacheDir);
  const version = first.config.status.version;
  first.close();
  const deadUrl = server.url;
  await server.stop();

  const cached = await remoteGateway(env.issuer, deadUrl, env.cacheDir, { startTimeoutMs: 300 });
  try {
    assert.equal(cached.config.status.source, "cache");
    assert.equal(cached.config.status.version, version);
    assert.deepEqual(cached.config.current.gateway.rateLimits, ["tweets=5/60000"]);
  } finally {
    cached.close();
  }

  const empty = await Deno.makeTempDir({ prefix: "config-cache-" });
  try {
    await assert.rejects(
      () => remoteGateway(env.issuer, deadUrl, empty, { startTimeoutMs: 300 }),
      (error: unknown) =>
        error instanceof ConfigServiceError &&
        /did not answer within 300 ms.*no cached copy/.test(error.message),
    );
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("a bad value at start names its key and file; the environment wins over the repository", async () => {
  await using env = await fixture();
  const server = await startConfigServer(env.issuer, env.folder);
  try {
    await Deno.writeTextFile(
      `${env.folder}/gateway.yml`,
      "gateway:\n  trust-forwarded-for: maybe\n",
    );
    await assert.rejects(
      () => remoteGateway(env.issuer, server.url, env.cacheDir),
      (error: unknown) =>
        error instanceof ConfigError &&
        /GATEWAY_TRUST_FORWARDED_FOR \('gateway.trust-forwarded-for' in file:gateway.yml\): must be true or false/
          .test(error.message),
    );
    await Deno.writeTextFile(`${env.folder}/gateway.yml`, `gateway:\n  routes: '{"routes": []}'\n`);
    await assert.rejects(
      () => remoteGateway(env.issuer, server.url, env.cacheDir),
      /GATEWAY_ROUTES \('gateway.routes' in file:gateway.yml\): 'routes' must be a non-empty list/,
    );
    await Deno.writeTextFile(`${env.folder}/gateway.yml`, "event-log: kafka\n");
    await assert.rejects(
      () => remoteGateway(env.issuer, server.url, env.cacheDir),
      /'event-log' in file:gateway.yml: this setting configures the process/,
    );
    await Deno.writeTextFile(`${env.folder}/gateway.yml`, gatewayFile("tweets=5/60000"));
    const remote = await remoteGateway(env.issuer, server.url, env.cacheDir, {
      environment: { GATEWAY_RATE_LIMITS: "tweets=1/1000" },
    });
    assert.deepEqual(remote.config.current.gateway.rateLimits, ["tweets=1/1000"]);
    remote.close();
  } finally {
    await server.stop();
  }
});

/** gateway.yml with a route table of one route to query, its timeout and breaker as given. */
function routesFile(route: { timeoutMs: number; volumeThreshold: number; prefix?: string }) {
  const table = {
    routes: [{
      prefix: route.prefix ?? "/api/v1/tweets",
      service: "query",
      auth: { mode: "none" },
      rateLimit: { policy: "tweets", limit: 600, windowMs: 60_000 },
      breaker: {
        ...DEFAULT_BREAKER,
        errorThresholdPercentage: 1,
        volumeThreshold: route.volumeThreshold,
      },
      timeoutMs: route.timeoutMs,
      retries: 0,
      fallback: { retryAfterSec: 1 },
    }],
  };
  return `gateway:\n  routes: |\n    ${JSON.stringify(table)}\n`;
}

Deno.test("a route's timeout and breaker threshold changed in the repository reach a running gateway within 2 s; an invalid table is refused", async () => {
  await using env = await fixture();
  // Answers after 300 ms: in time for a 2 s timeout, late for a 100 ms one.
  const slow = startTestServer(async () => {
    await delay(300);
    return Response.json([]);
  });
  await Deno.writeTextFile(
    `${env.folder}/gateway.yml`,
    routesFile({ timeoutMs: 2000, volumeThreshold: 5 }),
  );
  const server = await startConfigServer(env.issuer, env.folder);
  const remote = await remoteGateway(env.issuer, server.url, env.cacheDir);
  const configuration = remote.config;
  const context = testContext("gateway");
  const gateway = createGatewayService({
    config: configuration.current,
    configuration,
    context: { ...context, configStatus: () => configuration.status },
    discovery: {
      instances: () =>
        Promise.resolve([{
          service: "query",
          instanceId: "q",
          baseUrl: slow.url,
          version: "t",
          metadata: {},
        }]),
    },
    rateLimitStore: new MemoryRateLimitStore(),
  });
  await gateway.start();
  const http = serveApp(gateway.app, { hostname: "127.0.0.1", port: 0 });
  async function call(path = "/api/v1/tweets"): Promise<{ status: number; detail?: string }> {
    const response = await fetch(`${http.url}${path}`);
    const body = await response.json();
    return { status: response.status, ...(response.ok ? {} : { detail: String(body.detail) }) };
  }
  try {
    assert.deepEqual(await call(), { status: 200 });

    // A shorter timeout: the slow upstream is now late.
    await Deno.writeTextFile(
      `${env.folder}/gateway.yml`,
      routesFile({ timeoutMs: 100, volumeThreshold: 5 }),
    );
    const changedAt = Date.now();
    await waitFor(
      "the new timeout",
      async () => (await call()).detail?.includes("did not answer in time") === true,
      2_000 - (Date.now() - changedAt),
    );
    // Under the old threshold (5 calls) a second failure leaves the circuit closed.
    assert.match((await call()).detail!, /did not answer in time/);

    // A breaker that opens on the first failure: the breaker is replaced by a fresh one.
    const before = configuration.status.version;
    await Deno.writeTextFile(
      `${env.folder}/gateway.yml`,
      routesFile({ timeoutMs: 100, volumeThreshold: 1 }),
    );
    const thresholdAt = Date.now();
    await waitFor(
      "the new breaker options",
      () => configuration.status.version !== before,
      2_000 - (Date.now() - thresholdAt),
    );
    assert.match((await call()).detail!, /did not answer in time/);
    assert.match((await call()).detail!, /its circuit is open/);
    const applied = configuration.status.version;

    // Invalid tables are refused: a bad prefix, and one that drops a policy GATEWAY_RATE_LIMITS names.
    for (
      const [bad, reason] of [
        [routesFile({ timeoutMs: 2000, volumeThreshold: 5, prefix: "no-slash" }), /GATEWAY_ROUTES/],
        [
          `${routesFile({ timeoutMs: 2000, volumeThreshold: 5, prefix: "/api/v9/tweets" })}` +
          "  rate-limits:\n    - nope=1/1000\n",
          /GATEWAY_RATE_LIMITS/,
        ],
      ] as const
    ) {
      await Deno.writeTextFile(`${env.folder}/gateway.yml`, bad);
      await waitFor(
        "the refusal",
        () => configuration.status.refused !== undefined,
        2_000,
      );
      assert.match(configuration.status.refused!.reason, reason);
      assert.equal(configuration.status.version, applied);
      // The old routes stay: the same route, its breaker still open.
      assert.match((await call()).detail!, /its circuit is open/);
      assert.equal((await call("/api/v9/tweets")).status, 404);
      await Deno.writeTextFile(
        `${env.folder}/gateway.yml`,
        routesFile({ timeoutMs: 100, volumeThreshold: 1 }),
      );
      await waitFor(
        "the valid copy back",
        () => configuration.status.refused === undefined,
        2_000,
      );
    }
    const ready = await (await gateway.management!.app.request("/ready")).json();
    assert.equal(ready.config.version, applied);
  } finally {
    remote.close();
    await gateway.stop();
    await http.shutdown();
    await slow.shutdown();
    await server.stop();
  }
});
