import assert from "node:assert/strict";
import realmFile from "../../shared/auth/twitterapi-realm.json" with { type: "json" };
import {
  findPerson,
  grantScopes,
  isRegisteredRedirect,
  namedValues,
  parseRealm,
  RealmError,
  ScopeError,
  serviceAccount,
  tokenRoles,
} from "./realm.ts";

const realm = parseRealm(realmFile);

Deno.test("the realm file has the seed's roles and demo users, with their roles", () => {
  assert.equal(realm.name, "twitterapi");
  assert.deepEqual(realm.roles, [
    "app_user_role",
    "app_admin_role",
    "app_super_user_role",
    ...[
      "identity",
      "config",
      "gateway",
      "stream",
      "indexer",
      "wordcount",
      "analytics",
      "console",
      "query",
    ]
      .map((service) => `service:${service}`),
  ]);
  const roles = (username: string) => [...realm.users.get(username)!.roles].sort();
  assert.deepEqual(roles("app_user"), ["app_user_role"]);
  assert.deepEqual(roles("app_admin"), ["app_admin_role", "app_user_role"]);
  assert.deepEqual(roles("app_super_user"), ["app_super_user_role"]);
  assert.equal(realm.users.get("app_user")!.id, "27539682-a860-440f-8588-34b9881338a7");
});

Deno.test("the realm file's clients carry one audience per service API", () => {
  const console = realm.clients.get("twitterapi-console")!;
  assert.equal(console.publicClient, true);
  assert.equal(console.secret, undefined);
  assert.equal(console.directAccessGrantsEnabled, true);
  assert.deepEqual(console.audiences, ["config", "query", "stream", "wordcount", "analytics"]);
  assert.ok(console.redirectUris.every((uri) => uri.startsWith("http://")));
  const query = realm.clients.get("query-service")!;
  assert.equal(query.publicClient, false);
  assert.equal(query.serviceAccountsEnabled, true);
  assert.deepEqual(query.audiences, ["config", "wordcount", "analytics", "registry"]);
  assert.deepEqual(realm.clients.get("gateway-service")!.audiences, [
    "config",
    "query",
    "stream",
    "wordcount",
    "analytics",
    "registry",
  ]);
  assert.deepEqual(realm.clients.get("prometheus")!.audiences, ["registry"]);
});

Deno.test("the realm file gives every service its own client, allowed to register only itself", () => {
  const services = [
    "identity",
    "config",
    "gateway",
    "stream",
    "indexer",
    "wordcount",
    "analytics",
    "query",
  ];
  for (const service of services) {
    const client = realm.clients.get(`${service}-service`)!;
    assert.equal(client.serviceAccountsEnabled, true, service);
    assert.ok(client.audiences.includes("registry"), service);
    const account = [...realm.users.values()].find((user) =>
      user.serviceAccountClientId === client.clientId
    )!;
    assert.deepEqual(tokenRoles(account, client), [`service:${service}`], service);
  }
  // Prometheus reads the registry and registers nothing; no person can register anything.
  const prometheus = realm.clients.get("prometheus")!;
  const account = [...realm.users.values()].find((user) =>
    user.serviceAccountClientId === "prometheus"
  )!;
  assert.deepEqual(tokenRoles(account, prometheus), []);
  const console = realm.clients.get("twitterapi-console")!;
  for (const user of realm.users.values()) {
    if (user.serviceAccountClientId !== undefined) continue;
    assert.ok(!tokenRoles(user, console).some((role) => role.startsWith("service:")));
  }
});

Deno.test("the realm file gives a person signed in at /docs (api-docs) their console roles", () => {
  // "Try it out" calls the API with this token: without the roles, a super user's search finds
  // nothing and an admin's permission calls are refused.
  const docs = realm.clients.get("api-docs")!;
  const console = realm.clients.get("twitterapi-console")!;
  assert.equal(docs.publicClient, true);
  assert.equal(docs.directAccessGrantsEnabled, false);
  for (const username of ["app_user", "app_admin", "app_super_user"]) {
    const person = realm.users.get(username)!;
    assert.ok(tokenRoles(person, docs).length > 0, username);
    assert.deepEqual(tokenRoles(person, docs), tokenRoles(person, console), username);
  }
});

Deno.test("development secrets in the realm file are marked dev-only", () => {
  for (const user of realm.users.values()) {
    if (user.password !== undefined) assert.match(user.password, /^dev-only-/);
  }
  for (const client of realm.clients.values()) {
    if (client.secret !== undefined) assert.match(client.secret, /^dev-only-/);
  }
});

Deno.test("parseRealm() replaces development passwords and secrets from overrides", () => {
  const overridden = parseRealm(realmFile, {
    passwords: namedValues(["App_User:s3cret:with-colon"], "IDENTITY_DEV_PASSWORDS"),
    clientSecrets: namedValues(["query-service:other"], "IDENTITY_CLIENT_SECRETS"),
  });
  assert.equal(overridden.users.get("app_user")!.password, "s3cret:with-colon");
  assert.equal(overridden.users.get("app_admin")!.password, "dev-only-app-admin-password");
  assert.equal(overridden.clients.get("query-service")!.secret, "other");
});

