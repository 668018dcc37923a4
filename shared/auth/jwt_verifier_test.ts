/**
 * The verifier against a test issuer served on loopback (real HTTP, real
 * discovery and key-set fetches, real signatures), and once against the real
 * Keycloak. Forged tokens are signed with jose and keys of our own; only the
 * issuer's keys are trusted.
 */
import assert from "node:assert/strict";
import {
  base64url,
  decodeJwt,
  decodeProtectedHeader,
  exportSPKI,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTPayload,
  SignJWT,
} from "jose";
import { delay } from "../testing/wait.ts";
import { startTestOidcIssuer, type TestOidcIssuer } from "../testing/oidc_issuer.ts";
import { CONSOLE, devPassword, form, passwordGrantToken } from "../testing/realm.ts";
import {
  type AccessToken,
  createJwtVerifier,
  type JwtVerifierOptions,
  TokenError,
} from "./jwt_verifier.ts";

const KEYCLOAK_ISSUER = "http://127.0.0.1:9091/realms/twitterapi";

interface Issuer {
  readonly issuer: string;
  readonly jwksUri: string;
  readonly tokenEndpoint: string;
  /** The issuer's own keys and clock. */
  readonly service: TestOidcIssuer;
  readonly clock: { now: number };
  /** URLs fetched through `fetch`, in order. */
  readonly fetched: string[];
  /** Counts its requests into `fetched`; give it to the verifier. */
  readonly fetch: typeof fetch;
  /** How many times the key set was fetched. */
  jwksFetches(): number;
  verifier(options?: Partial<JwtVerifierOptions>): ReturnType<typeof createJwtVerifier>;
  /** A password-grant access token of the console client. */
  userToken(username?: string): Promise<string>;
  /** Claims of a well-formed access token of this issuer, with overrides. */
  claims(overrides?: JWTPayload): JWTPayload;
}

async function withIssuer(test: (issuer: Issuer) => Promise<void>): Promise<void> {
  const service = await startTestOidcIssuer();
  const { issuer, clock } = service;
  try {
    const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    const fetched: string[] = [];
    const countingFetch: typeof fetch = (input, init) => {
      fetched.push(input instanceof Request ? input.url : String(input));
      return fetch(input, init);
    };
    await test({
      service,
      clock,
      issuer,
      jwksUri: discovery.jwks_uri,
      tokenEndpoint: discovery.token_endpoint,
      fetched,
      fetch: countingFetch,
      jwksFetches: () => fetched.filter((url) => url === discovery.jwks_uri).length,
      verifier: (options = {}) =>
        createJwtVerifier({ issuer, audience: "query", fetch: countingFetch, ...options }),
      async userToken(username = "app_user") {
        return await passwordGrantToken(discovery.token_endpoint, username);
      },
      claims(overrides = {}) {
        const now = Math.floor(clock.now / 1000);
        return {
          iss: issuer,
          sub: "f1e2d3c4-0000-4000-8000-000000000001",
          aud: ["query", "stream"],
          azp: CONSOLE,
          exp: now + 300,
          iat: now,
          scope: "openid profile",
          realm_access: { roles: ["app_user_role"] },
          preferred_username: "app_user",
          ...overrides,
        };
      },
    });
  } finally {
    await service.shutdown();
  }
}

/** Asserts that verification fails with `code`, and returns the description. */
async function rejection(
  promise: Promise<AccessToken>,
  code: TokenError["code"] = "invalid-token",
): Promise<string> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof TokenError, `expected a TokenError, got ${error}`);
    assert.equal(error.code, code, error.description);
    assert.equal(error.message, error.description);
    return error.description;
  }
  assert.fail("expected the token to be rejected");
}

/** A port nothing listens on. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** Replaces the payload of a signed token, keeping its header and signature. */
function withPayload(token: string, change: (claims: JWTPayload) => JWTPayload): string {
  const [header, , signature] = token.split(".");
  const payload = base64url.encode(JSON.stringify(change(decodeJwt(token))));
  return `${header}.${payload}.${signature}`;
}

