/** The identity service in process, through `app.request()`. */
import assert from "node:assert/strict";
import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from "jose";
import {
  audiences,
  basic,
  CONSOLE,
  decode,
  devPassword,
  devSecret,
  form,
  type Pkce,
  pkce,
  realmCopy,
  realmRoles,
  REDIRECT_URI,
  testIdentity,
} from "./_testing.ts";
import type { IdentityService } from "./main.ts";
import { RealmError } from "./realm.ts";

const ORIGIN = "http://127.0.0.1:8090";
const ISSUER = `${ORIGIN}/realms/twitterapi`;
const OIDC = `${ISSUER}/protocol/openid-connect`;

async function token(service: IdentityService, params: Record<string, string>, headers = {}) {
  const response = await service.app.request(`${OIDC}/token`, form(params, headers));
  return { response, body: await response.json() };
}

function passwordGrant(service: IdentityService, username: string, password?: string) {
  return token(service, {
    grant_type: "password",
    client_id: CONSOLE,
    username,
    password: password ?? devPassword(username),
  });
}

async function verify(service: IdentityService, jwt: string, audience?: string) {
  const response = await service.app.request(`${OIDC}/certs`);
  const jwks = createLocalJWKSet(await response.json() as JSONWebKeySet);
  return (await jwtVerify(jwt, jwks, { issuer: ISSUER, ...audience ? { audience } : {} })).payload;
}

function authorizeUrl(pair: Pkce, extra: Record<string, string> = {}): string {
  const params = new URLSearchParams({
    response_type: "code",
    client_id: CONSOLE,
    redirect_uri: REDIRECT_URI,
    scope: "openid",
    state: "state-1",
    code_challenge: pair.challenge,
    code_challenge_method: "S256",
    ...extra,
  });
  return `${OIDC}/auth?${params}`;
}

/** Signs in through the login form; returns the code from the redirect. */
async function codeByForm(service: IdentityService, pair: Pkce, username = "app_user") {
  const page = await service.app.request(authorizeUrl(pair));
  assert.equal(page.status, 200);
  const html = await page.text();
  const hidden = [...html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)]
    .map(([, name, value]) => [name!, value!.replaceAll("&amp;", "&")]);
  const response = await service.app.request(
    `${OIDC}/auth`,
    form({ ...Object.fromEntries(hidden), username, password: devPassword(username) }),
  );
  assert.equal(response.status, 303);
  const location = new URL(response.headers.get("location")!);
  assert.equal(`${location.origin}${location.pathname}`, REDIRECT_URI);
  assert.equal(location.searchParams.get("state"), "state-1");
  assert.equal(location.searchParams.get("iss"), ISSUER);
  return location.searchParams.get("code")!;
}

function redeem(service: IdentityService, code: string, verifier: string, extra = {}) {
  return token(service, {
    grant_type: "authorization_code",
    client_id: CONSOLE,
    code,
    redirect_uri: REDIRECT_URI,
    code_verifier: verifier,
    ...extra,
  });
}

Deno.test("identity discovery document names Keycloak's endpoints under the issuer", async () => {
  const { service } = await testIdentity();
  const response = await service.app.request(`${ISSUER}/.well-known/openid-configuration`);
  assert.equal(response.status, 200);
  const doc = await response.json();
  assert.equal(doc.issuer, ISSUER);
  assert.equal(doc.authorization_endpoint, `${OIDC}/auth`);
  assert.equal(doc.token_endpoint, `${OIDC}/token`);
  assert.equal(doc.userinfo_endpoint, `${OIDC}/userinfo`);
  assert.equal(doc.jwks_uri, `${OIDC}/certs`);
  assert.deepEqual(doc.grant_types_supported, [
    "authorization_code",
    "client_credentials",
    "password",
    "refresh_token",
  ]);
  assert.equal(doc.end_session_endpoint, `${OIDC}/logout`);
  assert.deepEqual(doc.response_types_supported, ["code"]);
  assert.deepEqual(doc.code_challenge_methods_supported, ["S256"]);
  assert.deepEqual(doc.id_token_signing_alg_values_supported, ["RS256", "ES256"]);
  assert.deepEqual(doc.token_endpoint_auth_methods_supported, [
    "client_secret_basic",
    "client_secret_post",
  ]);
  assert.ok(doc.scopes_supported.includes("openid"));
  assert.equal(response.headers.get("access-control-allow-origin"), "*");
});

