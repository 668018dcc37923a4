/**
 * The gateway over real HTTP: upstreams on loopback, the identity service as
 * the token issuer, and the gateway served by Deno.serve.
 */
import assert from "node:assert/strict";
import type {
  ServiceDiscovery,
  ServiceInstance,
} from "../../shared/discovery/service_discovery.ts";
import { PROBLEM_CONTENT_TYPE, problemType } from "../../shared/http/problem.ts";
import { serveApp } from "../../shared/http/serve.ts";
import { MemoryRateLimitStore } from "../../shared/rate_limit/memory_rate_limit_store.ts";
import { startTestServer, type TestServer } from "../../shared/testing/http_servers.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { waitFor } from "../../shared/testing/wait.ts";
import { loadConfig } from "../config.ts";
import { createServiceApp } from "../../shared/http/service_app.ts";
import { passwordGrantToken, testIdentity } from "../identity/_testing.ts";
import { createGatewayService } from "./main.ts";
import { DEFAULT_BREAKER, DEFAULT_ROUTES, type GatewayRoute } from "./routes.ts";

/** Discovery whose answer the test changes. */
class MutableDiscovery implements ServiceDiscovery {
  constructor(public current: ServiceInstance[] = []) {}
  add(service: string, server: TestServer, instanceId = `${service}-${this.current.length}`) {
    this.current.push({ service, instanceId, baseUrl: server.url, version: "test", metadata: {} });
  }
  instances(service: string): Promise<readonly ServiceInstance[]> {
    return Promise.resolve(this.current.filter((instance) => instance.service === service));
  }
}

