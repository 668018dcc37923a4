/**
 * The gateway's resilience end to end: full gateways served on loopback,
 * upstream stubs registered in a real registry service (and killed behind a
 * TCP relay), rate limits shared in the real Redis, and bodies streamed both
 * ways.
 */
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import { followInstanceCount } from "../../shared/discovery/instance_count.ts";
import { RegistryClient } from "../../shared/discovery/registry_client.ts";
import { PROBLEM_CONTENT_TYPE, problemType } from "../../shared/http/problem.ts";
import { type HttpServer, serveApp } from "../../shared/http/serve.ts";
import { MemoryRateLimitStore } from "../../shared/rate_limit/memory_rate_limit_store.ts";
import type { RateLimitStore } from "../../shared/rate_limit/rate_limit_store.ts";
import { RedisRateLimitStore } from "../../shared/rate_limit/redis_rate_limit_store.ts";
import type { ServiceContext } from "../../shared/service/service.ts";
import {
  type KillableRelay,
  startKillableRelay,
  startTestServer,
  type TestHandler,
  type TestServer,
} from "../../shared/testing/http_servers.ts";
import { connectRedis } from "../../shared/testing/redis.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { waitFor } from "../../shared/testing/wait.ts";
import { loadConfig } from "../config.ts";
import { passwordGrantToken, testIdentity } from "../identity/_testing.ts";
import { startTestRegistry, type TestRegistry } from "../registry/_testing.ts";
import { createGatewayService } from "./main.ts";
import { DEFAULT_BREAKER, type GatewayRoute } from "./routes.ts";

/** The service name the stubs register under. */
const SERVICE = "things";
const PREFIX = "/api/v1/things";

function route(overrides: Partial<GatewayRoute> = {}): GatewayRoute {
  return {
    prefix: PREFIX,
    service: SERVICE,
    auth: { mode: "none" },
    breaker: DEFAULT_BREAKER,
    timeoutMs: 5000,
    retries: 2,
    fallback: { retryAfterSec: 10 },
    ...overrides,
  };
}

/** One upstream instance: a test server behind a killable relay, registered by heartbeat. */
interface Upstream extends AsyncDisposable {
  readonly name: string;
  readonly server: TestServer;
  readonly relay: KillableRelay;
  /** Crashes the instance: heartbeats stop (no deregistration) and its connections are cut. */
  kill(): void;
  /** Deregisters gracefully; the server keeps answering. */
  deregister(): Promise<void>;
}

/** Answers with its name, in the body and in `x-upstream`. */
function namedHandler(name: string): TestHandler {
  return () => Response.json({ instance: name }, { headers: { "x-upstream": name } });
}

async function startUpstream(
  registry: TestRegistry,
  name: string,
  options: { heartbeatMs: number; handler?: TestHandler; service?: string },
): Promise<Upstream> {
  const server = startTestServer(options.handler ?? namedHandler(name));
  const relay = startKillableRelay(server.url);
  let crashed = false;
  const registration = new RegistryClient({
    urls: [registry.url],
    heartbeatMs: options.heartbeatMs,
    logger: testContext(name).logger,
    tokens: registry.issuer.serviceTokens(options.service ?? SERVICE),
    // A crashed process sends nothing: neither heartbeats nor its deregistration.
    fetch: (input, init) =>
      crashed ? Promise.reject(new TypeError(`${name} has crashed`)) : fetch(input, init),
  });
  await registration.register({
    service: SERVICE,
    instanceId: name,
    baseUrl: relay.url,
    version: "test",
    metadata: {},
  });
  return {
    name,
    server,
    relay,
    kill() {
      crashed = true;
      relay.kill();
    },
    deregister: () => registration.deregister(name),
    async [Symbol.asyncDispose]() {
      await registration.close();
      await relay.close();
      await server.shutdown();
    },
  };
}

interface TestGateway {
  readonly url: string;
  /** The management listener: /ready and /metrics. */
  readonly managementUrl: string;
  readonly context: ServiceContext;
  readonly discovery: RegistryClient;
  stop(): Promise<void>;
}

