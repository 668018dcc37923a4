import assert from "node:assert/strict";
import { MemoryRateLimitStore } from "../../shared/rate_limit/memory_rate_limit_store.ts";
import { StaticDiscovery } from "../../shared/discovery/service_discovery.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { loadConfig } from "../config.ts";
import { createGatewayService } from "./main.ts";
import { endToEndFields, upstreamHeaders } from "./proxy.ts";
import {
  DEFAULT_BREAKER,
  loadRouteFile,
  parseRouteTable,
  RouteTableError,
  upstreamPath,
} from "./routes.ts";

function testdata(name: string): string {
  return new URL(`./testdata/${name}`, import.meta.url).pathname;
}

function issuesOf(value: unknown): readonly string[] {
  try {
    parseRouteTable(value, "test.json");
  } catch (error) {
    assert.ok(error instanceof RouteTableError);
    assert.match(error.message, /^Cannot load the gateway routes from test\.json: /);
    return error.issues;
  }
  assert.fail("expected a RouteTableError");
}

const minimal = { prefix: "/api/x", service: "query", auth: { mode: "none" } };

Deno.test("parseRouteTable() fills defaults for a minimal route", () => {
  const [route] = parseRouteTable({ routes: [minimal] }, "test.json");
  assert.deepEqual(route, {
    prefix: "/api/x",
    service: "query",
    auth: { mode: "none" },
    breaker: DEFAULT_BREAKER,
    timeoutMs: 5000,
    retries: 2,
    fallback: { retryAfterSec: 10 },
  });
});

Deno.test("parseRouteTable() names every invalid field", () => {
  assert.deepEqual(issuesOf([]), ["the route table must be an object with 'routes': got []"]);
  assert.deepEqual(issuesOf({ routes: [] }), [
    "'routes' must be a non-empty list of routes: got []",
  ]);
  assert.deepEqual(
    issuesOf({
      routes: [{
        prefix: "/api/:id",
        service: "Query",
        auth: { mode: "anyRole", audience: "stream", roles: [] },
        rateLimit: { policy: "p", limit: 0, windowMs: 1000 },
        breaker: { resetTimeoutMs: -1, bogus: 1 },
        timeoutMs: "5s",
        extra: true,
      }],
    }),
    [
      "'routes[0].extra' is not a known field (known: prefix, service, rewrite, auth, rateLimit, " +
      "breaker, timeoutMs, retries, fallback)",
      "'routes[0].prefix' must be a path starting with '/', without a trailing '/', '*', ':', '?' " +
      'or braces: got "/api/:id"',
      `'routes[0].service' must be a service name (lower-case letters, digits, '-'): got "Query"`,
      "'routes[0].auth.roles' must be a non-empty list of role names: got []",
      "'routes[0].rateLimit.limit' must be an integer from 1 to 1000000000: got 0",
      "'routes[0].breaker.bogus' is not a known field (known: errorThresholdPercentage, " +
      "volumeThreshold, resetTimeoutMs, rollingCountTimeoutMs)",
      "'routes[0].breaker.resetTimeoutMs' must be an integer from 1 to 3600000: got -1",
      `'routes[0].timeoutMs' must be an integer from 1 to 600000: got "5s"`,
    ],
  );
  assert.deepEqual(issuesOf({ routes: [{ ...minimal, auth: { mode: "authenticated" } }] }), [
    "'routes[0].auth.audience' must be an audience name: got nothing",
  ]);
});

Deno.test("parseRouteTable() refuses repeated prefixes and disagreeing policies and breakers", () => {
  assert.deepEqual(
    issuesOf({
      routes: [
        { ...minimal, rateLimit: { policy: "p", limit: 5, windowMs: 1000 } },
        { ...minimal },
        { ...minimal, prefix: "/api/y", rateLimit: { policy: "p", limit: 6, windowMs: 1000 } },
        { ...minimal, prefix: "/api/z", breaker: { volumeThreshold: 99 } },
      ],
    }),
    [
      "'routes[1].prefix' repeats routes[0].prefix '/api/x'",
      "'routes[2].rateLimit' must have the limit and window of routes[0] for policy 'p'",
      "'routes[3].breaker' must equal routes[0].breaker: the breaker is per service ('query')",
    ],
  );
});

