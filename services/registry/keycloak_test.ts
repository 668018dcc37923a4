/**
 * Service identity against the real Keycloak (`deno task engines up
 * keycloak`): the realm file as it is now is imported into a realm of its
 * own (shared/testing/keycloak.ts), every service gets its token from
 * Keycloak by client credentials and registers itself with a registry that
 * trusts that realm, and Keycloak's tokens for the wrong service, for a user
 * or for nobody are refused. A Keycloak that is down fails these tests.
 */
import assert from "node:assert/strict";
import { ClientCredentialsTokenSource } from "../../shared/auth/client_credentials.ts";
import { createJwtVerifier } from "../../shared/auth/jwt_verifier.ts";
import { RegistryClient } from "../../shared/discovery/registry_client.ts";
import { serveApp } from "../../shared/http/serve.ts";
import { importKeycloakTestRealm } from "../../shared/testing/keycloak.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { loadConfig, REGISTERING_SERVICES, serviceCredentials } from "../config.ts";
import { CONSOLE, devPassword, devSecret, form } from "../identity/_testing.ts";
import { createRegistryService } from "./main.ts";

const API = "/api/v1/registry/services";

Deno.test("every service registers with its own Keycloak credentials; other tokens are refused", async () => {
  await using realm = await importKeycloakTestRealm();
  const config = loadConfig({ OIDC_ISSUER: realm.issuer });
  const service = createRegistryService({
    config,
    context: testContext("registry"),
    verifier: createJwtVerifier({ issuer: realm.issuer, audience: "registry" }),
  });
  await service.start();
  const server = serveApp(service.app, { hostname: "127.0.0.1", port: 0 });
  const clients: RegistryClient[] = [];
  try {
    for (const [index, name] of REGISTERING_SERVICES.entries()) {
      // The settings' defaults are the realm file's development credentials.
      const tokens = new ClientCredentialsTokenSource({
        issuer: realm.issuer,
        ...serviceCredentials(config, name),
      });
      const client = new RegistryClient({
        urls: [server.url],
        logger: testContext(name).logger,
        tokens,
      });
      clients.push(client);
      await client.register({
        service: name,
        instanceId: `${name}-1`,
        baseUrl: `http://127.0.0.1:${20_000 + index}`,
        version: "test",
        metadata: {},
      });
    }
    const prometheus = new ClientCredentialsTokenSource({
      issuer: realm.issuer,
      clientId: "prometheus",
      clientSecret: devSecret("prometheus"),
    });
    const reader = { authorization: `Bearer ${await prometheus.token()}` };
    const listed = await (await fetch(`${server.url}${API}`, { headers: reader })).json();
    assert.deepEqual(
      listed.services.map((entry: { service: string }) => entry.service),
      [...REGISTERING_SERVICES].sort(),
    );
    // The gateway's client follows query through the watch stream.
    assert.deepEqual(
      (await clients[1]!.instances("query")).map((instance) => instance.instanceId),
      ["query-1"],
    );

    const register = async (service: string, headers: Record<string, string>) => {
      const response = await fetch(`${server.url}${API}/${service}/instances/impostor`, {
        method: "PUT",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify({ baseUrl: "http://127.0.0.1:1", version: "evil" }),
      });
      await response.body?.cancel();
      return response.status;
    };
    const stream = new ClientCredentialsTokenSource({
      issuer: realm.issuer,
      ...serviceCredentials(config, "stream"),
    });
    assert.equal(await register("query", { authorization: `Bearer ${await stream.token()}` }), 403);
    assert.equal(await register("query", reader), 403, "Prometheus's client only reads");
    assert.equal(await register("query", {}), 401);
    const login = await fetch(
      `${realm.issuer}/protocol/openid-connect/token`,
      form({
        grant_type: "password",
        client_id: CONSOLE,
        username: "app_super_user",
        password: devPassword("app_super_user"),
      }),
    );
    const user = (await login.json()).access_token;
    // The console's tokens are not for the registry at all.
    assert.equal(await register("query", { authorization: `Bearer ${user}` }), 401);
    const instances = await (await fetch(`${server.url}${API}/query/instances`, {
      headers: reader,
    })).json();
    assert.deepEqual(
      instances.instances.map((instance: { instanceId: string }) => instance.instanceId),
      ["query-1"],
    );
  } finally {
    await Promise.all(clients.map((client) => client.close()));
    await service.stop();
    await server.shutdown();
  }
});