Deno.test("identity issuer follows the request's origin unless IDENTITY_PUBLIC_URL is set", async () => {
  const { service } = await testIdentity({
    env: { IDENTITY_PUBLIC_URL: "https://id.example.org/auth" },
  });
  const response = await service.app.request(`${ISSUER}/.well-known/openid-configuration`);
  const doc = await response.json();
  assert.equal(doc.issuer, "https://id.example.org/auth/realms/twitterapi");
  assert.equal(
    doc.jwks_uri,
    "https://id.example.org/auth/realms/twitterapi/protocol/openid-connect/certs",
  );
});

Deno.test("identity JWKS publishes an RS256 and an ES256 public key", async () => {
  const { service } = await testIdentity();
  const response = await service.app.request(`${OIDC}/certs`);
  assert.equal(response.status, 200);
  const { keys } = await response.json();
  assert.deepEqual(keys.map((key: { alg: string }) => key.alg), ["RS256", "ES256"]);
  for (const key of keys) {
    assert.equal(key.use, "sig");
    assert.equal(typeof key.kid, "string");
    assert.equal(key.d, undefined, "no private part");
  }
});

Deno.test("identity client_credentials grant issues a service-account token with the client's audiences", async () => {
  const { service } = await testIdentity();
  const { response, body } = await token(
    service,
    { grant_type: "client_credentials" },
    basic("query-service", devSecret("query-service")),
  );
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("cache-control"), "no-store");
  assert.equal(body.token_type, "Bearer");
  assert.equal(body.expires_in, 300);
  assert.equal(body.id_token, undefined);
  const claims = await verify(service, body.access_token, "wordcount");
  assert.deepEqual(audiences(claims), ["analytics", "config", "registry", "wordcount"]);
  assert.equal(claims.sub, "5b0f3c5e-8a4e-4d51-9a39-6f1f3b1c7a01");
  assert.equal(claims.azp, "query-service");
  assert.equal(claims.preferred_username, "service-account-query-service");
  assert.equal(claims.typ, "Bearer");
  assert.deepEqual(claims.realm_access, { roles: ["service:query"] });
  assert.equal(claims.exp, claims.iat! + 300);
  assert.equal(decode(body.access_token).header.alg, "RS256");
});

Deno.test("identity gives Prometheus's client a token for the registry only", async () => {
  const { service } = await testIdentity();
  const { response, body } = await token(
    service,
    { grant_type: "client_credentials" },
    basic("prometheus", devSecret("prometheus")),
  );
  assert.equal(response.status, 200);
  const claims = await verify(service, body.access_token, "registry");
  assert.deepEqual(audiences(claims), ["registry"]);
  assert.equal(claims.azp, "prometheus");
  assert.equal(claims.preferred_username, "service-account-prometheus");
});

Deno.test("identity client_credentials accepts client_secret_post as well", async () => {
  const { service } = await testIdentity();
  const { response, body } = await token(service, {
    grant_type: "client_credentials",
    client_id: "gateway-service",
    client_secret: devSecret("gateway-service"),
  });
  assert.equal(response.status, 200);
  assert.deepEqual(audiences(decode(body.access_token).claims), [
    "analytics",
    "config",
    "query",
    "registry",
    "stream",
    "wordcount",
  ]);
});

Deno.test("identity refuses a wrong client secret with 401 invalid_client", async () => {
  const { service } = await testIdentity();
  const viaBasic = await token(
    service,
    { grant_type: "client_credentials" },
    basic("query-service", "wrong"),
  );
  assert.equal(viaBasic.response.status, 401);
  assert.equal(viaBasic.body.error, "invalid_client");
  assert.equal(typeof viaBasic.body.error_description, "string");
  assert.equal(viaBasic.response.headers.get("www-authenticate"), 'Basic realm="twitterapi"');
  const viaPost = await token(service, {
    grant_type: "client_credentials",
    client_id: "query-service",
    client_secret: "wrong",
  });
  assert.equal(viaPost.response.status, 401);
  assert.equal(viaPost.body.error, "invalid_client");
  const unknown = await token(service, { grant_type: "client_credentials", client_id: "nobody" });
  assert.equal(unknown.response.status, 401);
  assert.equal(unknown.body.error, "invalid_client");
});