Deno.test("parseRealm() refuses overrides for users or clients the realm does not have", () => {
  assert.throws(
    () => parseRealm(realmFile, { passwords: new Map([["nobody", "x"]]) }),
    (error) =>
      error instanceof RealmError && /users the realm does not have: nobody/.test(error.message),
  );
  assert.throws(
    () => parseRealm(realmFile, { clientSecrets: new Map([["nobody", "x"]]) }),
    /clients the realm does not have: nobody/,
  );
});

Deno.test("namedValues() refuses an item without a name or a value", () => {
  assert.throws(() => namedValues(["app_user"], "IDENTITY_DEV_PASSWORDS"), RangeError);
  assert.throws(() => namedValues([":x"], "IDENTITY_DEV_PASSWORDS"), RangeError);
  assert.throws(() => namedValues(["app_user:"], "IDENTITY_DEV_PASSWORDS"), /name:value/);
});

Deno.test("parseRealm() names what is wrong in a broken realm", () => {
  assert.throws(() => parseRealm([]), /must hold a JSON object/);
  assert.throws(
    () => parseRealm({ realm: "r", users: [{ username: "u", id: "1", realmRoles: ["nope"] }] }),
    /user u names the unknown role nope/,
  );
  assert.throws(
    () => parseRealm({ realm: "r", clients: [{ clientId: "c", publicClient: false }] }),
    /client c is confidential but has no secret/,
  );
  assert.throws(
    () =>
      parseRealm({
        realm: "r",
        clients: [{
          clientId: "c",
          publicClient: true,
          attributes: { "access.token.signed.response.alg": "HS256" },
        }],
      }),
    /must be one of RS256, ES256, got HS256/,
  );
  assert.throws(() => parseRealm({ realm: "r", users: [{ username: "u" }] }), /user u id/);
});

Deno.test("tokenRoles() keeps only the roles in the client's role scope", () => {
  const scoped = parseRealm({
    realm: "r",
    roles: { realm: [{ name: "a" }, { name: "b" }] },
    users: [{ id: "1", username: "u", realmRoles: ["a", "b"] }],
    clients: [
      { clientId: "full", publicClient: true },
      { clientId: "narrow", publicClient: true, fullScopeAllowed: false },
    ],
    scopeMappings: [{ client: "narrow", roles: ["b"] }],
  });
  const user = scoped.users.get("u")!;
  assert.deepEqual(tokenRoles(user, scoped.clients.get("full")!), ["a", "b"]);
  assert.deepEqual(tokenRoles(user, scoped.clients.get("narrow")!), ["b"]);
});

Deno.test("findPerson() finds people by username or e-mail, case-insensitively, never service accounts", () => {
  assert.equal(findPerson(realm, "APP_USER")?.username, "app_user");
  assert.equal(findPerson(realm, "app_admin@example.com")?.username, "app_admin");
  assert.equal(findPerson(realm, "service-account-query-service"), undefined);
  assert.equal(findPerson(realm, "nobody"), undefined);
});

Deno.test("serviceAccount() is the realm file's user, or a stable derived one", async () => {
  const account = await serviceAccount(realm, realm.clients.get("query-service")!);
  assert.equal(account.username, "service-account-query-service");
  assert.equal(account.id, "5b0f3c5e-8a4e-4d51-9a39-6f1f3b1c7a01");
  const bare = parseRealm({
    realm: "r",
    clients: [{ clientId: "c", secret: "s", serviceAccountsEnabled: true }],
  });
  const derived = await serviceAccount(bare, bare.clients.get("c")!);
  assert.match(derived.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.equal((await serviceAccount(bare, bare.clients.get("c")!)).id, derived.id);
});

Deno.test("grantScopes() adds the defaults, names only token scopes, refuses unknown ones", () => {
  const client = realm.clients.get("twitterapi-console")!;
  assert.equal(grantScopes(client, undefined).claim, "profile email");
  const withOpenId = grantScopes(client, "openid offline_access");
  assert.equal(withOpenId.claim, "openid profile email offline_access");
  assert.ok(withOpenId.applied.has("roles"));
  assert.throws(() => grantScopes(client, "openid admin"), ScopeError);
});

Deno.test("isRegisteredRedirect() matches exactly, or by prefix for a trailing '*'", () => {
  const client = realm.clients.get("twitterapi-console")!;
  assert.ok(isRegisteredRedirect(client, "http://127.0.0.1:8400/callback"));
  // Exact on localhost; any loopback-IP port is allowed by prefix (RFC 8252 section 7.3).
  assert.ok(!isRegisteredRedirect(client, "http://localhost:8400/callback/more"));
  assert.ok(isRegisteredRedirect(client, "http://127.0.0.1:51234/callback"));
  assert.ok(!isRegisteredRedirect(client, "http://127.0.0.1.evil.example/callback"));
  assert.ok(!isRegisteredRedirect(client, "http://evil.example/callback"));
  const wild = parseRealm({
    realm: "r",
    clients: [{ clientId: "w", publicClient: true, redirectUris: ["http://127.0.0.1:9000/*"] }],
  }).clients.get("w")!;
  assert.ok(isRegisteredRedirect(wild, "http://127.0.0.1:9000/anything"));
  assert.ok(!isRegisteredRedirect(wild, "http://127.0.0.1:9001/anything"));
});