Deno.test("loadRouteFile() fails clearly for a missing, non-JSON or invalid file", () => {
  assert.throws(() => loadRouteFile(testdata("missing.json")), {
    name: "RouteTableError",
    message: /missing\.json: the file cannot be read: /,
  });
  assert.throws(() => loadRouteFile(testdata("not_json.txt")), {
    name: "RouteTableError",
    message: /not_json\.txt: the file is not JSON: /,
  });
  assert.throws(() => loadRouteFile(testdata("invalid_routes.json")), {
    name: "RouteTableError",
    message: new RegExp(
      "invalid_routes\\.json: 'routes\\[0\\]\\.auth\\.audience' must be an audience name: got " +
        "nothing; 'routes\\[0\\]\\.rateLimit\\.limit' must be an integer from 1 to 1000000000: got 0$",
    ),
  });
});

Deno.test("createGatewayService() throws for an invalid GATEWAY_ROUTES_FILE", () => {
  assert.throws(
    () =>
      createGatewayService({
        config: loadConfig({ GATEWAY_ROUTES_FILE: testdata("invalid_routes.json") }),
        context: testContext("gateway"),
        discovery: new StaticDiscovery([]),
        rateLimitStore: new MemoryRateLimitStore(),
      }),
    { name: "RouteTableError", message: /routes\[0\]\.rateLimit\.limit/ },
  );
});

Deno.test("upstreamPath() keeps paths unless the route rewrites its prefix", () => {
  const [plain, rewritten, stripped] = parseRouteTable({
    routes: [
      minimal,
      { ...minimal, prefix: "/search", rewrite: { prefix: "/api/v2/tweets" } },
      { ...minimal, prefix: "/q", rewrite: { prefix: "" } },
    ],
  }, "test.json");
  assert.equal(upstreamPath(plain!, "/api/x/1"), "/api/x/1");
  assert.equal(upstreamPath(rewritten!, "/search"), "/api/v2/tweets");
  assert.equal(upstreamPath(rewritten!, "/search/7"), "/api/v2/tweets/7");
  assert.equal(upstreamPath(stripped!, "/q/api/v1"), "/api/v1");
  assert.equal(upstreamPath(stripped!, "/q"), "/");
});

Deno.test("endToEndFields() drops hop-by-hop fields, those named by Connection included", () => {
  const headers = endToEndFields(
    new Headers({
      connection: "keep-alive, x-hop",
      "keep-alive": "timeout=5",
      "transfer-encoding": "chunked",
      te: "trailers",
      upgrade: "h2c",
      "proxy-authorization": "Basic x",
      "x-hop": "1",
      "content-length": "12",
      accept: "application/vnd.api.v2+json",
      authorization: "Bearer t",
    }),
  );
  assert.deepEqual([...headers], [
    ["accept", "application/vnd.api.v2+json"],
    ["authorization", "Bearer t"],
  ]);
});

Deno.test("upstreamHeaders() quotes IPv6 clients and appends to earlier proxies' fields", () => {
  const headers = new Headers(upstreamHeaders(
    new Headers({ host: "gw.example", forwarded: "for=192.0.2.1", "x-forwarded-prefix": "/evil" }),
    { clientAddress: "::1", host: "gw.example", proto: "https" },
  ));
  assert.equal(headers.get("forwarded"), 'for=192.0.2.1, for="[::1]";host=gw.example;proto=https');
  assert.equal(headers.get("x-forwarded-for"), "::1");
  assert.equal(headers.get("x-forwarded-prefix"), null);
  assert.equal(headers.get("host"), null);
});