Deno.test("identity refuses client_credentials for the public client", async () => {
  const { service } = await testIdentity();
  const { response, body } = await token(service, {
    grant_type: "client_credentials",
    client_id: CONSOLE,
  });
  assert.equal(response.status, 400);
  assert.equal(body.error, "unauthorized_client");
});

Deno.test("identity password grant issues Keycloak-shaped tokens for each demo user", async () => {
  const { service } = await testIdentity();
  const expected: Record<string, string[]> = {
    app_user: ["app_user_role"],
    app_admin: ["app_admin_role", "app_user_role"],
    app_super_user: ["app_super_user_role"],
  };
  for (const [username, roles] of Object.entries(expected)) {
    const { response, body } = await passwordGrant(service, username);
    assert.equal(response.status, 200, username);
    assert.equal(body.scope, "profile email");
    const claims = await verify(service, body.access_token, "query");
    assert.equal(claims.iss, ISSUER);
    assert.equal(claims.typ, "Bearer");
    assert.equal(claims.azp, CONSOLE);
    assert.equal(claims.preferred_username, username);
    assert.equal(claims.scope, "profile email");
    assert.deepEqual(realmRoles(claims), roles);
    assert.deepEqual(audiences(claims), ["analytics", "config", "query", "stream", "wordcount"]);
    assert.match(claims.sub!, /^[0-9a-f-]{36}$/);
    const again = await passwordGrant(service, username);
    assert.equal(decode(again.body.access_token).claims.sub, claims.sub, "sub is stable");
  }
});

Deno.test("identity password grant refuses an unknown user and a wrong password alike", async () => {
  const { service } = await testIdentity();
  for (const [username, password] of [["nobody", "x"], ["app_user", "wrong"]] as const) {
    const { response, body } = await passwordGrant(service, username, password);
    assert.equal(response.status, 400);
    assert.deepEqual(body, {
      error: "invalid_grant",
      error_description: "Invalid user credentials",
    });
  }
  const serviceAccount = await passwordGrant(service, "service-account-query-service", "x");
  assert.equal(serviceAccount.body.error, "invalid_grant");
});

Deno.test("identity password grant uses IDENTITY_DEV_PASSWORDS over the realm file", async () => {
  const { service } = await testIdentity({
    env: { IDENTITY_DEV_PASSWORDS: "app_user:changed", IDENTITY_CLIENT_SECRETS: "query-service:s" },
  });
  assert.equal((await passwordGrant(service, "app_user")).response.status, 400);
  assert.equal((await passwordGrant(service, "app_user", "changed")).response.status, 200);
  const cc = await token(
    service,
    { grant_type: "client_credentials" },
    basic("query-service", "s"),
  );
  assert.equal(cc.response.status, 200);
});

Deno.test("identity refuses to start with overrides for users or clients it does not have", async () => {
  await assert.rejects(
    testIdentity({ env: { IDENTITY_DEV_PASSWORDS: "nobody:x" } }),
    (error) => error instanceof RealmError && /nobody/.test(error.message),
  );
  await assert.rejects(
    testIdentity({ env: { IDENTITY_CLIENT_SECRETS: "query-service" } }),
    /IDENTITY_CLIENT_SECRETS must list name:value items/,
  );
});

Deno.test("identity password grant with openid returns an ID token for the client", async () => {
  const { service } = await testIdentity();
  const { body } = await token(service, {
    grant_type: "password",
    client_id: CONSOLE,
    username: "app_user",
    password: devPassword("app_user"),
    scope: "openid",
  });
  assert.equal(body.scope, "openid profile email");
  const id = await verify(service, body.id_token, CONSOLE);
  assert.equal(id.typ, "ID");
  assert.equal(id.preferred_username, "app_user");
  assert.equal(typeof id.at_hash, "string");
});

