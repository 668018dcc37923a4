/**
 * The identity service over HTTP, verified the way resource servers verify
 * tokens: jose's `createRemoteJWKSet` on the discovered `jwks_uri`, and
 * `jwtVerify` with issuer and audience.
 */
import assert from "node:assert/strict";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { serveApp } from "../../shared/http/serve.ts";
import { waitFor } from "../../shared/testing/wait.ts";
import {
  basic,
  CONSOLE,
  decode,
  devPassword,
  devSecret,
  form,
  LIFESPAN_MS,
  pkce,
  REDIRECT_URI,
  type TestIdentity,
  testIdentity,
} from "./_testing.ts";

interface Served extends TestIdentity {
  readonly issuer: string;
  /** A fresh key set each call, so no test sees another's cached keys. */
  jwks(): ReturnType<typeof createRemoteJWKSet>;
  token(params: Record<string, string>, headers?: Record<string, string>): Promise<string>;
}

async function withServedIdentity(
  test: (served: Served) => Promise<void>,
  options: Parameters<typeof testIdentity>[0] = {},
): Promise<void> {
  const identity = await testIdentity(options);
  const server = serveApp(identity.service.app, { hostname: "127.0.0.1", port: 0 });
  const issuer = `${server.url}/realms/twitterapi`;
  try {
    const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    assert.equal(discovery.issuer, issuer);
    await test({
      ...identity,
      issuer,
      jwks: () => createRemoteJWKSet(new URL(discovery.jwks_uri)),
      async token(params, headers = {}) {
        const response = await fetch(discovery.token_endpoint, form(params, headers));
        const body = await response.json();
        assert.equal(response.status, 200, JSON.stringify(body));
        return body.access_token;
      },
    });
  } finally {
    await server.shutdown();
  }
}

function userToken(served: Served, username = "app_user"): Promise<string> {
  return served.token({
    grant_type: "password",
    client_id: CONSOLE,
    username,
    password: devPassword(username),
  });
}

Deno.test("identity tokens verify with jose's remote JWKS, issuer and audience over HTTP", async () => {
  await withServedIdentity(async (served) => {
    const user = await userToken(served);
    for (const audience of ["query", "stream", "wordcount", "analytics"]) {
      const { payload } = await jwtVerify(user, served.jwks(), { issuer: served.issuer, audience });
      assert.equal(payload.preferred_username, "app_user");
    }
    await assert.rejects(
      jwtVerify(user, served.jwks(), { issuer: served.issuer, audience: "registry" }),
      { code: "ERR_JWT_CLAIM_VALIDATION_FAILED", claim: "aud" },
    );
    await assert.rejects(
      jwtVerify(user, served.jwks(), { issuer: "http://127.0.0.1:9091/realms/twitterapi" }),
      { code: "ERR_JWT_CLAIM_VALIDATION_FAILED", claim: "iss" },
    );
    const service = await served.token(
      { grant_type: "client_credentials" },
      basic("query-service", devSecret("query-service")),
    );
    const { payload } = await jwtVerify(service, served.jwks(), {
      issuer: served.issuer,
      audience: "analytics",
    });
    assert.equal(payload.azp, "query-service");
  });
});

Deno.test("identity code flow with PKCE works over HTTP end to end", async () => {
  await withServedIdentity(async (served) => {
    const pair = await pkce();
    const authorize = new URL(`${served.issuer}/protocol/openid-connect/auth`);
    authorize.search = new URLSearchParams({
      response_type: "code",
      client_id: CONSOLE,
      redirect_uri: REDIRECT_URI,
      scope: "openid",
      state: "s",
      nonce: "n-1",
      code_challenge: pair.challenge,
      code_challenge_method: "S256",
      login_hint: "app_admin",
    }).toString();
    const response = await fetch(authorize, { redirect: "manual" });
    assert.equal(response.status, 302);
    await response.body?.cancel();
    const location = new URL(response.headers.get("location")!);
    assert.equal(location.searchParams.get("iss"), served.issuer);
    const code = location.searchParams.get("code")!;
    const tokenResponse = await fetch(
      `${served.issuer}/protocol/openid-connect/token`,
      form({
        grant_type: "authorization_code",
        client_id: CONSOLE,
        code,
        redirect_uri: REDIRECT_URI,
        code_verifier: pair.verifier,
      }),
    );
    const body = await tokenResponse.json();
    const id = await jwtVerify(body.id_token, served.jwks(), {
      issuer: served.issuer,
      audience: CONSOLE,
    });
    assert.equal(id.payload.nonce, "n-1");
    const access = await jwtVerify(body.access_token, served.jwks(), {
      issuer: served.issuer,
      audience: "query",
    });
    assert.equal(access.payload.preferred_username, "app_admin");
    const userinfo = await fetch(`${served.issuer}/protocol/openid-connect/userinfo`, {
      headers: { authorization: `Bearer ${body.access_token}` },
    });
    assert.equal((await userinfo.json()).preferred_username, "app_admin");
  }, { env: { IDENTITY_AUTO_APPROVE_LOGIN_HINT: "true" } });
});

Deno.test("identity key rotation: old tokens verify until expiry, then their key is dropped", async () => {
  await withServedIdentity(async (served) => {
    const { clock, service } = served;
    const before = await userToken(served);
    const oldKid = decode(before).header.kid;
    const issuedAt = clock.now;

    clock.now += 1000;
    await service.rotateKeys();
    const after = await userToken(served);
    assert.notEqual(decode(after).header.kid, oldKid, "new tokens use the new key");

    // Just before the old token expires, its key is still published.
    clock.now = issuedAt + LIFESPAN_MS - 1000;
    const options = { issuer: served.issuer, currentDate: new Date(clock.now) };
    await jwtVerify(before, served.jwks(), options);
    await jwtVerify(after, served.jwks(), options);

    // Once the retention after rotation has passed, the retired key is gone:
    // the old token fails on its key, even checked at a time it was valid.
    clock.now = issuedAt + 1000 + LIFESPAN_MS;
    const kids = (await (await fetch(`${served.issuer}/protocol/openid-connect/certs`)).json())
      .keys.map((key: { kid: string }) => key.kid);
    assert.ok(!kids.includes(oldKid));
    await assert.rejects(
      jwtVerify(before, served.jwks(), { issuer: served.issuer, currentDate: new Date(issuedAt) }),
      { code: "ERR_JWKS_NO_MATCHING_KEY" },
    );
    await jwtVerify(after, served.jwks(), {
      issuer: served.issuer,
      currentDate: new Date(clock.now - 2000),
    });
  });
});

Deno.test("identity rotates its keys on the IDENTITY_KEY_ROTATION_MS timer", async () => {
  const { service } = await testIdentity({ env: { IDENTITY_KEY_ROTATION_MS: "50" } });
  const first = service.keys.activeKid("RS256");
  await service.start();
  try {
    await waitFor("a key rotation", () => service.keys.activeKid("RS256") !== first);
  } finally {
    await service.stop();
  }
});
