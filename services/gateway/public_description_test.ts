/**
 * The gateway's merged public description: upstream services described by
 * their own `/openapi.json` (described apps served on loopback), identity as
 * the issuer, the gateway served by Deno.serve.
 */
import assert from "node:assert/strict";
import type { Hono } from "hono";
import type { BlankEnv } from "hono/types";
import type {
  ServiceDiscovery,
  ServiceInstance,
} from "../../shared/discovery/service_discovery.ts";
import {
  bearerSecurity,
  createRoute,
  type OpenAPIHono,
  problemResponses,
  z,
} from "../../shared/http/openapi.ts";
import { serveApp } from "../../shared/http/serve.ts";
import { createServiceApp } from "../../shared/http/service_app.ts";
import { MemoryRateLimitStore } from "../../shared/rate_limit/memory_rate_limit_store.ts";
import {
  assertDescribesEveryRoute,
  assertValidOpenApi31,
} from "../../shared/testing/openapi_assertions.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { loadConfig } from "../config.ts";
import { testIdentity } from "../identity/_testing.ts";
import { createGatewayService } from "./main.ts";
import { type OpenApiDocument, PublicDescription, publicPath } from "./public_description.ts";
import { DEFAULT_BREAKER, type GatewayRoute } from "./routes.ts";

class FixedDiscovery implements ServiceDiscovery {
  readonly current: ServiceInstance[] = [];
  add(service: string, baseUrl: string) {
    this.current.push({ service, instanceId: service, baseUrl, version: "test", metadata: {} });
  }
  instances(service: string): Promise<readonly ServiceInstance[]> {
    return Promise.resolve(this.current.filter((instance) => instance.service === service));
  }
}

function route(overrides: Partial<GatewayRoute> & Pick<GatewayRoute, "prefix">): GatewayRoute {
  return {
    service: "books",
    auth: { mode: "none" },
    breaker: DEFAULT_BREAKER,
    timeoutMs: 5000,
    retries: 0,
    fallback: { retryAfterSec: 10 },
    ...overrides,
  };
}

/** A described upstream: `GET /v1/books/{id}` behind bearerAuth, and its operational routes. */
function booksApp(): OpenAPIHono<BlankEnv> {
  const app = createServiceApp({ context: testContext("books") });
  const Book = z.object({ id: z.string(), title: z.string() }).openapi("Book");
  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/books/{id}",
      operationId: "getBook",
      summary: "One book",
      security: bearerSecurity,
      request: { params: z.object({ id: z.string().regex(/^\d+$/) }) },
      responses: {
        200: { description: "The book", content: { "application/json": { schema: Book } } },
        ...problemResponses(400, 404),
      },
    }),
    (c) => c.json({ id: c.req.valid("param").id, title: "Dune" }, 200),
  );
  return app;
}

const ROUTES: readonly GatewayRoute[] = [
  route({
    prefix: "/api/books",
    rewrite: { prefix: "/v1/books" },
    auth: { mode: "authenticated", audience: "books" },
    rateLimit: { policy: "books", limit: 100, windowMs: 60_000 },
  }),
  route({
    prefix: "/api/stream",
    service: "stream",
    auth: { mode: "anyRole", roles: ["app_admin_role"], audience: "stream" },
  }),
];

async function withGateway(
  routes: readonly GatewayRoute[],
  test: (
    gateway: { url: string; app: Hono; discovery: FixedDiscovery; booksUrl: string },
  ) => Promise<void>,
): Promise<void> {
  const identity = await testIdentity();
  const issuerServer = serveApp(identity.service.app, { hostname: "127.0.0.1", port: 0 });
  const books = serveApp(booksApp(), { hostname: "127.0.0.1", port: 0 });
  const discovery = new FixedDiscovery();
  const store = new MemoryRateLimitStore();
  const gateway = createGatewayService({
    config: loadConfig({ OIDC_ISSUER: `${issuerServer.url}/realms/twitterapi` }),
    context: testContext("gateway"),
    discovery,
    rateLimitStore: store,
    routes,
  });
  await gateway.start();
  const server = serveApp(gateway.app, { hostname: "127.0.0.1", port: 0 });
  try {
    await test({ url: server.url, app: gateway.app, discovery, booksUrl: books.url });
  } finally {
    await server.shutdown();
    await gateway.stop();
    await store.close();
    await books.shutdown();
    await issuerServer.shutdown();
  }
}

async function description(url: string): Promise<OpenApiDocument> {
  const response = await fetch(`${url}/openapi.json`);
  assert.equal(response.status, 200);
  return await response.json();
}