Deno.test("identity token endpoint answers malformed requests with RFC 6749 errors", async () => {
  const { service } = await testIdentity();
  const cases: [Record<string, string>, number, string][] = [
    [{ client_id: CONSOLE }, 400, "invalid_request"],
    [{ client_id: CONSOLE, grant_type: "implicit" }, 400, "unsupported_grant_type"],
    [{ client_id: CONSOLE, grant_type: "password", username: "app_user" }, 400, "invalid_request"],
    [
      {
        client_id: CONSOLE,
        grant_type: "password",
        username: "app_user",
        password: devPassword("app_user"),
        scope: "admin",
      },
      400,
      "invalid_scope",
    ],
    [{ client_id: "query-service", grant_type: "client_credentials" }, 401, "invalid_client"],
  ];
  for (const [params, status, error] of cases) {
    const { response, body } = await token(service, params);
    assert.equal(response.status, status, JSON.stringify(params));
    assert.equal(body.error, error, JSON.stringify(params));
  }
  const json = await service.app.request(`${OIDC}/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ grant_type: "password" }),
  });
  assert.equal(json.status, 400);
  assert.equal((await json.json()).error, "invalid_request");
  const twice = await service.app.request(`${OIDC}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: `grant_type=password&grant_type=client_credentials&client_id=${CONSOLE}`,
  });
  assert.equal((await twice.json()).error, "invalid_request");
});

Deno.test("identity refuses the password grant to a client without direct access grants", async () => {
  const { service } = await testIdentity();
  const { response, body } = await token(service, {
    grant_type: "password",
    username: "app_user",
    password: devPassword("app_user"),
  }, basic("query-service", devSecret("query-service")));
  assert.equal(response.status, 400);
  assert.equal(body.error, "unauthorized_client");
});

Deno.test("identity code flow with PKCE: login form, code, token for the user", async () => {
  const { service } = await testIdentity();
  const pair = await pkce();
  const code = await codeByForm(service, pair, "app_super_user");
  const { response, body } = await redeem(service, code, pair.verifier);
  assert.equal(response.status, 200);
  const claims = await verify(service, body.access_token, "query");
  assert.equal(claims.preferred_username, "app_super_user");
  assert.deepEqual(realmRoles(claims), ["app_super_user_role"]);
  assert.equal(claims.scope, "openid profile email");
  assert.equal((await verify(service, body.id_token, CONSOLE)).sub, claims.sub);
});

Deno.test("identity code flow refuses a wrong verifier, and the code is gone afterwards", async () => {
  const { service } = await testIdentity();
  const pair = await pkce();
  const code = await codeByForm(service, pair);
  const wrong = await redeem(service, code, (await pkce()).verifier);
  assert.equal(wrong.response.status, 400);
  assert.equal(wrong.body.error, "invalid_grant");
  assert.match(wrong.body.error_description, /PKCE/);
  const retry = await redeem(service, code, pair.verifier);
  assert.equal(retry.body.error, "invalid_grant");
});

Deno.test("identity code flow refuses a reused code", async () => {
  const { service } = await testIdentity();
  const pair = await pkce();
  const code = await codeByForm(service, pair);
  assert.equal((await redeem(service, code, pair.verifier)).response.status, 200);
  const reused = await redeem(service, code, pair.verifier);
  assert.equal(reused.response.status, 400);
  assert.deepEqual(reused.body, { error: "invalid_grant", error_description: "Code not valid" });
});

Deno.test("identity code flow refuses another redirect_uri, another client, an expired code", async () => {
  const { service, clock } = await testIdentity();
  const pair = await pkce();
  const wrongRedirect = await redeem(service, await codeByForm(service, pair), pair.verifier, {
    redirect_uri: "http://localhost:8400/callback",
  });
  assert.equal(wrongRedirect.response.status, 400);
  assert.deepEqual(wrongRedirect.body, {
    error: "invalid_grant",
    error_description: "Incorrect redirect_uri",
  });

  const realm = realmCopy();
  realm.clients.push({ ...realm.clients[0]!, clientId: "other-console" });
  const two = await testIdentity({ realm });
  const otherClient = await redeem(
    two.service,
    await codeByForm(two.service, pair),
    pair.verifier,
    {
      client_id: "other-console",
    },
  );
  assert.equal(otherClient.body.error, "invalid_grant");

  const code = await codeByForm(service, pair);
  clock.now += 60_000;
  const expired = await redeem(service, code, pair.verifier);
  assert.deepEqual(expired.body, { error: "invalid_grant", error_description: "Code not valid" });
});

