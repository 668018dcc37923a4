/**
 * The console's sign-in against the identity service in process (no
 * browser): the code flow with PKCE, the access token refreshed before it
 * expires, CSRF refusals, and a logout that ends the issuer's session.
 */
import assert from "node:assert/strict";
import { createOpenApiApp } from "../shared/http/openapi.ts";
import { MemoryLogStore } from "../shared/log/memory_log_store.ts";
import { MemorySpanStore } from "../shared/trace/memory_span_store.ts";
import { MemoryTraceReader } from "../shared/trace/memory_trace_reader.ts";
import { testContext } from "../shared/testing/test_context.ts";
import { addConsoleRoutes } from "./console/app.ts";
import { OidcClient } from "./console/oidc.ts";
import { SessionStore } from "./console/sessions.ts";
import { SystemView } from "./console/system.ts";
import { devPassword, testIdentity } from "./identity/_testing.ts";

const CONSOLE = "http://127.0.0.1:8184";
const ISSUER = "http://127.0.0.1:8090/realms/twitterapi";

Deno.test("console signs in with PKCE, refreshes the token before it expires, refuses forms without CSRF, and logs out at the issuer", async () => {
  const { service: identity } = await testIdentity();
  const refreshTokens: string[] = [];
  const issuerFetch: typeof fetch = async (input, init) => {
    const response = await identity.app.request(String(input), init);
    if (String(input).endsWith("/token")) {
      const body = await response.clone().json();
      if (typeof body.refresh_token === "string") refreshTokens.push(body.refresh_token);
    }
    return response;
  };
  let now = Date.now();
  const seenTokens: string[] = [];
  const app = createOpenApiApp();
  addConsoleRoutes(app, {
    sessions: new SessionStore(60_000 * 60, 10, () => now),
    oidc: new OidcClient({
      issuer: ISSUER,
      clientId: "twitterapi-console",
      fetch: issuerFetch,
      now: () => now,
    }),
    gateway: (_path, init) => {
      seenTokens.push(new Headers(init.headers).get("authorization")!);
      return Promise.resolve(Response.json({ data: [], page: { total: 0, nextCursor: null } }));
    },
    system: new SystemView({
      registryUrls: ["http://127.0.0.1:1"],
      tokens: { token: () => Promise.resolve("t"), invalidate() {} },
    }),
    traces: new MemoryTraceReader(new MemorySpanStore()),
    logs: new MemoryLogStore(),
    logger: testContext("console").logger,
    publicUrl: CONSOLE,
    wordWindows: ["1m"],
    script: "",
    style: "",
    now: () => now,
  });
  const cookieOf = (response: Response) =>
    /console_session=([^;]*)/.exec(response.headers.get("set-cookie") ?? "")?.[1];

  // Anonymous: a page sends to sign-in; the sign-in goes to the issuer with PKCE.
  const anonymous = await app.request(`${CONSOLE}/search`);
  assert.equal(anonymous.status, 302);
  assert.equal(anonymous.headers.get("location"), "/login?returnTo=%2Fsearch");
  const login = await app.request(`${CONSOLE}/login?returnTo=/search`);
  assert.equal(login.status, 302);
  const preSession = cookieOf(login)!;
  assert.match(login.headers.get("set-cookie")!, /HttpOnly/i);
  assert.match(login.headers.get("set-cookie")!, /SameSite=Lax/i);
  const authorize = new URL(login.headers.get("location")!);
  assert.equal(authorize.searchParams.get("code_challenge_method"), "S256");
  assert.equal(authorize.searchParams.get("redirect_uri"), `${CONSOLE}/callback`);

  // The identity service's login form, as a browser fills it in.
  const form = await (await identity.app.request(authorize.href)).text();
  const hidden = Object.fromEntries(
    [...form.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)]
      .map(([, name, value]) => [name!, value!.replaceAll("&amp;", "&")]),
  );
  const signedIn = await identity.app.request(new URL("auth", authorize.href).href, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      ...hidden,
      username: "app_user",
      password: devPassword("app_user"),
    }),
  });
  assert.equal(signedIn.status, 303);
  const callback = await app.request(signedIn.headers.get("location")!, {
    headers: { cookie: `console_session=${preSession}` },
  });
  assert.equal(callback.status, 302);
  assert.equal(callback.headers.get("location"), "/search");
  const session = cookieOf(callback)!;
  assert.notEqual(session, preSession);
  const cookie = { cookie: `console_session=${session}` };
  // The session from before sign-in is gone (no fixation).
  assert.equal(
    (await app.request(`${CONSOLE}/search`, {
      headers: { cookie: `console_session=${preSession}` },
    })).status,
    302,
  );

  const search = await app.request(`${CONSOLE}/search?text=kafka`, { headers: cookie });
  assert.equal(search.status, 200);
  // Close to expiry (300 s tokens, refreshed with 30 s left): a new access token.
  now += 280_000;
  assert.equal(
    (await app.request(`${CONSOLE}/search?text=kafka`, { headers: cookie })).status,
    200,
  );
  assert.equal(seenTokens.length, 2);
  assert.notEqual(seenTokens[1], seenTokens[0]);
  assert.equal(refreshTokens.length, 2);

  // Forms: none without the session's CSRF token; app_user is no admin either way.
  const page = await (await app.request(`${CONSOLE}/search`, { headers: cookie })).text();
  const csrf = /name="csrf" value="([^"]+)"/.exec(page)![1]!;
  const post = (path: string, fields: Record<string, string>) =>
    app.request(`${CONSOLE}${path}`, {
      method: "POST",
      headers: { ...cookie, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(fields),
    });
  const noToken = await post("/permissions", { userId: "x", scope: "all", level: "READ" });
  assert.equal(noToken.status, 403);
  assert.match(await noToken.text(), /CSRF/);
  const notAdmin = await post("/permissions", { csrf, userId: "x", scope: "all", level: "READ" });
  assert.equal(notAdmin.status, 403);
  assert.match(await notAdmin.text(), /Admins only/);
  assert.equal(seenTokens.length, 2);
  assert.equal((await post("/logout", {})).status, 403);

  // Logout: the console's session ends, then the issuer's.
  const logout = await post("/logout", { csrf });
  assert.equal(logout.status, 303);
  const endSession = new URL(logout.headers.get("location")!);
  assert.equal(endSession.pathname, "/realms/twitterapi/protocol/openid-connect/logout");
  assert.equal(endSession.searchParams.get("post_logout_redirect_uri"), `${CONSOLE}/`);
  assert.ok(endSession.searchParams.get("id_token_hint"));
  const ended = await identity.app.request(endSession.href);
  assert.equal(ended.status, 302);
  assert.equal(ended.headers.get("location"), `${CONSOLE}/`);
  assert.equal((await app.request(`${CONSOLE}/search`, { headers: cookie })).status, 302);
  const refresh = await identity.app.request(`${ISSUER}/protocol/openid-connect/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "refresh_token",
      client_id: "twitterapi-console",
      refresh_token: refreshTokens.at(-1)!,
    }),
  });
  assert.equal((await refresh.json()).error, "invalid_grant");
});