/** A full gateway on a free port, discovering through `registry`. */
async function startGateway(options: {
  registry: TestRegistry;
  routes: readonly GatewayRoute[];
  store?: RateLimitStore;
  env?: Record<string, string>;
  /** Registers the gateway as `gateway` and shares its rate limits with the gateways listed. */
  listed?: boolean;
}): Promise<TestGateway> {
  const context = testContext("gateway");
  const discovery = new RegistryClient({
    urls: [options.registry.url],
    logger: context.logger,
    tokens: options.registry.issuer.serviceTokens("gateway"),
  });
  const store = options.store ?? new MemoryRateLimitStore();
  const gateway = createGatewayService({
    config: loadConfig(options.env ?? {}),
    context,
    discovery,
    rateLimitStore: store,
    routes: options.routes,
    ...(options.listed ? { gateways: followInstanceCount(discovery, "gateway") } : {}),
  });
  await gateway.start();
  const server: HttpServer = serveApp(gateway.app, { hostname: "127.0.0.1", port: 0 });
  const management = serveApp(gateway.management!.app, { hostname: "127.0.0.1", port: 0 });
  if (options.listed) {
    await discovery.register({
      service: "gateway",
      instanceId: `gateway-${crypto.randomUUID().slice(0, 8)}`,
      baseUrl: server.url,
      version: "test",
      metadata: {},
    });
  }
  return {
    url: server.url,
    managementUrl: management.url,
    context,
    discovery,
    async stop() {
      await server.shutdown();
      await management.shutdown();
      await gateway.stop();
      await discovery.close();
      await store.close();
    },
  };
}

/** The instance ids the gateway's discovery knows now. */
async function known(gateway: TestGateway): Promise<string[]> {
  return (await gateway.discovery.instances(SERVICE)).map((instance) => instance.instanceId);
}