interface Echo {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** An upstream that answers every request with what it received. */
function echoServer(name = "echo"): TestServer {
  return startTestServer(async (request) => {
    const url = new URL(request.url);
    const echo: Echo = {
      method: request.method,
      path: url.pathname + url.search,
      headers: Object.fromEntries(request.headers),
      body: await request.text(),
    };
    return Response.json(echo, { headers: { "x-upstream": name } });
  });
}

interface Harness {
  readonly url: string;
  /** The management listener: /health, /ready and /metrics. */
  readonly managementUrl: string;
  readonly discovery: MutableDiscovery;
  token(username: string): Promise<string>;
  metrics(): Promise<string>;
}

async function withGateway(
  options: { routes?: readonly GatewayRoute[]; env?: Record<string, string> },
  test: (harness: Harness) => Promise<void>,
): Promise<void> {
  const identity = await testIdentity();
  const issuerServer = serveApp(identity.service.app, { hostname: "127.0.0.1", port: 0 });
  const issuer = `${issuerServer.url}/realms/twitterapi`;
  const discovery = new MutableDiscovery();
  const store = new MemoryRateLimitStore();
  const context = testContext("gateway");
  const gateway = createGatewayService({
    config: loadConfig({ OIDC_ISSUER: issuer, ...options.env }),
    context,
    discovery,
    rateLimitStore: store,
    ...(options.routes === undefined ? {} : { routes: options.routes }),
  });
  await gateway.start();
  const server = serveApp(gateway.app, { hostname: "127.0.0.1", port: 0 });
  const management = serveApp(gateway.management!.app, { hostname: "127.0.0.1", port: 0 });
  try {
    await test({
      url: server.url,
      managementUrl: management.url,
      discovery,
      async token(username) {
        return await passwordGrantToken(`${issuer}/protocol/openid-connect/token`, username);
      },
      metrics: () => context.metrics.render(),
    });
  } finally {
    await server.shutdown();
    await management.shutdown();
    await gateway.stop();
    await store.close();
    await issuerServer.shutdown();
  }
}

function route(overrides: Partial<GatewayRoute> & Pick<GatewayRoute, "prefix">): GatewayRoute {
  return {
    service: "query",
    auth: { mode: "none" },
    breaker: DEFAULT_BREAKER,
    timeoutMs: 5000,
    retries: 2,
    fallback: { retryAfterSec: 10 },
    ...overrides,
  };
}

/**
 * A request with the method and target exactly as given, over a fresh
 * connection: `fetch` resolves dot segments and refuses TRACE, TRACK and
 * CONNECT.
 */
async function rawRequest(
  base: string,
  method: string,
  target: string,
  authorization: string,
): Promise<string> {
  const { hostname, port } = new URL(base);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  try {
    const request = `${method} ${target} HTTP/1.1\r\nHost: ${hostname}:${port}\r\n` +
      `Authorization: ${authorization}\r\nConnection: close\r\n\r\n`;
    await conn.write(new TextEncoder().encode(request));
    return await new Response(conn.readable).text();
  } catch (error) {
    conn.close();
    throw error;
  }
}

function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

async function echoOf(response: Response): Promise<Echo> {
  assert.equal(response.status, 200);
  return await response.json();
}

async function assertProblem(response: Response, status: number, code: string) {
  const body = await response.json();
  assert.equal(response.status, status, JSON.stringify(body));
  assert.equal(response.headers.get("content-type"), PROBLEM_CONTENT_TYPE);
  assert.equal(body.type, problemType(code));
  return body;
}

Deno.test("gateway routes tweets paths to query with path, query, method, body and Accept unchanged", async () => {
  await using query = echoServer("query");
  await withGateway({}, async ({ url, discovery, token }) => {
    discovery.add("query", query);
    const auth = bearer(await token("app_user"));
    const cases = [
      ["/api/v1/tweets?text=kafka%20streams&size=5", "application/vnd.api.v1+json"],
      ["/api/v2/tweets/1234567890", "application/vnd.api.v2+json"],
      ["/api/tweets?text=deno", "application/vnd.api.v2+json;q=1, application/json;q=0.5"],
      ["/api/tweets/42", "application/vnd.api.v1+json"],
    ] as const;
    for (const [path, accept] of cases) {
      const response = await fetch(`${url}${path}`, { headers: { ...auth, accept } });
      assert.equal(response.headers.get("x-upstream"), "query");
      assert.equal(response.headers.get("content-type"), "application/json");
      const echo = await echoOf(response);
      assert.equal(echo.method, "GET");
      assert.equal(echo.path, path);
      assert.equal(echo.headers.accept, accept);
      assert.equal(echo.headers.authorization, auth.authorization);
    }
    const posted = await echoOf(
      await fetch(`${url}/api/v2/tweets?dry=1`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/vnd.api.v2+json" },
        body: JSON.stringify({ text: "hello" }),
      }),
    );
    assert.equal(posted.method, "POST");
    assert.equal(posted.path, "/api/v2/tweets?dry=1");
    assert.equal(posted.headers["content-type"], "application/vnd.api.v2+json");
    assert.equal(posted.body, JSON.stringify({ text: "hello" }));
    for (const method of ["PUT", "DELETE", "PATCH"]) {
      const echo = await echoOf(await fetch(`${url}/api/v1/tweets/7`, { method, headers: auth }));
      assert.equal(echo.method, method);
    }
  });
});

