import assert from "node:assert/strict";
import { decodeJwt } from "jose";
import { devSecret, testIdentity } from "../../services/identity/_testing.ts";
import { ClientCredentialsTokenSource, TokenSourceError } from "./client_credentials.ts";

const ISSUER = "http://127.0.0.1:8090/realms/twitterapi";

/** The identity service in process, and a fetch to it that counts token requests. */
async function identity() {
  const { service, clock } = await testIdentity();
  const calls = { discovery: 0, token: 0 };
  const identityFetch: typeof fetch = (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    if (url.endsWith("/.well-known/openid-configuration")) calls.discovery++;
    if (url.endsWith("/token")) calls.token++;
    return Promise.resolve(service.app.request(url, init));
  };
  return { clock, calls, fetch: identityFetch };
}

Deno.test("client credentials: a token of the service account, with the client's audiences", async () => {
  const { fetch, clock } = await identity();
  const source = new ClientCredentialsTokenSource({
    issuer: ISSUER,
    clientId: "query-service",
    clientSecret: devSecret("query-service"),
    fetch,
    now: () => clock.now,
  });
  const claims = decodeJwt(await source.token());
  assert.equal(claims.azp, "query-service");
  assert.deepEqual([claims.aud].flat().sort(), ["analytics", "registry", "wordcount"]);
});

Deno.test("client credentials: cached until shortly before expiry, one request for concurrent callers", async () => {
  const { fetch, clock, calls } = await identity();
  const source = new ClientCredentialsTokenSource({
    issuer: ISSUER,
    clientId: "query-service",
    clientSecret: devSecret("query-service"),
    refreshBeforeMs: 30_000,
    fetch,
    now: () => clock.now,
  });
  const tokens = await Promise.all(Array.from({ length: 5 }, () => source.token()));
  assert.equal(new Set(tokens).size, 1);
  assert.deepEqual(calls, { discovery: 1, token: 1 });
  // The realm's tokens live 300 s: still cached 269 s later, renewed at 270 s.
  clock.now += 269_000;
  assert.equal(await source.token(), tokens[0]);
  assert.equal(calls.token, 1);
  clock.now += 1_000;
  const renewed = await source.token();
  assert.notEqual(renewed, tokens[0]);
  assert.deepEqual(calls, { discovery: 1, token: 2 });
  source.invalidate();
  await source.token();
  assert.deepEqual(calls, { discovery: 1, token: 3 });
});

Deno.test("client credentials: a refused secret or an unreachable issuer is a TokenSourceError", async () => {
  const { fetch } = await identity();
  const refused = new ClientCredentialsTokenSource({
    issuer: ISSUER,
    clientId: "query-service",
    clientSecret: "wrong",
    fetch,
  });
  await assert.rejects(
    refused.token(),
    (error: unknown) =>
      error instanceof TokenSourceError && /token answered 401/.test(error.message),
  );

  const down = new ClientCredentialsTokenSource({
    issuer: "http://127.0.0.1:1/realms/twitterapi",
    clientId: "query-service",
    clientSecret: "secret",
  });
  await assert.rejects(down.token(), (error: unknown) =>
    error instanceof TokenSourceError &&
    error.message.startsWith(
      "Cannot get an access token: http://127.0.0.1:1/realms/twitterapi/.well-known/openid-configuration did not answer",
    ));

  // A failed request is not cached: the next call tries again.
  let attempts = 0;
  const flaky = new ClientCredentialsTokenSource({
    issuer: ISSUER,
    clientId: "query-service",
    clientSecret: devSecret("query-service"),
    fetch: (input, init) => {
      attempts++;
      return attempts === 1
        ? Promise.resolve(new Response("busy", { status: 503 }))
        : fetch(input, init);
    },
  });
  await assert.rejects(flaky.token(), /answered 503: busy/);
  assert.equal(typeof await flaky.token(), "string");
});
