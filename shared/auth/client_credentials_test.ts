import assert from "node:assert/strict";
import { decodeJwt } from "jose";
import { startTestOidcIssuer, type TestOidcIssuer } from "../testing/oidc_issuer.ts";
import { devSecret } from "../testing/realm.ts";
import { ClientCredentialsTokenSource, TokenSourceError } from "./client_credentials.ts";

/** A test issuer, and a fetch to it in process that counts token requests. */
async function withIssuer(
  test: (fixture: {
    issuer: string;
    clock: { now: number };
    calls: { discovery: number; token: number };
    fetch: typeof fetch;
  }) => Promise<void>,
): Promise<void> {
  await using issuer: TestOidcIssuer = await startTestOidcIssuer();
  const calls = { discovery: 0, token: 0 };
  const counting: typeof fetch = (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    if (url.endsWith("/.well-known/openid-configuration")) calls.discovery++;
    if (url.endsWith("/token")) calls.token++;
    return issuer.fetch(input, init);
  };
  await test({ issuer: issuer.issuer, clock: issuer.clock, calls, fetch: counting });
}

Deno.test("client credentials: a token of the service account, with the client's audiences", () =>
  withIssuer(async ({ issuer, fetch, clock }) => {
    const source = new ClientCredentialsTokenSource({
      issuer,
      clientId: "query-service",
      clientSecret: devSecret("query-service"),
      fetch,
      now: () => clock.now,
    });
    const claims = decodeJwt(await source.token());
    assert.equal(claims.azp, "query-service");
    assert.deepEqual([claims.aud].flat().sort(), ["analytics", "config", "registry", "wordcount"]);
  }));

Deno.test("client credentials: cached until shortly before expiry, one request for concurrent callers", () =>
  withIssuer(async ({ issuer, fetch, clock, calls }) => {
    const source = new ClientCredentialsTokenSource({
      issuer,
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
  }));

Deno.test("client credentials: a refused secret or an unreachable issuer is a TokenSourceError", () =>
  withIssuer(async ({ issuer, fetch }) => {
    const refused = new ClientCredentialsTokenSource({
      issuer,
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
      issuer,
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
  }));
