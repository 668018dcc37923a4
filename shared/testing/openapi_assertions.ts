/**
 * The contract every service's description is held to: valid OpenAPI 3.1,
 * and exactly the routes the app serves (no undocumented route, no
 * documented route that is missing).
 */
import assert from "node:assert/strict";
import { Validator } from "@seriousme/openapi-schema-validator";
import type { Hono } from "hono";

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/** `METHOD /path/{param}` for each route the app handles (middleware excluded). */
export function servedRoutes(app: Hono): Set<string> {
  const routes = new Set<string>();
  for (const route of app.routes) {
    // `app.use` middleware is registered for every method, on `*` or a prefix.
    if (route.method === "ALL" && (route.path === "*" || route.path.endsWith("/*"))) continue;
    const path = route.path.replace(/:([A-Za-z0-9_]+)(\{[^}]*\})?/g, "{$1}");
    routes.add(`${route.method} ${path}`);
  }
  return routes;
}

/** `METHOD /path/{param}` for each operation of an OpenAPI description. */
export function describedRoutes(description: { paths?: Record<string, object> }): Set<string> {
  const routes = new Set<string>();
  for (const [path, item] of Object.entries(description.paths ?? {})) {
    for (const method of Object.keys(item)) {
      if (METHODS.includes(method)) routes.add(`${method.toUpperCase()} ${path}`);
    }
  }
  return routes;
}

/** Fails unless the description is valid OpenAPI 3.1. */
export async function assertValidOpenApi31(description: unknown): Promise<void> {
  const validator = new Validator();
  const result = await validator.validate(description as Record<string, unknown>);
  assert.equal(validator.version, "3.1", "the description must be OpenAPI 3.1");
  assert.ok(result.valid, `invalid OpenAPI 3.1: ${JSON.stringify(result.errors, null, 2)}`);
}

/**
 * Fetches the app's `/openapi.json` and fails unless it is valid OpenAPI 3.1
 * listing exactly the routes the app serves. Returns the description.
 */
export async function assertDescribesEveryRoute(
  app: Hono,
  path = "/openapi.json",
): Promise<Record<string, unknown>> {
  const response = await app.request(path);
  assert.equal(response.status, 200, `${path} answered ${response.status}`);
  const description = await response.json();
  await assertValidOpenApi31(description);
  const served = servedRoutes(app);
  const described = describedRoutes(description);
  assert.deepEqual(
    { undocumented: [...served].filter((route) => !described.has(route)).sort() },
    { undocumented: [] },
  );
  assert.deepEqual(
    { notServed: [...described].filter((route) => !served.has(route)).sort() },
    { notServed: [] },
  );
  return description;
}