Deno.test("verify() accepts a token of the issuer and maps its claims", async () => {
  await withIssuer(async (issuer) => {
    const raw = await issuer.userToken();
    const token = await issuer.verifier().verify(raw);
    const claims = decodeJwt(raw);
    assert.equal(token.subject, claims.sub);
    assert.equal(token.username, "app_user");
    assert.deepEqual(token.roles, ["app_user_role"]);
    assert.deepEqual([...token.audience].sort(), [
      "analytics",
      "config",
      "query",
      "stream",
      "wordcount",
    ]);
    assert.equal(token.clientId, CONSOLE);
    assert.ok(token.scopes.includes("profile"), token.scopes.join(" "));
    assert.equal(token.expiresAt.getTime(), (claims.exp ?? 0) * 1000);
    assert.deepEqual(token.claims, claims);
    assert.equal(issuer.jwksFetches(), 1);
    await issuer.verifier({ audience: ["registry", "wordcount"] }).verify(raw);
  });
});

Deno.test("verify() accepts ES256 tokens by default and refuses them when not allowed", async () => {
  await withIssuer(async (issuer) => {
    const token = await issuer.service.sign(issuer.claims(), "ES256");
    assert.equal((await issuer.verifier().verify(token)).username, "app_user");
    const description = await rejection(issuer.verifier({ algorithms: ["RS256"] }).verify(token));
    assert.equal(description, 'The token\'s algorithm "ES256" is not one of RS256');
  });
});

Deno.test("createJwtVerifier() refuses none and HMAC algorithms", () => {
  for (const alg of ["none", "HS256", "HS512"]) {
    assert.throws(
      () =>
        createJwtVerifier({ issuer: "http://127.0.0.1:1", audience: "query", algorithms: [alg] }),
      RangeError,
    );
  }
  assert.throws(
    () => createJwtVerifier({ issuer: "http://127.0.0.1:1", audience: "query", algorithms: [] }),
    RangeError,
  );
});