Deno.test("gateway sets the forwarding headers and propagates the trace context upstream", async () => {
  await using query = echoServer();
  await withGateway({}, async ({ url, discovery, token }) => {
    discovery.add("query", query);
    const host = new URL(url).host;
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const echo = await echoOf(
      await fetch(`${url}/api/v1/tweets`, {
        headers: {
          ...bearer(await token("app_user")),
          "x-forwarded-for": "203.0.113.7",
          "x-custom": "kept",
          traceparent: `00-${traceId}-b7ad6b7169203331-01`,
        },
      }),
    );
    assert.equal(echo.headers.forwarded, `for=127.0.0.1;host="${host}";proto=http`);
    assert.equal(echo.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert.equal(echo.headers["x-forwarded-host"], host);
    assert.equal(echo.headers["x-forwarded-proto"], "http");
    assert.equal(echo.headers["x-forwarded-prefix"], undefined);
    assert.equal(echo.headers["x-custom"], "kept");
    assert.match(echo.headers.traceparent ?? "", new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
  });
});

Deno.test("gateway answers 404 problem for paths no route matches", async () => {
  await using query = echoServer();
  await withGateway({}, async ({ url, discovery }) => {
    discovery.add("query", query);
    for (const path of ["/api/unknown", "/api/tweetsX", "/api/v3/tweets", "/"]) {
      await assertProblem(await fetch(`${url}${path}`), 404, "not-found");
    }
    assert.equal(query.requests.length, 0);
  });
});

Deno.test("gateway refuses missing and bad tokens with 401 and app_user on the stream with 403", async () => {
  await using query = echoServer("query");
  await using stream = echoServer("stream");
  await withGateway({}, async ({ url, discovery, token }) => {
    discovery.add("query", query);
    discovery.add("stream", stream);
    const missing = await fetch(`${url}/api/v1/tweets`);
    await assertProblem(missing, 401, "unauthorized");
    assert.match(missing.headers.get("www-authenticate") ?? "", /^Bearer realm="twitterapi"/);
    const user = await token("app_user");
    const tampered = user.slice(0, -4) + (user.endsWith("AAAA") ? "BBBB" : "AAAA");
    for (const bad of ["not-a-jwt", tampered]) {
      await assertProblem(
        await fetch(`${url}/api/v1/tweets`, { headers: bearer(bad) }),
        401,
        "unauthorized",
      );
    }
    await assertProblem(
      await fetch(`${url}/api/v1/stream/rate`, { headers: bearer(user) }),
      403,
      "forbidden",
    );
    assert.equal(query.requests.length, 0);
    assert.equal(stream.requests.length, 0);
    const admin = await fetch(`${url}/api/v1/stream/rate`, {
      method: "PUT",
      headers: { ...bearer(await token("app_admin")), "content-type": "application/json" },
      body: '{"rate":5}',
    });
    assert.equal(admin.headers.get("x-upstream"), "stream");
    const echo = await echoOf(admin);
    assert.equal(echo.path, "/api/v1/stream/rate");
    assert.equal(echo.body, '{"rate":5}');
  });
});

Deno.test("gateway rate-limits a route's policy with 429 and the rate-limit headers", async () => {
  await using query = echoServer();
  const routes = [
    route({ prefix: "/api/v1/tweets", rateLimit: { policy: "tight", limit: 3, windowMs: 60_000 } }),
  ];
  await withGateway({ routes }, async ({ url, discovery }) => {
    discovery.add("query", query);
    for (let i = 0; i < 3; i++) {
      const response = await fetch(`${url}/api/v1/tweets`);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("ratelimit-policy"), '"tight";q=3;w=60');
      assert.match(response.headers.get("ratelimit") ?? "", new RegExp(`^"tight";r=${2 - i};t=`));
      await response.body?.cancel();
    }
    const limited = await fetch(`${url}/api/v1/tweets`);
    await assertProblem(limited, 429, "rate-limited");
    assert.ok(Number(limited.headers.get("retry-after")) >= 1);
    assert.match(limited.headers.get("ratelimit") ?? "", /^"tight";r=0;t=\d+$/);
    assert.equal(query.requests.length, 3);
  });
});

Deno.test("gateway breaker opens on failures, answers 503 without calling the upstream, then closes", async () => {
  let healthy = false;
  await using query = startTestServer(() =>
    healthy ? Response.json({ ok: true }) : Response.json({ failed: true }, { status: 500 })
  );
  const breaker = { ...DEFAULT_BREAKER, volumeThreshold: 3, resetTimeoutMs: 300 };
  const routes = [route({ prefix: "/api/v1/tweets", breaker, retries: 0 })];
  await withGateway({ routes }, async ({ url, discovery, metrics }) => {
    discovery.add("query", query);
    const state = async () =>
      /gateway_breaker_state\{upstream="query"\} (\d)/.exec(await metrics())?.[1];
    assert.equal(await state(), "0");
    // 5xx answers pass through (the upstream's own error) and count as failures.
    for (let i = 0; i < 3; i++) {
      const response = await fetch(`${url}/api/v1/tweets`);
      assert.equal(response.status, 500);
      await response.body?.cancel();
    }
    await waitFor("the breaker to open", async () => (await state()) === "2");
    const calls = query.requests.length;
    for (const method of ["GET", "POST", "DELETE"]) {
      const response = await fetch(`${url}/api/v1/tweets/1`, {
        method,
        ...(method === "POST" ? { body: "{}" } : {}),
      });
      const body = await assertProblem(response, 503, "upstream-unavailable");
      assert.match(body.detail, /query service is unavailable/);
      assert.equal(response.headers.get("retry-after"), "10");
    }
    assert.equal(query.requests.length, calls, "an open breaker must not call the upstream");
    healthy = true;
    await waitFor("the breaker to half-open", async () => (await state()) === "1");
    const probe = await fetch(`${url}/api/v1/tweets`);
    assert.equal(probe.status, 200);
    assert.deepEqual(await probe.json(), { ok: true });
    assert.equal(await state(), "0");
  });
});

Deno.test("gateway answers 503 problem when no instance of the service is known", async () => {
  const routes = [route({ prefix: "/api/v1/tweets", breaker: DEFAULT_BREAKER })];
  await withGateway({ routes }, async ({ url }) => {
    const body = await assertProblem(
      await fetch(`${url}/api/v1/tweets`, { method: "POST", body: "x" }),
      503,
      "upstream-unavailable",
    );
    assert.equal(body.detail, "The query service is unavailable: no instance is registered");
  });
});

Deno.test("gateway keeps the circuit closed while no instance is registered, and the first one that registers answers", async () => {
  await using query = echoServer();
  const breaker = { ...DEFAULT_BREAKER, volumeThreshold: 3, resetTimeoutMs: 60_000 };
  const routes = [route({ prefix: "/api/v1/tweets", breaker, retries: 0 })];
  await withGateway({ routes }, async ({ url, discovery, metrics }) => {
    for (let i = 0; i < 10; i++) {
      const body = await assertProblem(
        await fetch(`${url}/api/v1/tweets`),
        503,
        "upstream-unavailable",
      );
      assert.equal(body.detail, "The query service is unavailable: no instance is registered");
    }
    assert.match(await metrics(), /gateway_breaker_state\{upstream="query"\} 0/);
    discovery.add("query", query);
    const response = await fetch(`${url}/api/v1/tweets`);
    assert.equal(response.status, 200);
    await response.body?.cancel();
    assert.equal(query.requests.length, 1);
  });
});

Deno.test("gateway fails over when one of two query instances shuts down mid-load", async () => {
  const first = echoServer("first");
  await using second = echoServer("second");
  const routes = [route({ prefix: "/api/v1/tweets" })];
  await withGateway({ routes }, async ({ url, discovery }) => {
    discovery.add("query", first, "query-1");
    discovery.add("query", second, "query-2");
    const total = 200;
    let next = 0;
    let done = 0;
    const statuses: number[] = [];
    let stopped: Promise<void> | undefined;
    async function worker() {
      while (next < total) {
        const i = next++;
        const response = await fetch(`${url}/api/v1/tweets?i=${i}`);
        statuses.push(response.status);
        await response.body?.cancel();
        if (++done === 50) stopped = first.shutdown();
      }
    }
    await Promise.all(Array.from({ length: 10 }, worker));
    await stopped;
    assert.equal(statuses.length, total);
    assert.deepEqual(statuses.filter((status) => status !== 200), []);
    assert.ok(first.requests.length > 0 && second.requests.length > 0);
  });
  await first.shutdown();
});

Deno.test("gateway streams a large response body through", async () => {
  const size = 8 * 1024 * 1024;
  const chunk = new Uint8Array(64 * 1024).map((_, i) => i % 251);
  await using query = startTestServer(() => {
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= size) return controller.close();
        controller.enqueue(chunk.slice());
        sent += chunk.length;
      },
    });
    return new Response(body, { headers: { "content-type": "application/octet-stream" } });
  });
  await withGateway(
    { routes: [route({ prefix: "/api/v1/tweets" })] },
    async ({ url, discovery }) => {
      discovery.add("query", query);
      const response = await fetch(`${url}/api/v1/tweets/export`);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("content-type"), "application/octet-stream");
      let received = 0;
      let intact = true;
      for await (const part of response.body!) {
        for (let i = 0; i < part.length; i += 4099) {
          if (part[i] !== ((received + i) % (64 * 1024)) % 251) intact = false;
        }
        received += part.length;
      }
      assert.equal(received, size);
      assert.ok(intact, "the body arrived changed");
    },
  );
});

