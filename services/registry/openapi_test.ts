import assert from "node:assert/strict";
import { assertDescribesEveryRoute } from "../../shared/testing/openapi_assertions.ts";
import { startTestRegistry } from "./_testing.ts";

const API = "/api/v1/registry/services";

Deno.test("registry's /openapi.json is valid OpenAPI 3.1 describing every route it serves", async () => {
  const registry = await startTestRegistry();
  try {
    const description = await assertDescribesEveryRoute(registry.service.app);
    const paths = description.paths as Record<string, Record<string, Record<string, unknown>>>;
    const register = paths[`${API}/{service}/instances/{instanceId}`]?.put;
    assert.ok(register !== undefined, "PUT of an instance is described");
    assert.deepEqual(register.security, [{ bearerAuth: [] }]);
    assert.deepEqual(Object.keys(register.responses as object).sort(), [
      "200",
      "201",
      "400",
      "401",
      "403",
      "413",
      "415",
    ]);
  } finally {
    await registry.stop();
  }
});

Deno.test("registry validates paths and bodies with the schemas it describes", async () => {
  const registry = await startTestRegistry();
  try {
    const read = await registry.issuer.authorization({ audience: "registry", roles: [] });
    const badName = await fetch(`${registry.url}${API}/No_Such/instances`, { headers: read });
    assert.equal(badName.status, 400);
    const problem = await badName.json();
    assert.equal(problem.type, "urn:twitterapi:problem:invalid-parameter");
    assert.deepEqual(problem.errors.map((error: { parameter: string }) => error.parameter), [
      "service",
    ]);

    const token = await registry.issuer.serviceTokens("query").token();
    const badBody = await fetch(`${registry.url}${API}/query/instances/q1`, {
      method: "PUT",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ baseUrl: "http://h:1/?q", version: "", metadata: { n: 1 } }),
    });
    assert.equal(badBody.status, 400);
    const refused = await badBody.json();
    assert.deepEqual(
      refused.errors.map((error: { parameter: string }) => error.parameter).sort(),
      ["body.baseUrl", "body.metadata.n", "body.version"],
    );
    assert.match(refused.detail, /must not carry credentials, a query or a fragment/);
  } finally {
    await registry.stop();
  }
});
