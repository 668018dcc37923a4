/**
 * The realm file against the real Keycloak (`deno task engines up keycloak`,
 * which imports shared/auth/twitterapi-realm.json): the same users log in
 * with the same client and the same development passwords, and Keycloak's
 * tokens carry the same `sub`, `aud` and `realm_access.roles` as the identity
 * service's. A Keycloak that is down fails these tests; none is skipped.
 */
import assert from "node:assert/strict";
import { createRemoteJWKSet, jwtVerify } from "jose";
import {
  audiences,
  basic,
  CONSOLE,
  decode,
  devPassword,
  devSecret,
  form,
  PEOPLE,
  realmRoles,
  SERVICE_CLIENTS,
  testIdentity,
} from "./_testing.ts";
import type { IdentityService } from "./main.ts";
import { importKeycloakTestRealm } from "../../shared/testing/keycloak.ts";

const KEYCLOAK_ISSUER = "http://127.0.0.1:9091/realms/twitterapi";
const START = "start it with `deno task engines up keycloak`";
const REIMPORT = "A running Keycloak keeps the realm it imported at its start: " +
  "`deno task engines down keycloak`, then `deno task engines up keycloak` imports the changed file";

async function requireKeycloak(): Promise<void> {
  const url = `${KEYCLOAK_ISSUER}/.well-known/openid-configuration`;
  let reason: string;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
    const body = await response.text();
    if (response.ok) return;
    reason = `${url} answered ${response.status}: ${body.slice(0, 200)}`;
  } catch (error) {
    reason = error instanceof Error ? error.message : String(error);
  }
  assert.fail(`Keycloak is not reachable at ${KEYCLOAK_ISSUER}: ${START} (${reason})`);
}

async function keycloakToken(
  params: Record<string, string>,
  headers = {},
  issuer = KEYCLOAK_ISSUER,
): Promise<string> {
  const response = await fetch(
    `${issuer}/protocol/openid-connect/token`,
    form(params, headers),
  );
  const body = await response.json();
  assert.equal(
    response.status,
    200,
    `Keycloak refused ${JSON.stringify(params.username ?? params.client_id ?? "the client")}: ` +
      `${
        JSON.stringify(body)
      }. Is its realm older than shared/auth/twitterapi-realm.json? ${REIMPORT}`,
  );
  return body.access_token;
}

async function identityToken(
  service: IdentityService,
  params: Record<string, string>,
  headers = {},
): Promise<string> {
  const response = await service.app.request(
    "http://127.0.0.1:8090/realms/twitterapi/protocol/openid-connect/token",
    form(params, headers),
  );
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return body.access_token;
}

/** The claims both issuers must agree on. */
function comparable(token: string) {
  const { claims } = decode(token);
  return {
    sub: claims.sub,
    aud: audiences(claims),
    roles: realmRoles(claims),
    azp: claims.azp,
    typ: claims.typ,
    preferred_username: claims.preferred_username,
    scope: String(claims.scope).split(" ").sort(),
  };
}

Deno.test("Keycloak imports the realm file: every demo user logs in with its dev password", async () => {
  await requireKeycloak();
  const jwks = createRemoteJWKSet(new URL(`${KEYCLOAK_ISSUER}/protocol/openid-connect/certs`));
  for (const username of PEOPLE) {
    const token = await keycloakToken({
      grant_type: "password",
      client_id: CONSOLE,
      username,
      password: devPassword(username),
    });
    const { payload } = await jwtVerify(token, jwks, {
      issuer: KEYCLOAK_ISSUER,
      audience: "query",
    });
    assert.equal(payload.preferred_username, username);
  }
});

Deno.test("Keycloak and the identity service put the same aud and roles in user tokens", async () => {
  await requireKeycloak();
  const { service } = await testIdentity();
  for (const username of PEOPLE) {
    const params = {
      grant_type: "password",
      client_id: CONSOLE,
      username,
      password: devPassword(username),
    };
    const keycloak = comparable(await keycloakToken(params));
    const identity = comparable(await identityToken(service, params));
    assert.deepEqual(identity, keycloak, username);
    assert.ok(keycloak.roles.length > 0, `${username} has realm roles`);
  }
});

Deno.test("Keycloak and the identity service put the same aud and roles in service-account tokens", async () => {
  await requireKeycloak();
  // The realm file as it is now, in a realm of its own: its ids are Keycloak's, so no `sub`.
  await using realm = await importKeycloakTestRealm();
  const { service } = await testIdentity();
  for (const clientId of SERVICE_CLIENTS) {
    const params = { grant_type: "client_credentials" };
    const headers = basic(clientId, devSecret(clientId));
    const { sub: _, ...keycloak } = comparable(await keycloakToken(params, headers, realm.issuer));
    const { sub: __, ...identity } = comparable(await identityToken(service, params, headers));
    assert.deepEqual(identity, keycloak, clientId);
    assert.ok(keycloak.aud.includes("registry"), `${clientId} tokens are for the registry`);
    const own = clientId.endsWith("-service") ? [`service:${clientId.slice(0, -8)}`] : [];
    assert.deepEqual(keycloak.roles.filter((role) => role.startsWith("service:")), own, clientId);
  }
});

Deno.test("Keycloak refuses what the identity service refuses, with the same error codes", async () => {
  await requireKeycloak();
  const { service } = await testIdentity();
  const url = `${KEYCLOAK_ISSUER}/protocol/openid-connect/token`;
  const cases: Record<string, string>[] = [
    { grant_type: "password", client_id: CONSOLE, username: "nobody", password: "x" },
    { grant_type: "password", client_id: CONSOLE, username: "app_user", password: "wrong" },
    { grant_type: "implicit", client_id: CONSOLE },
  ];
  for (const params of cases) {
    const keycloak = await (await fetch(url, form(params))).json();
    const identity = await (await service.app.request(
      "http://127.0.0.1:8090/realms/twitterapi/protocol/openid-connect/token",
      form(params),
    )).json();
    assert.equal(identity.error, keycloak.error, JSON.stringify(params));
  }
});