Deno.test("the merged description has the upstreams' operations at their public paths, with the gateway's security, limits and fallbacks", async () => {
  await withGateway(ROUTES, async ({ url, discovery, booksUrl }) => {
    discovery.add("books", booksUrl);
    const doc = await description(url);
    await assertValidOpenApi31(doc);
    // Rewritten: /v1/books/{id} upstream is /api/books/{id} through the gateway.
    const operation = doc.paths["/api/books/{id}"]?.get;
    assert.ok(operation, `paths: ${Object.keys(doc.paths)}`);
    assert.equal(doc.paths["/v1/books/{id}"], undefined);
    assert.equal(operation.operationId, "books_getBook");
    assert.deepEqual(operation.security, [{ oauth2: [] }]);
    // The upstream's operational routes are not behind any public prefix.
    assert.equal(doc.paths["/ready"], undefined);
    assert.equal(doc.paths["/metrics"], undefined);
    // The gateway's own routes.
    for (const own of ["/health", "/openapi.json", "/docs", "/docs/swagger-ui-bundle.js"]) {
      assert.ok(doc.paths[own]?.get, own);
    }
    const issuer = doc.components.securitySchemes.oauth2;
    assert.equal(issuer.type, "oauth2");
    assert.match(
      issuer.flows.authorizationCode.authorizationUrl,
      /\/protocol\/openid-connect\/auth$/,
    );
    assert.match(issuer.flows.authorizationCode.tokenUrl, /\/protocol\/openid-connect\/token$/);
    assert.equal(issuer.flows.clientCredentials.tokenUrl, issuer.flows.authorizationCode.tokenUrl);
    assert.equal(doc.components.securitySchemes.bearerAuth, undefined);
    // What the gateway answers itself.
    const { responses } = operation;
    assert.deepEqual(Object.keys(responses).sort(), ["200", "400", "401", "404", "429", "503"]);
    assert.deepEqual(Object.keys(responses["429"].headers).sort(), [
      "RateLimit",
      "RateLimit-Policy",
      "Retry-After",
    ]);
    assert.ok(responses["429"].content["application/problem+json"]);
    assert.ok(responses["503"].headers["Retry-After"]);
    assert.ok(responses["200"].headers.RateLimit);
    assert.ok(doc.components.schemas.Book);
    assert.ok(doc.components.headers["RateLimit-Policy"]);
    // stream has no instance: left out and said so, not fatal.
    assert.deepEqual(doc["x-unavailable"], [{
      service: "stream",
      reason: "Cannot call stream GET /openapi.json: no instance is known",
      prefixes: ["/api/stream"],
    }]);
    assert.match(doc.info.description, /Not described now.*stream \(\/api\/stream\)/);
  });
});

Deno.test("the gateway's own app serves exactly the routes it describes", async () => {
  // Without upstreams, the merged description is the gateway's own. Its catch-all (the
  // route table's dispatcher) is `app.all("*")`, which the assertion counts as middleware:
  // the operations behind it are the upstreams', described by them.
  await withGateway(ROUTES, async ({ app }) => {
    const doc = await assertDescribesEveryRoute(app);
    assert.equal((doc["x-unavailable"] as unknown[]).length, 2);
  });
});

Deno.test("/docs serves Swagger UI from the package, configured for sign-in with PKCE", async () => {
  await withGateway(ROUTES, async ({ url }) => {
    const page = await fetch(`${url}/docs`);
    assert.equal(page.headers.get("content-type"), "text/html; charset=UTF-8");
    const html = await page.text();
    for (const file of ["swagger-ui.css", "swagger-ui-bundle.js", "swagger-initializer.js"]) {
      assert.ok(html.includes(`/docs/${file}`), file);
    }
    const bundle = await fetch(`${url}/docs/swagger-ui-bundle.js`);
    assert.equal(bundle.headers.get("content-type"), "text/javascript; charset=utf-8");
    assert.ok((await bundle.text()).includes("SwaggerUIBundle"));
    const css = await fetch(`${url}/docs/swagger-ui.css`);
    assert.equal(css.headers.get("content-type"), "text/css; charset=utf-8");
    assert.ok((await css.text()).includes(".swagger-ui"));
    const redirect = await (await fetch(`${url}/docs/oauth2-redirect.html`)).text();
    assert.ok(redirect.includes("oauth2-redirect.js"));
    assert.ok(
      (await (await fetch(`${url}/docs/oauth2-redirect.js`)).text()).includes(
        "swaggerUIRedirectOauth2",
      ),
    );
    const init = await (await fetch(`${url}/docs/swagger-initializer.js`)).text();
    assert.match(init, /clientId: "api-docs"/);
    assert.match(init, /usePkceWithAuthorizationCodeGrant: true/);
    assert.match(init, /\/docs\/oauth2-redirect\.html/);
  });
});

