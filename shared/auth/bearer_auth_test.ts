/**
 * bearerAuth through `app.request()`, with tokens of a test issuer served on
 * loopback and verified over real HTTP.
 */
import assert from "node:assert/strict";
import { type Context, Hono } from "hono";
import { decodeJwt } from "jose";
import { PROBLEM_CONTENT_TYPE, problemType } from "../http/problem.ts";
import { startTestOidcIssuer } from "../testing/oidc_issuer.ts";
import { passwordGrantToken } from "../testing/realm.ts";
import { bearerAuth, type BearerAuthEnv } from "./bearer_auth.ts";
import { type AccessToken, createJwtVerifier, type JwtVerifier } from "./jwt_verifier.ts";

interface Fixture {
  /** The issuer's clock, epoch milliseconds; tests move it. */
  readonly clock: { now: number };
  readonly lifetimeMs: number;
  readonly app: Hono<BearerAuthEnv>;
  token(username: string): Promise<string>;
}

function whoAmI(c: Context<BearerAuthEnv>): Response {
  // Undefined only behind the optional bearerAuth, for an anonymous request.
  const token: AccessToken | undefined = c.get("accessToken");
  return c.json({ username: token?.username ?? null, roles: token?.roles ?? [] });
}

function protectedApp(verifier: JwtVerifier): Hono<BearerAuthEnv> {
  const app = new Hono<BearerAuthEnv>();
  app.use("/me", bearerAuth({ verifier }));
  app.use("/admin", bearerAuth({ verifier, anyRole: ["app_super_user_role", "app_admin_role"] }));
  app.use("/public", bearerAuth({ verifier, optional: true }));
  app.get("/me", whoAmI);
  app.get("/admin", whoAmI);
  app.get("/public", whoAmI);
  return app;
}

async function withApp(test: (fixture: Fixture) => Promise<void>): Promise<void> {
  await using issuer = await startTestOidcIssuer();
  const verifier = createJwtVerifier({ issuer: issuer.issuer, audience: "query" });
  await test({
    clock: issuer.clock,
    lifetimeMs: issuer.lifetimeMs,
    app: protectedApp(verifier),
    token: (username) => passwordGrantToken(issuer.tokenEndpoint, username),
  });
}

function bearer(token: string): RequestInit {
  return { headers: { authorization: `Bearer ${token}` } };
}

async function assertProblem(
  response: Response,
  status: number,
  code: string,
): Promise<Record<string, unknown>> {
  const body = await response.json();
  assert.equal(response.status, status, JSON.stringify(body));
  assert.equal(response.headers.get("content-type"), PROBLEM_CONTENT_TYPE);
  assert.equal(body.type, problemType(code));
  assert.equal(body.status, status);
  assert.equal(typeof body.title, "string");
  assert.equal(typeof body.detail, "string");
  return body;
}

/** The `error_description` of a challenge. */
function errorDescription(challenge: string | null): string | undefined {
  return /error_description="([^"]*)"/.exec(challenge ?? "")?.[1];
}

Deno.test("bearerAuth() answers 401 with a bare challenge when no token is sent", async () => {
  await withApp(async ({ app }) => {
    for (const init of [{}, { headers: { authorization: "Basic YXBwX3VzZXI6eA==" } }]) {
      const response = await app.request("/me", init);
      await assertProblem(response, 401, "unauthorized");
      assert.equal(response.headers.get("www-authenticate"), 'Bearer realm="twitterapi"');
    }
  });
});

Deno.test("bearerAuth() answers 401 invalid_token for garbage, empty and expired tokens", async () => {
  await withApp(async ({ app, clock, lifetimeMs, token }) => {
    const garbage = await app.request("/me", bearer("garbage"));
    const body = await assertProblem(garbage, 401, "unauthorized");
    const challenge = garbage.headers.get("www-authenticate");
    assert.match(
      challenge ?? "",
      /^Bearer realm="twitterapi", error="invalid_token", error_description="The token is malformed: [^"]+"$/,
    );
    assert.equal(body.detail, errorDescription(challenge));

    const empty = await app.request("/me", { headers: { authorization: "Bearer " } });
    await assertProblem(empty, 401, "unauthorized");
    assert.equal(
      empty.headers.get("www-authenticate"),
      'Bearer realm="twitterapi", error="invalid_token", ' +
        'error_description="The Authorization header has no single bearer token"',
    );

    clock.now -= lifetimeMs + 60_000; // the issuer issues a token that has expired
    const stale = await token("app_user");
    const expired = await app.request("/me", bearer(stale));
    await assertProblem(expired, 401, "unauthorized");
    const expiredAt = new Date((decodeJwt(stale).exp ?? 0) * 1000).toISOString();
    assert.equal(
      expired.headers.get("www-authenticate"),
      'Bearer realm="twitterapi", error="invalid_token", ' +
        `error_description="The token expired at ${expiredAt}"`,
    );
  });
});

Deno.test("bearerAuth() answers 403 insufficient_scope to a user without the role", async () => {
  await withApp(async ({ app, token }) => {
    const response = await app.request("/admin", bearer(await token("app_user")));
    const body = await assertProblem(response, 403, "forbidden");
    assert.deepEqual(body.requiredRoles, ["app_super_user_role", "app_admin_role"]);
    assert.equal(
      response.headers.get("www-authenticate"),
      'Bearer realm="twitterapi", error="insufficient_scope", ' +
        'error_description="The token carries none of the roles app_super_user_role, app_admin_role"',
    );
  });
});

Deno.test("bearerAuth() admits a valid token and sets accessToken", async () => {
  await withApp(async ({ app, token }) => {
    const superUser = await app.request("/admin", bearer(await token("app_super_user")));
    assert.equal(superUser.status, 200);
    assert.deepEqual(await superUser.json(), {
      username: "app_super_user",
      roles: ["app_super_user_role"],
    });
    const user = await app.request("/me", bearer(await token("app_user")));
    assert.equal(user.status, 200);
    assert.deepEqual(await user.json(), { username: "app_user", roles: ["app_user_role"] });
    assert.equal(user.headers.get("www-authenticate"), null);
  });
});

Deno.test("bearerAuth() with optional admits anonymous requests but not invalid tokens", async () => {
  await withApp(async ({ app, token }) => {
    const anonymous = await app.request("/public");
    assert.equal(anonymous.status, 200);
    assert.deepEqual(await anonymous.json(), { username: null, roles: [] });
    const user = await app.request("/public", bearer(await token("app_user")));
    assert.deepEqual(await user.json(), { username: "app_user", roles: ["app_user_role"] });
    await assertProblem(await app.request("/public", bearer("garbage")), 401, "unauthorized");
  });
});

Deno.test("bearerAuth() answers 503 when the issuer cannot be reached", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  const app = protectedApp(
    createJwtVerifier({ issuer: `http://127.0.0.1:${port}/realms/twitterapi`, audience: "query" }),
  );
  const response = await app.request("/me", bearer("a.b.c"));
  const body = await assertProblem(response, 503, "unavailable");
  assert.equal(response.headers.get("www-authenticate"), null);
  assert.equal(response.headers.get("retry-after"), "5");
  assert.ok(!String(body.detail).includes(String(port)), "no internal address in the response");
});
