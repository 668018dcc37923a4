import assert from "node:assert/strict";
import { assertDescribesEveryRoute } from "../../shared/testing/openapi_assertions.ts";
import { testIdentity } from "./_testing.ts";

const OIDC = "/realms/twitterapi/protocol/openid-connect";

type Operation = {
  security?: unknown;
  requestBody?: { content: Record<string, unknown> };
  responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
};

Deno.test("identity's /openapi.json is valid OpenAPI 3.1 describing every route it serves", async () => {
  const { service } = await testIdentity();
  const description = await assertDescribesEveryRoute(service.app);
  const paths = description.paths as Record<string, Record<string, Operation>>;
  const token = paths[`${OIDC}/token`]?.post;
  assert.ok(token !== undefined, "the token endpoint is described");
  assert.deepEqual(Object.keys(token.requestBody?.content ?? {}), [
    "application/x-www-form-urlencoded",
  ]);
  assert.deepEqual(token.security, [{ clientSecretBasic: [] }, {}]);
  // OAuth errors keep the protocol's body, not problem+json.
  for (const status of ["400", "401"]) {
    assert.deepEqual(token.responses[status]?.content, {
      "application/json": { schema: { $ref: "#/components/schemas/OAuthError" } },
    });
  }
  const authorize = paths[`${OIDC}/auth`]?.get;
  assert.ok(authorize !== undefined, "the authorization endpoint is described");
  assert.deepEqual(Object.keys(authorize.responses).sort(), ["200", "302", "400"]);
  assert.deepEqual(Object.keys(authorize.responses["400"]?.content ?? {}), ["text/html"]);
});

Deno.test("identity's parameter schemas refuse in the protocol's format", async () => {
  const { service } = await testIdentity();
  const missing = await service.app.request(`${OIDC}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: "client_id=console&grant_type=",
  });
  assert.equal(missing.status, 400);
  assert.deepEqual(await missing.json(), {
    error: "invalid_request",
    error_description: "Missing parameter: grant_type",
  });
  const twice = await service.app.request(`${OIDC}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: "grant_type=password&client_id=console&scope=openid&scope=email",
  });
  assert.equal(twice.status, 400);
  assert.equal(twice.headers.get("cache-control"), "no-store");
  assert.deepEqual(await twice.json(), {
    error: "invalid_request",
    error_description: "Parameter scope appears more than once",
  });
  const page = await service.app.request(`${OIDC}/auth?client_id=console&client_id=other`);
  assert.equal(page.status, 400);
  assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
  assert.match(await page.text(), /Parameter client_id appears more than once/);
  const logout = await service.app.request(`${OIDC}/logout`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: "{}",
  });
  assert.equal(logout.status, 400);
  assert.match(await logout.text(), /must be application\/x-www-form-urlencoded/);
});