Deno.test("verify() rejects every attack with its own description", async () => {
  await withIssuer(async (issuer) => {
    const verifier = issuer.verifier();
    const keys = issuer.service;
    const genuine = await issuer.userToken();
    const rsaKid = decodeProtectedHeader(genuine).kid;
    const descriptions = new Map<string, string>();

    // alg none: an unsigned token naming a trusted kid.
    const header = base64url.encode(JSON.stringify({ alg: "none", typ: "JWT", kid: rsaKid }));
    const body = base64url.encode(JSON.stringify(issuer.claims()));
    descriptions.set("none", await rejection(verifier.verify(`${header}.${body}.`)));
    assert.equal(descriptions.get("none"), "The token is unsigned (alg none)");

    // Key confusion: HS256 with the issuer's public RSA key as the HMAC secret.
    const jwks: { keys: JWK[] } = await (await fetch(issuer.jwksUri)).json();
    const rsa = jwks.keys.find((key) => key.kid === rsaKid);
    assert.ok(rsa !== undefined);
    const pem = await exportSPKI(await importJWK(rsa, "RS256") as CryptoKey);
    for (const secret of [pem, JSON.stringify(rsa), rsa.n ?? ""]) {
      const forged = await new SignJWT(issuer.claims())
        .setProtectedHeader({ alg: "HS256", typ: "JWT", kid: rsaKid ?? "" })
        .sign(new TextEncoder().encode(secret));
      descriptions.set("HS256", await rejection(verifier.verify(forged)));
      assert.equal(
        descriptions.get("HS256"),
        'The token\'s algorithm "HS256" is not one of RS256, ES256',
      );
    }

    // Expired beyond the clock tolerance.
    const past = Math.floor(Date.now() / 1000) - 3600;
    const expired = await keys.sign(issuer.claims({ iat: past, exp: past + 300 }), "RS256");
    descriptions.set("expired", await rejection(verifier.verify(expired)));
    assert.match(descriptions.get("expired") ?? "", /^The token expired at \d{4}-/);

    // Not valid yet.
    const soon = Math.floor(Date.now() / 1000) + 600;
    const early = await keys.sign(issuer.claims({ nbf: soon, exp: soon + 300 }), "RS256");
    descriptions.set("nbf", await rejection(verifier.verify(early)));
    assert.match(descriptions.get("nbf") ?? "", /^The token is not valid before \d{4}-/);

    // Issued in the far future.
    const future = Math.floor(Date.now() / 1000) + 86_400;
    const fromFuture = await keys.sign(issuer.claims({ iat: future, exp: future + 300 }), "RS256");
    descriptions.set("iat", await rejection(verifier.verify(fromFuture)));
    assert.match(descriptions.get("iat") ?? "", /^The token was issued in the future, at \d{4}-/);

    // Another issuer's name, signed with the trusted keys.
    const foreign = await keys.sign(issuer.claims({ iss: KEYCLOAK_ISSUER }), "RS256");
    descriptions.set("iss", await rejection(verifier.verify(foreign)));
    assert.equal(
      descriptions.get("iss"),
      `The token's issuer "${KEYCLOAK_ISSUER}" is not ${issuer.issuer}`,
    );

    // Another audience.
    const elsewhere = await keys.sign(issuer.claims({ aud: "registry" }), "RS256");
    descriptions.set("aud", await rejection(verifier.verify(elsewhere)));
    assert.equal(descriptions.get("aud"), `The token's audience "registry" does not include query`);

    // Tampered payload: a role added, the signature kept.
    const tampered = withPayload(genuine, (claims) => ({
      ...claims,
      realm_access: { roles: ["app_user_role", "app_super_user_role"] },
    }));
    descriptions.set("tampered", await rejection(verifier.verify(tampered)));
    assert.equal(descriptions.get("tampered"), "The token's signature does not match its content");

    // Signed by a key of our own under a made-up kid.
    const own = await generateKeyPair("RS256");
    const unknown = await new SignJWT(issuer.claims())
      .setProtectedHeader({ alg: "RS256", typ: "JWT", kid: "attacker-key" })
      .sign(own.privateKey);
    descriptions.set("kid", await rejection(verifier.verify(unknown)));
    assert.equal(
      descriptions.get("kid"),
      'No key of the issuer matches the token\'s key id "attacker-key"',
    );

    // No expiry, no subject, and garbage.
    const eternal = issuer.claims();
    delete eternal.exp;
    descriptions.set("exp", await rejection(verifier.verify(await keys.sign(eternal, "RS256"))));
    assert.equal(descriptions.get("exp"), "The token has no expiry (exp)");
    const anonymous = issuer.claims();
    delete anonymous.sub;
    descriptions.set("sub", await rejection(verifier.verify(await keys.sign(anonymous, "RS256"))));
    assert.equal(descriptions.get("sub"), "The token has no subject (sub)");
    descriptions.set("garbage", await rejection(verifier.verify("not-a-jwt")));
    assert.match(descriptions.get("garbage") ?? "", /^The token is malformed: /);

    assert.equal(
      new Set(descriptions.values()).size,
      descriptions.size,
      [...descriptions.values()].join("\n"),
    );
    // The genuine token still passes the same verifier.
    await verifier.verify(genuine);
  });
});

Deno.test("verify() allows the clock tolerance on exp, nbf and iat", async () => {
  await withIssuer(async (issuer) => {
    const raw = await issuer.userToken();
    const exp = (decodeJwt(raw).exp ?? 0) * 1000;
    const at = (ms: number) => issuer.verifier({ now: () => ms });
    await at(exp + 29_000).verify(raw);
    assert.match(await rejection(at(exp + 31_000).verify(raw)), /^The token expired at /);
    await rejection(at(exp + 50_000).verify(raw));
    await issuer.verifier({ now: () => exp + 50_000, clockToleranceSec: 60 }).verify(raw);
    const soon = Math.floor(Date.now() / 1000) + 20;
    await issuer.verifier().verify(
      await issuer.service.sign(issuer.claims({ nbf: soon, iat: soon }), "RS256"),
    );
  });
});