Deno.test("gateway reports breakers on /metrics and rate-limit stores on /ready, on its management port only", async () => {
  await withGateway({}, async ({ url, managementUrl }) => {
    // The public port: /health and the API only.
    for (const path of ["/ready", "/metrics"]) {
      const response = await fetch(`${url}${path}`);
      assert.equal(response.status, 404, path);
      assert.equal(response.headers.get("content-type"), "application/problem+json");
      await response.body?.cancel();
    }
    assert.equal((await fetch(`${url}/health`).then((r) => r.json())).status, "up");
    assert.equal((await fetch(`${managementUrl}/health`).then((r) => r.json())).status, "up");
    const metrics = await (await fetch(`${managementUrl}/metrics`)).text();
    assert.match(metrics, /gateway_breaker_state\{upstream="query"\} 0/);
    assert.match(metrics, /gateway_breaker_state\{upstream="stream"\} 0/);
    const ready = await fetch(`${managementUrl}/ready`);
    assert.equal(ready.status, 200);
    const body = await ready.json();
    assert.equal(body.status, "ready");
    assert.deepEqual(Object.keys(body.checks).sort(), [
      "rate-limit:analytics",
      "rate-limit:permissions",
      "rate-limit:stream",
      "rate-limit:tweets",
      "rate-limit:words",
    ]);
  });
});