/** A counter's value in a rendered registry (0 when it has no sample yet). */
async function counterValue(context: ServiceContext, sample: string): Promise<number> {
  const escaped = sample.replace(/[{}"\\]/g, (char) => `\\${char}`);
  const match = new RegExp(`^${escaped} (\\d+)$`, "m").exec(await context.metrics.render());
  return match === null ? 0 : Number(match[1]);
}

interface Outcome {
  /** In the order the requests were sent. */
  readonly sent: number;
  readonly status: number;
  /** The instance that answered, or the failure. */
  readonly answer: string;
}

/**
 * GETs through the gateway from `workers` concurrent loops until stopped;
 * a failure to read the whole answer counts as a failed request.
 */
function startLoad(gateway: TestGateway, workers: number) {
  const outcomes: Outcome[] = [];
  let sent = 0;
  let running = true;
  async function worker() {
    while (running) {
      const number = sent++;
      let outcome: Outcome;
      try {
        const response = await fetch(`${gateway.url}${PREFIX}/${number}`);
        const body = await response.json();
        outcome = {
          sent: number,
          status: response.status,
          answer: String(body.instance ?? body.type),
        };
      } catch (error) {
        outcome = { sent: number, status: 0, answer: String(error) };
      }
      outcomes.push(outcome);
    }
  }
  const done = Promise.all(Array.from({ length: workers }, worker));
  return {
    outcomes,
    /** Requests sent so far. */
    get sent() {
      return sent;
    },
    async stop(): Promise<readonly Outcome[]> {
      running = false;
      await done;
      return outcomes;
    },
  };
}

function failed(outcomes: readonly Outcome[]): Outcome[] {
  return outcomes.filter((outcome) => outcome.status !== 200);
}

/** Which instances answered the requests sent from the `from`th on. */
function answeredFrom(outcomes: readonly Outcome[], from: number): string[] {
  return [
    ...new Set(outcomes.filter((outcome) => outcome.sent >= from).map((outcome) => outcome.answer)),
  ];
}

Deno.test("two gateways sharing Redis admit exactly the route's limit of 300 concurrent requests", async () => {
  const identity = await testIdentity();
  const issuerServer = serveApp(identity.service.app, { hostname: "127.0.0.1", port: 0 });
  const issuer = `${issuerServer.url}/realms/twitterapi`;
  const registry = await startTestRegistry();
  await using upstream = await startUpstream(registry, "things-1", { heartbeatMs: 1000 });
  const keyPrefix = `test:gateway-resilience:${crypto.randomUUID()}:`;
  const limit = 50;
  const routes = [
    route({
      auth: { mode: "authenticated", audience: "query" },
      rateLimit: { policy: "burst", limit, windowMs: 60_000 },
    }),
  ];
  const gateways: TestGateway[] = [];
  const redis = await connectRedis();
  try {
    for (let i = 0; i < 2; i++) {
      gateways.push(
        await startGateway({
          registry,
          routes,
          store: new RedisRateLimitStore(await connectRedis(), { keyPrefix }),
          env: { OIDC_ISSUER: issuer },
        }),
      );
    }
    for (const gateway of gateways) {
      await waitFor(
        "the gateway to discover the upstream",
        async () => (await known(gateway)).length === 1,
      );
    }
    const token = await passwordGrantToken(`${issuer}/protocol/openid-connect/token`, "app_user");
    const total = 300;
    const responses = await Promise.all(
      Array.from({ length: total }, async (_, i) => {
        const response = await fetch(`${gateways[i % 2]!.url}${PREFIX}/${i}`, {
          headers: { authorization: `Bearer ${token}` },
        });
        return { response, body: await response.json() };
      }),
    );

    const admitted = responses.filter(({ response }) => response.status === 200);
    const limited = responses.filter(({ response }) => response.status === 429);
    assert.equal(admitted.length, limit);
    assert.equal(limited.length, total - limit);
    for (const { response } of responses) {
      assert.equal(response.headers.get("ratelimit-policy"), `"burst";q=${limit};w=60`);
    }
    // Each admitted request took the next unit of one shared count: every remaining value once.
    const remaining = admitted.map(({ response }) =>
      Number(/^"burst";r=(\d+);t=\d+$/.exec(response.headers.get("ratelimit") ?? "")?.[1])
    );
    assert.deepEqual(remaining.sort((a, b) => a - b), Array.from({ length: limit }, (_, i) => i));
    for (const { response, body } of limited) {
      assert.equal(response.headers.get("content-type"), PROBLEM_CONTENT_TYPE);
      assert.equal(body.type, problemType("rate-limited"));
      assert.equal(body.status, 429);
      assert.match(response.headers.get("retry-after") ?? "", /^[1-9]\d*$/);
      assert.match(response.headers.get("ratelimit") ?? "", /^"burst";r=0;t=\d+$/);
    }
    assert.equal(upstream.server.requests.length, limit);

    // Both gateways decided in Redis, none in its in-process fallback.
    let allowed = 0;
    let refused = 0;
    for (const gateway of gateways) {
      const { context } = gateway;
      allowed += await counterValue(
        context,
        'rate_limit_decisions_total{outcome="allowed",policy="burst"}',
      );
      refused += await counterValue(
        context,
        'rate_limit_decisions_total{outcome="limited",policy="burst"}',
      );
      assert.equal(await counterValue(context, 'rate_limit_store_fallback{policy="burst"}'), 0);
      assert.ok(
        await counterValue(
          context,
          'rate_limit_decisions_total{outcome="limited",policy="burst"}',
        ) >
          0,
        "each gateway refused some requests",
      );
    }
    assert.deepEqual({ allowed, refused }, { allowed: limit, refused: total - limit });
  } finally {
    for (const gateway of gateways) await gateway.stop();
    const keys = await redis.keys(`${keyPrefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
    await registry.stop();
    await issuerServer.shutdown();
  }
});

/** A Redis store that can never answer: nothing listens on port 1. */
function unreachableRedisStore(): RateLimitStore {
  const client = new Redis("redis://127.0.0.1:1", {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  client.on("error", () => {});
  return new RedisRateLimitStore(client);
}

Deno.test("two gateways with Redis unreachable admit at most the route's limit together, each its share of the gateways the registry lists", async () => {
  const identity = await testIdentity();
  const issuerServer = serveApp(identity.service.app, { hostname: "127.0.0.1", port: 0 });
  const issuer = `${issuerServer.url}/realms/twitterapi`;
  const registry = await startTestRegistry();
  await using upstream = await startUpstream(registry, "things-1", { heartbeatMs: 1000 });
  const limit = 51;
  const routes = [
    route({
      auth: { mode: "authenticated", audience: "query" },
      rateLimit: { policy: "burst", limit, windowMs: 60_000 },
    }),
  ];
  const gateways: TestGateway[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      gateways.push(
        await startGateway({
          registry,
          routes,
          store: unreachableRedisStore(),
          env: { OIDC_ISSUER: issuer },
          listed: true,
        }),
      );
    }
    for (const gateway of gateways) {
      await waitFor(
        "the gateway to discover the upstream and both gateways",
        async () =>
          (await known(gateway)).length === 1 &&
          (await gateway.discovery.instances("gateway")).length === 2,
      );
    }
    const token = await passwordGrantToken(`${issuer}/protocol/openid-connect/token`, "app_user");
    const total = 120;
    const responses = await Promise.all(
      Array.from({ length: total }, async (_, i) => {
        const response = await fetch(`${gateways[i % 2]!.url}${PREFIX}/${i}`, {
          headers: { authorization: `Bearer ${token}` },
        });
        await response.body?.cancel();
        return response;
      }),
    );
    // 51 / 2 gateways, rounded down: 25 each, 50 together.
    const admitted = responses.filter((response) => response.status === 200);
    assert.equal(admitted.length, 50);
    assert.equal(responses.filter((response) => response.status === 429).length, total - 50);
    assert.equal(upstream.server.requests.length, 50);
    const ready = await (await fetch(`${gateways[0]!.managementUrl}/ready`)).json();
    assert.equal(ready.status, "degraded");
    assert.match(
      JSON.stringify(ready.checks["rate-limit:burst"]),
      /Redis unreachable; counting locally: 25 of 51 per 60 s per gateway, 2 gateways/,
    );

    // One gateway leaves the registry: the other admits the whole limit alone.
    await gateways.pop()!.stop();
    const [alone] = gateways;
    await waitFor(
      "the remaining gateway to see itself alone",
      async () => (await alone!.discovery.instances("gateway")).length === 1,
    );
    const more = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const response = await fetch(`${alone!.url}${PREFIX}/more-${i}`, {
          headers: { authorization: `Bearer ${token}` },
        });
        await response.body?.cancel();
        return response.status;
      }),
    );
    assert.equal(more.filter((status) => status === 200).length, 51 - 25);
    const readyAlone = await (await fetch(`${alone!.managementUrl}/ready`)).json();
    assert.match(
      JSON.stringify(readyAlone.checks["rate-limit:burst"]),
      /counting locally: 51 of 51 per 60 s per gateway, 1 gateway: /,
    );
  } finally {
    for (const gateway of gateways) await gateway.stop();
    await registry.stop();
    await issuerServer.shutdown();
  }
});

// A registry TTL of 1500 ms with heartbeats every 500 ms: the defaults (3000 / 1000) halved.
const TTL_MS = 1500;
const HEARTBEAT_MS = 500;

Deno.test("gateway stops calling a crashed instance once the registry evicts it, failing no request", async () => {
  const registry = await startTestRegistry({ ttlMs: TTL_MS });
  await using first = await startUpstream(registry, "things-1", { heartbeatMs: HEARTBEAT_MS });
  await using second = await startUpstream(registry, "things-2", { heartbeatMs: HEARTBEAT_MS });
  const gateway = await startGateway({ registry, routes: [route()] });
  try {
    await waitFor(
      "the gateway to discover both instances",
      async () => (await known(gateway)).length === 2,
    );
    const load = startLoad(gateway, 4);
    await waitFor(
      "traffic to reach both instances",
      () =>
        load.outcomes.some((outcome) => outcome.answer === "things-1") &&
        load.outcomes.some((outcome) => outcome.answer === "things-2"),
    );

    first.kill();
    await waitFor(
      "the gateway to drop the crashed instance",
      async () => !(await known(gateway)).includes("things-1"),
    );
    assert.deepEqual(await known(gateway), ["things-2"]);
    assert.equal(await counterValue(registry.context, "registry_evictions_total"), 1);

    const attempts = first.relay.attemptsAfterKill;
    const evicted = load.sent;
    await waitFor("100 more requests", () => load.outcomes.length >= evicted + 100);
    const outcomes = await load.stop();
    assert.deepEqual(failed(outcomes), [], "no client request may fail");
    assert.deepEqual(answeredFrom(outcomes, evicted), ["things-2"]);
    assert.equal(
      second.server.requests.length,
      outcomes.filter((outcome) => outcome.answer === "things-2").length,
    );
    assert.equal(first.relay.attemptsAfterKill, attempts, "nothing may try the evicted instance");
  } finally {
    await gateway.stop();
    await registry.stop();
  }
});

Deno.test("gateway stops calling an instance as soon as it deregisters, long before any TTL", async () => {
  // A TTL no test waits for: the instance can only leave the view by deregistering.
  const registry = await startTestRegistry({ ttlMs: 600_000 });
  await using first = await startUpstream(registry, "things-1", { heartbeatMs: 1000 });
  await using second = await startUpstream(registry, "things-2", { heartbeatMs: 1000 });
  const gateway = await startGateway({ registry, routes: [route()] });
  try {
    await waitFor(
      "the gateway to discover both instances",
      async () => (await known(gateway)).length === 2,
    );
    const load = startLoad(gateway, 4);
    await waitFor(
      "traffic to reach both instances",
      () => first.server.requests.length > 0 && second.server.requests.length > 0,
    );

    await first.deregister();
    const listed = await (await fetch(
      `${registry.url}/api/v1/registry/services/${SERVICE}/instances`,
      { headers: await registry.issuer.authorization({ audience: "registry", roles: [] }) },
    )).json();
    assert.deepEqual(
      listed.instances.map((instance: { instanceId: string }) => instance.instanceId),
      ["things-2"],
    );
    await waitFor(
      "the gateway to drop the deregistered instance",
      async () => !(await known(gateway)).includes("things-1"),
    );
    const dropped = load.sent;
    await waitFor("100 more requests", () => load.outcomes.length >= dropped + 100);
    const outcomes = await load.stop();
    assert.deepEqual(failed(outcomes), []);
    assert.deepEqual(answeredFrom(outcomes, dropped), ["things-2"]);
    assert.equal(await counterValue(registry.context, "registry_evictions_total"), 0);
  } finally {
    await gateway.stop();
    await registry.stop();
  }
});

Deno.test("gateway fails over without a failed request when an instance crashes mid-load", async () => {
  // No eviction during the test: the balanced client alone must absorb the crash.
  const registry = await startTestRegistry({ ttlMs: 600_000 });
  await using first = await startUpstream(registry, "things-1", { heartbeatMs: 1000 });
  await using second = await startUpstream(registry, "things-2", { heartbeatMs: 1000 });
  const gateway = await startGateway({ registry, routes: [route()] });
  try {
    await waitFor(
      "the gateway to discover both instances",
      async () => (await known(gateway)).length === 2,
    );
    const total = 200;
    const outcomes: Outcome[] = [];
    let sent = 0;
    let killed: number | undefined;
    const worker = async () => {
      while (sent < total) {
        const number = sent++;
        try {
          const response = await fetch(`${gateway.url}${PREFIX}/${number}`);
          const body = await response.json();
          outcomes.push({
            sent: number,
            status: response.status,
            answer: String(body.instance ?? body.type),
          });
        } catch (error) {
          outcomes.push({ sent: number, status: 0, answer: String(error) });
        }
        if (outcomes.length === 50) {
          killed = sent;
          first.kill();
        }
      }
    };
    await Promise.all(Array.from({ length: 10 }, worker));
    assert.equal(outcomes.length, total);
    assert.deepEqual(failed(outcomes), [], "no client request may fail");
    assert.ok(killed !== undefined);
    assert.deepEqual(answeredFrom(outcomes.slice(0, 50), 0).sort(), ["things-1", "things-2"]);
    assert.deepEqual(answeredFrom(outcomes, killed), ["things-2"]);
    assert.equal(
      second.server.requests.length,
      outcomes.filter((outcome) => outcome.answer === "things-2").length,
    );
    assert.equal(
      await counterValue(gateway.context, 'http_client_ejections_total{upstream="things"}'),
      1,
    );
  } finally {
    await gateway.stop();
    await registry.stop();
  }
});

const CHUNK_BYTES = 64 * 1024;

/** Chunk `index` of a test body: bytes that differ per chunk and per position. */
function chunk(index: number): Uint8Array {
  return new Uint8Array(CHUNK_BYTES).map((_, i) => (index * 31 + i) % 251);
}

async function sha256(parts: readonly Uint8Array[]): Promise<string> {
  const whole = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    whole.set(part, offset);
    offset += part.length;
  }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", whole)).toHex();
}

async function readAll(body: ReadableStream<Uint8Array>): Promise<Uint8Array[]> {
  const parts: Uint8Array[] = [];
  for await (const part of body) parts.push(part);
  return parts;
}

Deno.test("gateway streams a large chunked upload and a large streamed answer, both intact", async () => {
  const chunks = 128; // 8 MiB each way
  const firstChunkArrived = Promise.withResolvers<void>();
  let received: { hash: string; bytes: number; transferEncoding: string | null } | undefined;
  const registry = await startTestRegistry();
  await using upstream = await startUpstream(registry, "things-1", {
    heartbeatMs: 1000,
    async handler(request) {
      const parts: Uint8Array[] = [];
      for await (const part of request.body!) {
        parts.push(part);
        firstChunkArrived.resolve();
      }
      received = {
        hash: await sha256(parts),
        bytes: parts.reduce((sum, part) => sum + part.length, 0),
        transferEncoding: request.headers.get("transfer-encoding"),
      };
      let sent = 0;
      const answer = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent === chunks) return controller.close();
          controller.enqueue(chunk(chunks - 1 - sent++));
        },
      });
      return new Response(answer, { headers: { "content-type": "application/octet-stream" } });
    },
  });
  const gateway = await startGateway({
    registry,
    routes: [route()],
    env: { HTTP_BODY_LIMIT_BYTES: String(chunks * CHUNK_BYTES) },
  });
  try {
    await waitFor(
      "the gateway to discover the upstream",
      async () => (await known(gateway)).length === 1,
    );
    let sent = 0;
    const upload = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent === 1) {
          // Holding the rest back until the upstream has the first chunk proves the gateway
          // forwards as it receives: a buffering gateway would wait here for the whole body.
          const deadline = setTimeout(() => {
            controller.error(
              new Error("the upstream did not get the first chunk while the rest was held back"),
            );
          }, 20_000);
          await firstChunkArrived.promise;
          clearTimeout(deadline);
        }
        if (sent === chunks) return controller.close();
        controller.enqueue(chunk(sent++));
      },
    });
    const response = await fetch(`${gateway.url}${PREFIX}/upload`, {
      method: "PUT",
      headers: { "content-type": "application/octet-stream" },
      body: upload,
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "application/octet-stream");
    const answer = await readAll(response.body!);
    assert.equal(upstream.server.requests.length, 1);
    const sentChunks = Array.from({ length: chunks }, (_, i) => chunk(i));
    assert.deepEqual(received, {
      hash: await sha256(sentChunks),
      bytes: chunks * CHUNK_BYTES,
      transferEncoding: "chunked",
    });
    assert.equal(answer.reduce((sum, part) => sum + part.length, 0), chunks * CHUNK_BYTES);
    assert.equal(await sha256(answer), await sha256(sentChunks.toReversed()));
  } finally {
    await gateway.stop();
    await registry.stop();
  }
});

Deno.test("gateway refuses bodies over HTTP_BODY_LIMIT_BYTES with 413, declared or chunked, and the upstream never gets one", async () => {
  const limit = 4 * CHUNK_BYTES;
  /** Every upload the upstream read to its end, by size; and uploads it began. */
  const completed: number[] = [];
  let begun = 0;
  let settled = 0;
  const registry = await startTestRegistry();
  await using upstream = await startUpstream(registry, "things-1", {
    heartbeatMs: 1000,
    async handler(request) {
      begun += 1;
      try {
        completed.push((await request.arrayBuffer()).byteLength);
        return Response.json({ instance: "things-1" });
      } catch {
        // The gateway cut the upload short.
        return new Response(null, { status: 400 });
      } finally {
        settled += 1;
      }
    },
  });
  // A breaker that would open after 3 failures: refused bodies must not count as failures.
  const breaker = { ...DEFAULT_BREAKER, volumeThreshold: 3 };
  const gateway = await startGateway({
    registry,
    routes: [route({ breaker })],
    env: { HTTP_BODY_LIMIT_BYTES: String(limit) },
  });
  const chunked = (count: number) => {
    let sent = 0;
    return new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent === count) return controller.close();
        controller.enqueue(chunk(sent++));
      },
    });
  };
  async function assertTooLarge(response: Response) {
    const body = await response.json();
    assert.equal(response.status, 413, JSON.stringify(body));
    assert.equal(response.headers.get("content-type"), PROBLEM_CONTENT_TYPE);
    assert.equal(body.type, problemType("payload-too-large"));
    assert.equal(body.detail, `The request body must be at most ${limit} bytes`);
  }
  try {
    await waitFor(
      "the gateway to discover the upstream",
      async () => (await known(gateway)).length === 1,
    );
    const url = `${gateway.url}${PREFIX}/upload`;
    for (let i = 0; i < 3; i++) {
      await assertTooLarge(
        await fetch(url, { method: "POST", body: new Uint8Array(limit + 1) }),
      );
    }
    assert.equal(upstream.server.requests.length, 0, "a declared length over the limit");
    for (let i = 0; i < 3; i++) {
      await assertTooLarge(
        await fetch(url, { method: "POST", body: chunked(2 * limit / CHUNK_BYTES) }),
      );
    }
    // The upstream may have begun a chunked upload, but the gateway cut it short.
    await waitFor("the upstream to settle every upload it began", () => settled === begun);
    assert.deepEqual(completed, []);

    const exact = await fetch(url, { method: "POST", body: chunked(limit / CHUNK_BYTES) });
    assert.equal(exact.status, 200);
    await exact.body?.cancel();
    assert.deepEqual(completed, [limit]);
    const metrics = await gateway.context.metrics.render();
    assert.match(metrics, /gateway_breaker_state\{upstream="things"\} 0/);
    assert.equal(
      await counterValue(gateway.context, 'http_client_ejections_total{upstream="things"}'),
      0,
    );
  } finally {
    await gateway.stop();
    await registry.stop();
  }
});

Deno.test("gateway breaker opens on a crashed service, reopens on a failed probe and closes on a good one", async () => {
  const registry = await startTestRegistry({ ttlMs: 600_000 });
  await using first = await startUpstream(registry, "things-1", { heartbeatMs: 1000 });
  const breaker = { ...DEFAULT_BREAKER, volumeThreshold: 3, resetTimeoutMs: 500 };
  const gateway = await startGateway({ registry, routes: [route({ breaker, retries: 1 })] });
  const state = async () =>
    /gateway_breaker_state\{upstream="things"\} (\d)/.exec(await gateway.context.metrics.render())
      ?.[1];
  const call = async (method = "GET") => {
    const response = await fetch(`${gateway.url}${PREFIX}/1`, {
      method,
      ...(method === "POST" ? { body: "{}" } : {}),
    });
    return { response, body: await response.json() };
  };
  const assertUnavailable = (
    { response, body }: { response: Response; body: Record<string, unknown> },
    reason: string,
  ) => {
    assert.equal(response.status, 503, JSON.stringify(body));
    assert.equal(response.headers.get("content-type"), PROBLEM_CONTENT_TYPE);
    assert.equal(response.headers.get("retry-after"), "10");
    assert.equal(body.type, problemType("upstream-unavailable"));
    assert.equal(body.detail, `The things service is unavailable: ${reason}`);
  };
  try {
    await waitFor(
      "the gateway to discover the upstream",
      async () => (await known(gateway)).length === 1,
    );
    assert.equal((await call()).response.status, 200);
    assert.equal(await state(), "0");

    first.kill();
    // Every attempt fails to connect; the breaker opens once enough calls failed.
    for (let calls = 0; (await state()) !== "2"; calls++) {
      assert.ok(calls < 5, "the breaker did not open after 5 failed calls");
      assertUnavailable(await call(), "it cannot be reached");
    }
    const attempts = first.relay.attemptsAfterKill;
    for (const method of ["GET", "POST", "DELETE"]) {
      assertUnavailable(await call(method), "its circuit is open after repeated failures");
    }
    assert.equal(first.relay.attemptsAfterKill, attempts, "an open breaker must not call");

    await waitFor("the breaker to half-open", async () => (await state()) === "1");
    assertUnavailable(await call(), "it cannot be reached");
    assert.equal(await state(), "2", "a failed probe reopens the breaker");
    assert.equal(first.relay.attemptsAfterKill, attempts + 2, "the probe and its one retry");

    await using second = await startUpstream(registry, "things-2", { heartbeatMs: 1000 });
    await waitFor(
      "the gateway to discover the new instance",
      async () => (await known(gateway)).includes("things-2"),
    );
    await waitFor("the breaker to half-open", async () => (await state()) === "1");
    const probe = await call();
    assert.equal(probe.response.status, 200);
    assert.deepEqual(probe.body, { instance: "things-2" });
    assert.equal(await state(), "0");
    assert.equal(second.server.requests.length, 1);
  } finally {
    await gateway.stop();
    await registry.stop();
  }
});

Deno.test("an impostor registered under another service's name never receives a request", async () => {
  const registry = await startTestRegistry();
  await using genuine = await startUpstream(registry, "things-1", { heartbeatMs: 100 });
  const impostor = startTestServer(namedHandler("impostor"));
  const tokens = registry.issuer.serviceTokens("stream");
  const gateway = await startGateway({ registry, routes: [route()] });
  try {
    // Straight to the registry: anonymous, with a user's token, with another service's client.
    const attempts: [string, Record<string, string>, number][] = [
      ["anonymous", {}, 401],
      [
        "a user's token",
        await registry.issuer.authorization({
          audience: ["registry", "query"],
          username: "app_user",
        }),
        403,
      ],
      ["the stream service's client", { authorization: `Bearer ${await tokens.token()}` }, 403],
    ];
    for (const [who, headers, status] of attempts) {
      const response = await fetch(
        `${registry.url}/api/v1/registry/services/${SERVICE}/instances/evil`,
        {
          method: "PUT",
          headers: { "content-type": "application/json", ...headers },
          body: JSON.stringify({ baseUrl: impostor.url, version: "evil" }),
        },
      );
      assert.equal(response.status, status, who);
      assert.equal(response.headers.get("content-type"), PROBLEM_CONTENT_TYPE, who);
      await response.body?.cancel();
    }
    // And through a registry client of its own, heart-beating with the stream client's token.
    await using _impostor = await startUpstream(registry, "things-evil", {
      heartbeatMs: 100,
      handler: namedHandler("impostor"),
      service: "stream",
    });
    await waitFor(
      "the gateway to discover the genuine instance",
      async () => (await known(gateway)).length === 1,
    );
    const token = await registry.issuer.authorization({ audience: "query" });
    for (let i = 0; i < 40; i++) {
      const response = await fetch(`${gateway.url}${PREFIX}/${i}`, { headers: token });
      assert.equal(response.status, 200);
      assert.equal((await response.json()).instance, "things-1");
    }
    assert.deepEqual(await known(gateway), ["things-1"]);
    assert.equal(impostor.requests.length, 0, "the impostor's server received no request");
    assert.equal(genuine.server.requests.length, 40);
  } finally {
    await gateway.stop();
    await impostor.shutdown();
    await registry.stop();
  }
});