Deno.test("verify() remembers a verified token while its time claims accept it", async () => {
  await withIssuer(async (issuer) => {
    const raw = await issuer.userToken();
    const { exp = 0, iat = 0 } = decodeJwt(raw);
    let clock = exp * 1000 - 20_000;
    const verifier = issuer.verifier({ now: () => clock });
    const first = await verifier.verify(raw);
    assert.equal(await verifier.verify(raw), first, "the remembered token, not a new check");
    clock = exp * 1000 + 29_000;
    assert.equal(await verifier.verify(raw), first);
    // Past exp and the tolerance, remembered or not.
    clock = exp * 1000 + 31_000;
    assert.match(await rejection(verifier.verify(raw)), /^The token expired at /);

    // A clock set back before iat (minus the tolerance) verifies again, and refuses.
    clock = iat * 1000;
    const again = await verifier.verify(raw);
    assert.notEqual(again, first);
    assert.deepEqual(again, first);
    clock = iat * 1000 - 31_000;
    assert.match(await rejection(verifier.verify(raw)), /^The token was issued in the future/);

    // Remembered for verifiedCacheMs at most; 0 remembers nothing.
    clock = iat * 1000;
    const short = issuer.verifier({ now: () => clock, verifiedCacheMs: 1000 });
    const checked = await short.verify(raw);
    clock += 999;
    assert.equal(await short.verify(raw), checked);
    clock += 1;
    assert.notEqual(await short.verify(raw), checked);
    const never = issuer.verifier({ now: () => clock, verifiedCacheMs: 0 });
    assert.notEqual(await never.verify(raw), await never.verify(raw));

    // The oldest token is forgotten first.
    const other = await issuer.userToken("app_admin");
    const one = issuer.verifier({ now: () => clock, verifiedCacheSize: 1 });
    const userToken = await one.verify(raw);
    const adminToken = await one.verify(other);
    assert.equal(await one.verify(other), adminToken);
    assert.notEqual(await one.verify(raw), userToken);
  });
});

Deno.test("verify() refetches the key set once for an unknown kid, then not within the cooldown", async () => {
  await withIssuer(async (issuer) => {
    const own = await generateKeyPair("ES256");
    const unknown = await new SignJWT(issuer.claims())
      .setProtectedHeader({ alg: "ES256", kid: "fresh-key" })
      .sign(own.privateKey);

    const verifier = issuer.verifier({ jwksCooldownMs: 300 });
    await verifier.verify(await issuer.userToken());
    assert.equal(issuer.jwksFetches(), 1);
    await delay(350);
    await rejection(verifier.verify(unknown));
    assert.equal(issuer.jwksFetches(), 2, "an unknown kid after the cooldown refetches once");
    for (let i = 0; i < 5; i++) await rejection(verifier.verify(unknown));
    assert.equal(issuer.jwksFetches(), 2, "no refetch within the cooldown");
    await delay(350);
    await rejection(verifier.verify(unknown));
    assert.equal(issuer.jwksFetches(), 3, "one refetch per cooldown");

    // With the default 30 s cooldown, a flood of unknown kids costs nothing.
    const defaults = issuer.verifier();
    await defaults.verify(await issuer.userToken());
    for (let i = 0; i < 5; i++) await rejection(defaults.verify(unknown));
    assert.equal(issuer.jwksFetches(), 4);
    const discoveries = issuer.fetched.filter((url) => url.endsWith("/openid-configuration"));
    assert.equal(discoveries.length, 2, "one discovery per verifier");
  });
});