Deno.test("gateway uses the route file named by GATEWAY_ROUTES_FILE, rewrite included", async () => {
  await using query = echoServer();
  const file = new URL("./testdata/rewrite_routes.json", import.meta.url).pathname;
  await withGateway({ env: { GATEWAY_ROUTES_FILE: file } }, async ({ url, discovery }) => {
    discovery.add("query", query);
    const echo = await echoOf(await fetch(`${url}/search/12?x=1`));
    assert.equal(echo.path, "/api/v2/tweets/12?x=1");
    assert.equal(echo.headers["x-forwarded-prefix"], "/search");
    await assertProblem(await fetch(`${url}/api/v1/tweets`), 404, "not-found");
  });
});

Deno.test("gateway default routes cover every service's public paths", () => {
  assert.deepEqual(
    DEFAULT_ROUTES.map((r) => [r.prefix, r.service, r.auth]),
    [
      ["/api/tweets", "query", { mode: "authenticated", audience: "query" }],
      ["/api/v1/tweets", "query", { mode: "authenticated", audience: "query" }],
      ["/api/v2/tweets", "query", { mode: "authenticated", audience: "query" }],
      [
        "/api/v1/permissions",
        "query",
        { mode: "anyRole", roles: ["app_admin_role", "app_super_user_role"], audience: "query" },
      ],
      [
        "/api/v1/stream",
        "stream",
        { mode: "anyRole", roles: ["app_admin_role"], audience: "stream" },
      ],
      ["/api/v1/words", "wordcount", { mode: "authenticated", audience: "wordcount" }],
      ["/api/v1/analytics", "analytics", { mode: "authenticated", audience: "analytics" }],
    ],
  );
});

