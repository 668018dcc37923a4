import assert from "node:assert/strict";
import { assertDescribesEveryRoute } from "../../shared/testing/openapi_assertions.ts";
import { createTestIssuer } from "../../shared/testing/test_issuer.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { loadConfig } from "../config.ts";
import { parseKeyItems, SecretCipher } from "./cipher.ts";
import { createConfigService } from "./main.ts";

// Test fixtures: keys made for these tests only.
const KEY_A = "a:" + btoa(String.fromCharCode(...new Uint8Array(32).fill(1)));
const KEY_B = "b:" + btoa(String.fromCharCode(...new Uint8Array(32).fill(2)));
const OTHER_A = "a:" + btoa(String.fromCharCode(...new Uint8Array(32).fill(3)));

async function setup(files: Record<string, string>, keys = [KEY_A, KEY_B]) {
  const folder = await Deno.makeTempDir({ prefix: "config-repo-" });
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${folder}/${name}`, text);
  }
  const issuer = await createTestIssuer();
  const config = loadConfig({
    CONFIG_REPOSITORY: folder,
    CONFIG_ENCRYPT_KEYS: keys.join(","),
    CONFIG_ENCRYPT_ACTIVE_KEY: keys[0]!.split(":")[0]!,
  });
  const service = await createConfigService({
    config,
    context: testContext("config"),
    verifier: issuer.verifier("config"),
  });
  const admin = await issuer.authorization({ audience: "config", roles: ["app_admin_role"] });
  const as = (roles: string[]) => issuer.authorization({ audience: "config", roles });
  return {
    folder,
    app: service.app,
    admin,
    as,
    issuer,
    async [Symbol.asyncDispose]() {
      await service.stop();
      await Deno.remove(folder, { recursive: true });
    },
  };
}

Deno.test("GET /{application}/{profile} answers Spring's shape, most specific source first", async () => {
  await using env = await setup({
    "application.yml": "log:\n  level: info\nshared: base\n",
    "application-dev.yml": "shared: dev\n",
    "gateway.yml": "gateway:\n  rate-limits:\n    - tweets=5/60000\n    - stream=1/1000\n",
    "gateway-dev.json": JSON.stringify({ gateway: { "trust-forwarded-for": true } }),
    "query.yml": "other: not for the gateway\n",
  });
  const response = await env.app.request("/gateway/dev", { headers: env.admin });
  assert.equal(response.status, 200);
  const body = await response.json();
  assert.deepEqual(Object.keys(body), [
    "name",
    "profiles",
    "label",
    "version",
    "state",
    "propertySources",
  ]);
  assert.equal(body.name, "gateway");
  assert.deepEqual(body.profiles, ["dev"]);
  assert.equal(body.label, null);
  assert.match(body.version, /^[0-9a-f]{20}$/);
  assert.equal(response.headers.get("etag"), `"${body.version}"`);
  assert.deepEqual(body.propertySources, [
    { name: "file:gateway-dev.json", source: { "gateway.trust-forwarded-for": true } },
    { name: "file:application-dev.yml", source: { shared: "dev" } },
    {
      name: "file:gateway.yml",
      source: {
        "gateway.rate-limits[0]": "tweets=5/60000",
        "gateway.rate-limits[1]": "stream=1/1000",
      },
    },
    { name: "file:application.yml", source: { "log.level": "info", shared: "base" } },
  ]);

  const again = await env.app.request("/gateway/dev", {
    headers: { ...env.admin, "if-none-match": `"${body.version}"` },
  });
  assert.equal(again.status, 304);
  const labelled = await env.app.request("/gateway/dev/main", { headers: env.admin });
  assert.equal((await labelled.json()).label, "main");

  await Deno.writeTextFile(
    `${env.folder}/gateway.yml`,
    "gateway:\n  rate-limits: tweets=6/60000\n",
  );
  const changed = await env.app.request("/gateway/dev", {
    headers: { ...env.admin, "if-none-match": `"${body.version}"` },
  });
  assert.equal(changed.status, 200);
  assert.notEqual((await changed.json()).version, body.version);
});

Deno.test("later profiles override earlier ones; the default profile reads no profile files", async () => {
  await using env = await setup({
    "application.yml": "a: 1\n",
    "stream-x.yml": "a: x\n",
    "stream-y.yml": "a: y\n",
  });
  const both = await (await env.app.request("/stream/x,y", { headers: env.admin })).json();
  assert.deepEqual(both.propertySources.map((source: { name: string }) => source.name), [
    "file:stream-y.yml",
    "file:stream-x.yml",
    "file:application.yml",
  ]);
  const plain = await (await env.app.request("/stream/default", { headers: env.admin })).json();
  assert.deepEqual(plain.propertySources.map((source: { name: string }) => source.name), [
    "file:application.yml",
  ]);
});

Deno.test("POST /encrypt and /decrypt round-trip; the repository's {cipher} values are served decrypted", async () => {
  await using env = await setup({});
  const text = { ...env.admin, "content-type": "text/plain" };
  const encrypted = await (await env.app.request("/encrypt", {
    method: "POST",
    headers: text,
    body: "s3cret \u00fc",
  }))
    .text();
  assert.match(encrypted, /^\{key:a\}[A-Za-z0-9+/=]+$/);
  const decrypted = await env.app.request("/decrypt", {
    method: "POST",
    headers: text,
    body: encrypted,
  });
  assert.equal(decrypted.status, 200);
  assert.equal(await decrypted.text(), "s3cret \u00fc");
  const withPrefix = await env.app.request("/decrypt", {
    method: "POST",
    headers: text,
    body: `{cipher}${encrypted}`,
  });
  assert.equal(await withPrefix.text(), "s3cret \u00fc");

  await Deno.writeTextFile(
    `${env.folder}/query.yml`,
    `query:\n  client-secret: '{cipher}${encrypted}'\n`,
  );
  const body = await (await env.app.request("/query/default", { headers: env.admin })).json();
  assert.deepEqual(body.propertySources[0].source, { "query.client-secret": "s3cret \u00fc" });
});

Deno.test("wrong key, tampered ciphertext and unknown key id are distinct 4xx problems", async () => {
  const other = await SecretCipher.create({ keys: parseKeyItems([OTHER_A]), activeKeyId: "a" });
  const stranger = await SecretCipher.create({
    keys: parseKeyItems(["c:" + btoa(String.fromCharCode(...new Uint8Array(32).fill(4)))]),
    activeKeyId: "c",
  });
  await using env = await setup({});
  const text = { ...env.admin, "content-type": "text/plain" };
  const good =
    await (await env.app.request("/encrypt", { method: "POST", headers: text, body: "x" })).text();
  const bytes = Uint8Array.from(atob(good.slice("{key:a}".length)), (c) => c.charCodeAt(0));
  bytes[bytes.length - 1]! ^= 1;
  const tampered = `{key:a}${btoa(String.fromCharCode(...bytes))}`;
  const cases = [
    [await other.encrypt("x"), 422, "cipher-wrong-key", /another key under the id 'a'/],
    [tampered, 422, "cipher-tampered", /altered or truncated/],
    [await stranger.encrypt("x"), 422, "cipher-unknown-key", /key id 'c'.*has a, b/],
    ["not a secret", 400, "cipher-malformed", /\{key:<key id>\}/],
  ] as const;
  for (const [body, status, code, detail] of cases) {
    const response = await env.app.request("/decrypt", { method: "POST", headers: text, body });
    assert.equal(response.status, status, code);
    assert.equal(response.headers.get("content-type"), "application/problem+json");
    const problem = await response.json();
    assert.equal(problem.type, `urn:twitterapi:problem:${code}`);
    assert.match(problem.detail, detail);
  }
});

Deno.test("an application whose secret cannot be decrypted is not served, and no value leaks", async () => {
  const other = await SecretCipher.create({ keys: parseKeyItems([OTHER_A]), activeKeyId: "a" });
  await using env = await setup({
    "application.yml": "shared: visible\n",
    "gateway.yml": `gateway:\n  secret: '{cipher}${await other.encrypt("gateway-secret")}'\n`,
    "query.yml": "query:\n  plain: fine\n",
  });
  const response = await env.app.request("/gateway/default", { headers: env.admin });
  assert.equal(response.status, 500);
  const problem = await response.json();
  assert.equal(problem.type, "urn:twitterapi:problem:undecryptable-secret");
  assert.equal(problem.key, "gateway.secret");
  assert.equal(problem.file, "file:gateway.yml");
  assert.equal(problem.reason, "wrong-key");
  assert.doesNotMatch(JSON.stringify(problem), /visible|gateway-secret/);
  const query = await env.app.request("/query/default", { headers: env.admin });
  assert.equal(query.status, 200, "other applications are still served");
});

Deno.test("anonymous callers get 401; a service reads only its own and the shared application", async () => {
  await using env = await setup({ "application.yml": "a: 1\n", "gateway.yml": "b: 2\n" });
  const anonymous = await env.app.request("/gateway/default");
  assert.equal(anonymous.status, 401);
  assert.equal(anonymous.headers.get("content-type"), "application/problem+json");
  assert.match(anonymous.headers.get("www-authenticate") ?? "", /^Bearer/);
  const anonymousEncrypt = await env.app.request("/encrypt", { method: "POST", body: "x" });
  assert.equal(anonymousEncrypt.status, 401);

  const gateway = await env.as(["service:gateway"]);
  assert.equal((await env.app.request("/gateway/default", { headers: gateway })).status, 200);
  assert.equal((await env.app.request("/application/default", { headers: gateway })).status, 200);
  const query = await env.as(["service:query"]);
  const refused = await env.app.request("/gateway/default", { headers: query });
  assert.equal(refused.status, 403);
  assert.match((await refused.json()).detail, /may not read the configuration of gateway/);
  const user = await env.as(["app_user_role"]);
  assert.equal((await env.app.request("/gateway/default", { headers: user })).status, 403);
  for (const path of ["/encrypt", "/decrypt"]) {
    const response = await env.app.request(path, {
      method: "POST",
      headers: { ...gateway, "content-type": "text/plain" },
      body: "x",
    });
    assert.equal(response.status, 403, path);
  }
  const wrongAudience = await env.issuer.authorization({
    audience: "query",
    roles: ["app_admin_role"],
  });
  assert.equal((await env.app.request("/gateway/default", { headers: wrongAudience })).status, 401);
});

Deno.test("the identity service's tokens: a service's client credentials read its own application, app_admin reads any", async () => {
  const { serveApp } = await import("../../shared/http/serve.ts");
  const { ClientCredentialsTokenSource } = await import("../../shared/auth/client_credentials.ts");
  const { createJwtVerifier } = await import("../../shared/auth/jwt_verifier.ts");
  const { devSecret, testIdentity } = await import("../identity/_testing.ts");
  const identity = await testIdentity();
  const issuerServer = serveApp(identity.service.app, { hostname: "127.0.0.1", port: 0 });
  const issuer = `${issuerServer.url}/realms/twitterapi`;
  const folder = await Deno.makeTempDir({ prefix: "config-repo-" });
  try {
    await Deno.writeTextFile(`${folder}/gateway.yml`, "a: 1\n");
    await Deno.writeTextFile(`${folder}/query.yml`, "b: 2\n");
    const service = await createConfigService({
      config: loadConfig({ CONFIG_REPOSITORY: folder }),
      context: testContext("config"),
      verifier: createJwtVerifier({ issuer, audience: "config" }),
    });
    const gateway = new ClientCredentialsTokenSource({
      issuer,
      clientId: "gateway-service",
      clientSecret: devSecret("gateway-service"),
    });
    const headers = { authorization: `Bearer ${await gateway.token()}` };
    assert.equal((await service.app.request("/gateway/default", { headers })).status, 200);
    assert.equal((await service.app.request("/query/default", { headers })).status, 403);
  } finally {
    await issuerServer.shutdown();
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("config's /openapi.json is valid OpenAPI 3.1 describing every route it serves", async () => {
  await using env = await setup({ "application.yml": "a: b\n" });
  const description = await assertDescribesEveryRoute(env.app);
  const paths = description.paths as Record<string, Record<string, { responses: object }>>;
  const environment = paths["/{application}/{profile}"]?.get;
  assert.ok(environment !== undefined, "the environment route is described");
  assert.deepEqual(Object.keys(environment.responses).sort(), [
    "200",
    "304",
    "400",
    "401",
    "403",
    "500",
    "503",
  ]);
});

Deno.test("config refuses an invalid application or profile with a 400 naming it", async () => {
  await using env = await setup({ "application.yml": "a: b\n" });
  for (
    const [path, parameter] of [
      ["/Gateway/default", "application"],
      ["/a--b/default", "application"],
      ["/gateway/dev,", "profile"],
      ["/gateway/dev,Prod", "profile"],
    ]
  ) {
    const response = await env.app.request(path!, { headers: env.admin });
    assert.equal(response.status, 400, path);
    const problem = await response.json();
    assert.equal(problem.type, "urn:twitterapi:problem:invalid-parameter");
    assert.deepEqual(problem.errors.map((error: { parameter: string }) => error.parameter), [
      parameter,
    ]);
  }
  const label = await env.app.request("/gateway/default/v2", { headers: env.admin });
  assert.equal(label.status, 404);
  assert.match((await label.json()).detail, /only label is 'main'/);
  assert.equal(
    (await env.app.request("/gateway/default/main", { headers: env.admin })).status,
    200,
  );
});