Deno.test("identity login form refuses a wrong password without issuing a code", async () => {
  const { service } = await testIdentity();
  const pair = await pkce();
  const response = await service.app.request(
    `${OIDC}/auth`,
    form({
      response_type: "code",
      client_id: CONSOLE,
      redirect_uri: REDIRECT_URI,
      code_challenge: pair.challenge,
      code_challenge_method: "S256",
      username: "app_user",
      password: "wrong",
    }),
  );
  assert.equal(response.status, 401);
  assert.equal(response.headers.get("location"), null);
  assert.match(await response.text(), /Invalid username or password/);
});

Deno.test("identity auth endpoint shows errors it cannot send back to the client", async () => {
  const { service } = await testIdentity();
  const pair = await pkce();
  for (
    const extra of [
      { client_id: "nobody" },
      { redirect_uri: "http://evil.example/callback" },
    ]
  ) {
    const response = await service.app.request(authorizeUrl(pair, extra));
    assert.equal(response.status, 400);
    assert.equal(response.headers.get("location"), null);
    assert.match(response.headers.get("content-type")!, /^text\/html/);
    assert.match(await response.text(), /invalid_request/);
  }
});

Deno.test("identity auth endpoint redirects other request errors to the client", async () => {
  const { service } = await testIdentity();
  const pair = await pkce();
  const cases: [Record<string, string>, string][] = [
    [{ code_challenge_method: "plain" }, "invalid_request"],
    [{ code_challenge: "" }, "invalid_request"],
    [{ response_type: "token" }, "unsupported_response_type"],
    [{ scope: "openid admin" }, "invalid_scope"],
  ];
  for (const [extra, error] of cases) {
    const response = await service.app.request(authorizeUrl(pair, extra));
    assert.equal(response.status, 302, JSON.stringify(extra));
    const location = new URL(response.headers.get("location")!);
    assert.equal(location.searchParams.get("error"), error, JSON.stringify(extra));
    assert.equal(location.searchParams.get("state"), "state-1");
    assert.equal(location.searchParams.get("code"), null);
  }
});

Deno.test("identity auth endpoint approves a login_hint user only when enabled", async () => {
  const pair = await pkce();
  const off = await testIdentity();
  const form = await off.service.app.request(authorizeUrl(pair, { login_hint: "app_admin" }));
  assert.equal(form.status, 200);
  assert.match(await form.text(), /value="app_admin"/);

  const on = await testIdentity({ env: { IDENTITY_AUTO_APPROVE_LOGIN_HINT: "true" } });
  const response = await on.service.app.request(authorizeUrl(pair, { login_hint: "app_admin" }));
  assert.equal(response.status, 302);
  const code = new URL(response.headers.get("location")!).searchParams.get("code")!;
  const { body } = await redeem(on.service, code, pair.verifier);
  assert.equal(decode(body.access_token).claims.preferred_username, "app_admin");
  const unknown = await on.service.app.request(authorizeUrl(pair, { login_hint: "nobody" }));
  assert.equal(unknown.status, 200, "an unknown hint gets the form");
});