Deno.test("gateway proxies only the public API: upstream /metrics, /ready and the registry stay out of reach", async () => {
  await withGateway({}, async ({ url, discovery, token }) => {
    // Real service apps upstream, with their own /health, /ready and /metrics.
    const operational: string[] = [];
    const upstreams = ["query", "stream", "wordcount", "analytics", "registry", "identity"].map(
      (service) => {
        const app = createServiceApp({ context: testContext(service) });
        app.use("*", async (c, next) => {
          await next();
          if (/^\/(health|ready|metrics)$/.test(c.req.routePath)) operational.push(c.req.path);
        });
        app.all("/api/*", (c) => c.json({ service, path: c.req.path }));
        const server = serveApp(app, { hostname: "127.0.0.1", port: 0 });
        discovery.add(service, { url: server.url } as TestServer);
        return server;
      },
    );
    try {
      const user = bearer(await token("app_admin"));
      const registryPaths = [
        "/api/v1/registry/services",
        "/api/v1/registry/services/query/instances",
        "/api/v1/registry/services/query/watch",
        "/api/v1/registry/prometheus/targets",
      ];
      for (const path of registryPaths) {
        await assertProblem(await fetch(`${url}${path}`, { headers: user }), 404, "not-found");
      }
      // Encoded dots, slashes and backslashes stay inside one path segment upstream.
      const tricks = [
        "/api/v1/tweets/%2e%2e/%2e%2e/%2e%2e/metrics",
        "/api/v1/tweets/..%2f..%2f..%2fready",
        "/api/v1/tweets/%2E%2E%2F%2E%2E%2F%2E%2E%2Fmetrics",
        "/api/v1/stream/..%2f..%2f..%2fmetrics",
        "/api/v1/words/..%5c..%5c..%5cready",
        "/api/v1/analytics/%252e%252e/%252e%252e/%252e%252e/metrics",
      ];
      for (const path of tricks) {
        // Sent as written: fetch would resolve the dot segments before sending.
        const answer = await rawRequest(url, "GET", path, user.authorization!);
        assert.match(answer, /^HTTP\/1\.1 \d{3}/, path);
        // At most the gateway's own (the URL resolves %2e%2e as ..), never an upstream's.
        assert.doesNotMatch(answer, /service_info\{service="(?!gateway")/, path);
      }
      assert.deepEqual(operational, [], "no upstream's /health, /ready or /metrics was reached");
    } finally {
      await Promise.all(upstreams.map((server) => server.shutdown()));
    }
  });
});

Deno.test("gateway answers 405 with Allow for the methods it cannot forward, and never calls upstream", async () => {
  const methods: string[] = [];
  await using analytics = startTestServer((request) => {
    methods.push(request.method);
    return Response.json({});
  });
  await withGateway({}, async ({ url, discovery, token }) => {
    discovery.add("analytics", analytics);
    const authorization = `Bearer ${await token("app_super_user")}`;
    for (const method of ["TRACE", "TRACK", "trace"]) {
      const answer = await rawRequest(url, method, "/api/v1/analytics/top?limit=10", authorization);
      const [head = "", body = ""] = answer.split("\r\n\r\n");
      assert.match(head, /^HTTP\/1\.1 405 /, method);
      assert.match(head, /^allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS$/im, method);
      assert.match(head, /^content-type: application\/problem\+json$/im, method);
      const problem = JSON.parse(body);
      assert.equal(problem.type, problemType("method-not-allowed"), method);
      assert.equal(problem.status, 405);
    }
    // Deno's HTTP server refuses CONNECT to a path itself, before the gateway sees it.
    const connect = await rawRequest(url, "CONNECT", "/api/v1/analytics/top", authorization);
    assert.match(connect, /^HTTP\/1\.1 4\d\d /);
    const allowed = await fetch(`${url}/api/v1/analytics/top`, { headers: { authorization } });
    assert.equal(allowed.status, 200);
    await allowed.body?.cancel();
    assert.deepEqual(methods, ["GET"]);
  });
});