Deno.test("publicPath inverts the route's rewrite, and leaves paths another route takes", () => {
  const books = route({ prefix: "/api/books", rewrite: { prefix: "/v1/books" } });
  const plain = route({ prefix: "/api/v1/tweets", service: "query" });
  const root = route({ prefix: "/api/legacy", rewrite: { prefix: "" } });
  const specific = route({ prefix: "/api/legacy/admin", service: "admin" });
  const table = [books, plain, root, specific];
  assert.equal(publicPath(table, books, "/v1/books/{id}"), "/api/books/{id}");
  assert.equal(publicPath(table, books, "/v1/books"), "/api/books");
  assert.equal(publicPath(table, books, "/v1/booksellers"), undefined);
  assert.equal(publicPath(table, books, "/health"), undefined);
  assert.equal(publicPath(table, plain, "/api/v1/tweets/{id}"), "/api/v1/tweets/{id}");
  assert.equal(publicPath(table, plain, "/api/v2/tweets"), undefined);
  assert.equal(publicPath(table, root, "/health"), "/api/legacy/health");
  // /api/legacy/admin/... goes to the admin route, not to the legacy service.
  assert.equal(publicPath(table, root, "/admin/users"), undefined);
});

function fakeUpstream(
  paths: Record<string, unknown>,
  schemas: Record<string, unknown>,
): OpenApiDocument {
  return {
    openapi: "3.1.0",
    info: { title: "x", version: "1" },
    paths,
    components: { schemas },
  };
}

Deno.test("component schemas of different shapes under one name are kept apart, equal ones shared", async () => {
  const problem = { type: "object", properties: { type: { type: "string" } } };
  const upstreams: Record<string, OpenApiDocument> = {
    a: fakeUpstream({
      "/a/items": {
        get: {
          operationId: "list",
          responses: {
            200: {
              description: "Items",
              content: {
                "application/json": { schema: { $ref: "#/components/schemas/Item" } },
              },
            },
          },
        },
      },
    }, { Item: { type: "object", properties: { a: { type: "string" } } }, Problem: problem }),
    b: fakeUpstream({
      "/b/items": {
        get: {
          operationId: "list",
          responses: {
            200: {
              description: "Items",
              content: {
                "application/json": { schema: { $ref: "#/components/schemas/Item" } },
              },
            },
          },
        },
      },
    }, {
      Item: { type: "object", properties: { b: { type: "integer" } } },
      Page: { type: "array", items: { $ref: "#/components/schemas/Item" } },
      Problem: problem,
    }),
  };
  const table = [route({ prefix: "/a", service: "a" }), route({ prefix: "/b", service: "b" })];
  let fetches = 0;
  let now = 0;
  const merged = new PublicDescription({
    routes: () => table,
    issuer: "http://127.0.0.1:1/realms/none",
    fetch: () => Promise.reject(new Error("no issuer here")),
    fetchUpstream: (route) => {
      fetches++;
      return Promise.resolve(Response.json(upstreams[route.service]));
    },
    logger: testContext("gateway").logger,
    now: () => now,
  });
  const own = () => fakeUpstream({}, { Problem: problem });
  const doc = await merged.get(own);
  await assertValidOpenApi31(doc);
  assert.deepEqual(Object.keys(doc.components.schemas).sort(), [
    "Item",
    "Page",
    "Problem",
    "b_Item",
  ]);
  assert.equal(
    doc.paths["/b/items"].get.responses["200"].content["application/json"].schema.$ref,
    "#/components/schemas/b_Item",
  );
  assert.equal(doc.components.schemas.Page.items.$ref, "#/components/schemas/b_Item");
  assert.deepEqual(
    [doc.paths["/a/items"].get.operationId, doc.paths["/b/items"].get.operationId],
    ["a_list", "b_list"],
  );
  // The issuer's discovery document could not be read: the conventional endpoints, said so.
  assert.match(doc["x-issuer-unavailable"], /no issuer here/);
  assert.equal(
    doc.components.securitySchemes.oauth2.flows.authorizationCode.authorizationUrl,
    "http://127.0.0.1:1/realms/none/protocol/openid-connect/auth",
  );
  // Cached until the time to live passes or the table changes.
  await merged.get(own);
  assert.equal(fetches, 2);
  now += 60_001;
  await merged.get(own);
  assert.equal(fetches, 4);
  merged.invalidate();
  await merged.get(own);
  assert.equal(fetches, 6);
});