Deno.test("identity userinfo answers for a valid bearer token and refuses others", async () => {
  const { service, clock } = await testIdentity();
  const { body } = await passwordGrant(service, "app_admin");
  const response = await service.app.request(`${OIDC}/userinfo`, {
    headers: { authorization: `Bearer ${body.access_token}` },
  });
  assert.equal(response.status, 200);
  const info = await response.json();
  assert.equal(info.sub, "67330701-8370-43c6-8f17-576435623475");
  assert.equal(info.preferred_username, "app_admin");
  assert.equal(info.email, "app_admin@example.com");

  const missing = await service.app.request(`${OIDC}/userinfo`);
  assert.equal(missing.status, 401);
  assert.equal(missing.headers.get("www-authenticate"), 'Bearer realm="twitterapi"');
  const tampered = await service.app.request(`${OIDC}/userinfo`, {
    headers: { authorization: `Bearer ${body.access_token.slice(0, -4)}AAAA` },
  });
  assert.equal(tampered.status, 401);
  assert.equal((await tampered.json()).error, "invalid_token");
  const otherIssuer = await service.app.request(
    "http://localhost:8090/realms/twitterapi/protocol/openid-connect/userinfo",
    { headers: { authorization: `Bearer ${body.access_token}` } },
  );
  assert.equal(otherIssuer.status, 401);
  clock.now += 301_000;
  const expired = await service.app.request(`${OIDC}/userinfo`, {
    headers: { authorization: `Bearer ${body.access_token}` },
  });
  assert.equal(expired.status, 401);
  assert.match(expired.headers.get("www-authenticate")!, /error="invalid_token"/);
});

Deno.test("identity signs with ES256 for a client whose realm entry asks for it", async () => {
  const realm = realmCopy();
  const client = realm.clients.find((candidate) => candidate.clientId === "query-service")!;
  client.attributes["access.token.signed.response.alg"] = "ES256";
  const { service } = await testIdentity({ realm });
  const { body } = await token(
    service,
    { grant_type: "client_credentials" },
    basic("query-service", devSecret("query-service")),
  );
  const { header } = decode(body.access_token);
  assert.equal(header.alg, "ES256");
  assert.equal(header.kid, service.keys.activeKid("ES256"));
  assert.equal((await verify(service, body.access_token, "analytics")).azp, "query-service");
});

Deno.test("identity answers unknown realms and paths with problem+json 404", async () => {
  const { service } = await testIdentity();
  for (const path of ["/realms/master/protocol/openid-connect/certs", "/realms/twitterapi/nope"]) {
    const response = await service.app.request(`${ORIGIN}${path}`);
    assert.equal(response.status, 404);
    assert.equal(response.headers.get("content-type"), "application/problem+json");
  }
});

Deno.test("identity answers a method an endpoint does not serve with 405 and Allow", async () => {
  const { service } = await testIdentity();
  const response = await service.app.request(`${OIDC}/token`, { method: "GET" });
  assert.equal(response.status, 405);
  assert.equal(response.headers.get("content-type"), "application/problem+json");
  assert.match(response.headers.get("allow") ?? "", /\bPOST\b/);
  assert.doesNotMatch(response.headers.get("allow") ?? "", /\bGET\b/);
});

Deno.test("identity lets the console's origin call the token endpoint from a browser", async () => {
  const { service } = await testIdentity();
  const preflight = await service.app.request(`${OIDC}/token`, {
    method: "OPTIONS",
    headers: { origin: "http://127.0.0.1:8400", "access-control-request-method": "POST" },
  });
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get("access-control-allow-origin"), "http://127.0.0.1:8400");
  const { response } = await token(
    service,
    { grant_type: "password", client_id: CONSOLE, username: "app_user", password: "wrong" },
    { origin: "http://evil.example" },
  );
  assert.equal(response.headers.get("access-control-allow-origin"), null);
  // The development redirect URI http://127.0.0.1:* allows the origins of every port
  // (the gateway's /docs on a port a test picked), and no other host.
  for (
    const [origin, allowed] of [
      ["http://127.0.0.1:41234", "http://127.0.0.1:41234"],
      ["http://127.0.0.1.evil.example:41234", null],
    ]
  ) {
    const answer = await service.app.request(`${OIDC}/token`, {
      method: "OPTIONS",
      headers: { origin: origin!, "access-control-request-method": "POST" },
    });
    await answer.body?.cancel();
    assert.equal(answer.headers.get("access-control-allow-origin"), allowed);
  }
});