Deno.test("verify() follows key rotation: new kids after a refetch, old tokens until expiry", async () => {
  await withIssuer(async (issuer) => {
    let nowMs = Date.now();
    const verifier = issuer.verifier({ jwksCooldownMs: 100, now: () => nowMs });
    const old = await issuer.userToken();
    await verifier.verify(old);
    assert.equal(issuer.jwksFetches(), 1);

    await issuer.service.rotateKeys();
    const fresh = await issuer.userToken();
    assert.notEqual(decodeProtectedHeader(fresh).kid, decodeProtectedHeader(old).kid);
    await delay(150);
    assert.equal((await verifier.verify(fresh)).username, "app_user");
    assert.equal(issuer.jwksFetches(), 2);
    await verifier.verify(old);
    await issuer.verifier().verify(old); // a new verifier finds the retired key published

    nowMs = (decodeJwt(old).exp ?? 0) * 1000 + 31_000;
    assert.match(await rejection(verifier.verify(old)), /^The token expired at /);
    issuer.clock.now += issuer.service.lifetimeMs; // an issuer may now drop the retired key
  });
});

Deno.test("verify() reports an unreachable issuer as unavailable and retries discovery", async () => {
  const down = createJwtVerifier({
    issuer: `http://127.0.0.1:${closedPort()}/realms/twitterapi`,
    audience: "query",
  });
  assert.match(
    await rejection(down.verify("a.b.c"), "unavailable"),
    /^Cannot read the issuer's discovery document http:\/\/127\.0\.0\.1:\d+\/realms\/twitterapi\/\.well-known\/openid-configuration: /,
  );

  await withIssuer(async (issuer) => {
    let failures = 1;
    const flaky: typeof fetch = (input, init) => {
      if (failures-- > 0) return Promise.resolve(new Response("starting", { status: 503 }));
      return issuer.fetch(input, init);
    };
    const verifier = issuer.verifier({ fetch: flaky });
    const token = await issuer.userToken();
    assert.match(await rejection(verifier.verify(token), "unavailable"), /answered HTTP 503$/);
    await verifier.verify(token);

    // The key set going away after discovery is unavailable too, not an invalid token.
    const jwksDown: typeof fetch = (input, init) => {
      const url = input instanceof Request ? input.url : String(input);
      return url === issuer.jwksUri
        ? Promise.resolve(new Response("gone", { status: 502 }))
        : fetch(input, init);
    };
    assert.match(
      await rejection(issuer.verifier({ fetch: jwksDown }).verify(token), "unavailable"),
      /^Cannot read the issuer's key set: /,
    );
  });
});

Deno.test("verify() accepts a Keycloak password-grant token for app_user with audience query", async () => {
  const discoveryUrl = `${KEYCLOAK_ISSUER}/.well-known/openid-configuration`;
  let reason = "";
  try {
    const response = await fetch(discoveryUrl, { signal: AbortSignal.timeout(5000) });
    await response.body?.cancel();
    if (!response.ok) reason = `${discoveryUrl} answered ${response.status}`;
  } catch (error) {
    reason = error instanceof Error ? error.message : String(error);
  }
  if (reason !== "") {
    assert.fail(
      `Keycloak is not reachable at ${KEYCLOAK_ISSUER}: start it with ` +
        `\`deno task engines up keycloak\` (${reason})`,
    );
  }
  const response = await fetch(
    `${KEYCLOAK_ISSUER}/protocol/openid-connect/token`,
    form({
      grant_type: "password",
      client_id: CONSOLE,
      username: "app_user",
      password: devPassword("app_user"),
      scope: "openid",
    }),
  );
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  const token = await createJwtVerifier({ issuer: KEYCLOAK_ISSUER, audience: "query" })
    .verify(body.access_token);
  assert.equal(token.username, "app_user");
  assert.ok(token.roles.includes("app_user_role"), token.roles.join(", "));
  assert.ok(token.audience.includes("query"), token.audience.join(", "));
  assert.equal(token.clientId, CONSOLE);
  assert.ok(token.subject.length > 0);
});