Deno.test("identity refresh_token grant renews a code-flow session and rotates its refresh token", async () => {
  const { service } = await testIdentity();
  const pair = await pkce();
  const code = await codeByForm(service, pair, "app_admin");
  const first = (await redeem(service, code, pair.verifier)).body;
  assert.equal(typeof first.refresh_token, "string");
  assert.ok(first.refresh_expires_in > 0);
  const firstClaims = await verify(service, first.access_token, "query");
  const refreshed = await token(service, {
    grant_type: "refresh_token",
    client_id: CONSOLE,
    refresh_token: first.refresh_token,
  });
  assert.equal(refreshed.response.status, 200);
  const claims = await verify(service, refreshed.body.access_token, "query");
  assert.equal(claims.sub, firstClaims.sub);
  assert.equal(claims.sid, firstClaims.sid);
  assert.deepEqual(realmRoles(claims), realmRoles(firstClaims));
  assert.equal((await verify(service, refreshed.body.id_token, CONSOLE)).sid, firstClaims.sid);
  assert.notEqual(refreshed.body.refresh_token, first.refresh_token);
  // The replaced refresh token is refused; so is a refresh token for another client.
  const again = await token(service, {
    grant_type: "refresh_token",
    client_id: CONSOLE,
    refresh_token: first.refresh_token,
  });
  assert.equal(again.response.status, 400);
  assert.equal(again.body.error, "invalid_grant");
  const other = await token(service, {
    grant_type: "refresh_token",
    refresh_token: refreshed.body.refresh_token,
  }, basic("prometheus", devSecret("prometheus")));
  assert.equal(other.body.error, "invalid_grant");
});

Deno.test("identity refresh_token grant refuses a token after the session idles out", async () => {
  const { service, clock } = await testIdentity();
  const { body } = await passwordGrant(service, "app_user");
  clock.now += 1801 * 1000;
  const refreshed = await token(service, {
    grant_type: "refresh_token",
    client_id: CONSOLE,
    refresh_token: body.refresh_token,
  });
  assert.equal(refreshed.response.status, 400);
  assert.equal(refreshed.body.error, "invalid_grant");
});

Deno.test("identity end-session endpoint ends the session and redirects to a registered URI", async () => {
  const { service } = await testIdentity();
  const pair = await pkce();
  const code = await codeByForm(service, pair, "app_user");
  const tokens = (await redeem(service, code, pair.verifier)).body;
  const params = new URLSearchParams({
    id_token_hint: tokens.id_token,
    post_logout_redirect_uri: REDIRECT_URI,
    state: "bye",
  });
  const response = await service.app.request(`${OIDC}/logout?${params}`);
  assert.equal(response.status, 302);
  const location = new URL(response.headers.get("location")!);
  assert.equal(`${location.origin}${location.pathname}`, REDIRECT_URI);
  assert.equal(location.searchParams.get("state"), "bye");
  const refreshed = await token(service, {
    grant_type: "refresh_token",
    client_id: CONSOLE,
    refresh_token: tokens.refresh_token,
  });
  assert.equal(refreshed.body.error, "invalid_grant");
  // Without a redirect the issuer says so itself.
  const page = await service.app.request(`${OIDC}/logout`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /signed out/);
});

Deno.test("identity end-session endpoint refuses an unregistered redirect and a forged hint", async () => {
  const { service } = await testIdentity();
  const { body } = await passwordGrant(service, "app_user");
  const { body: withId } = await token(service, {
    grant_type: "password",
    client_id: CONSOLE,
    username: "app_user",
    password: devPassword("app_user"),
    scope: "openid",
  });
  const elsewhere = new URLSearchParams({
    id_token_hint: withId.id_token,
    post_logout_redirect_uri: "https://attacker.example/",
  });
  const refused = await service.app.request(`${OIDC}/logout?${elsewhere}`);
  assert.equal(refused.status, 400);
  await refused.body?.cancel();
  const forged = new URLSearchParams({ id_token_hint: `${withId.id_token.slice(0, -4)}AAAA` });
  const bad = await service.app.request(`${OIDC}/logout?${forged}`);
  assert.equal(bad.status, 400);
  await bad.body?.cancel();
  // An access token is no ID token.
  const access = new URLSearchParams({ id_token_hint: body.access_token });
  const notId = await service.app.request(`${OIDC}/logout?${access}`);
  assert.equal(notId.status, 400);
  await notId.body?.cancel();
});
