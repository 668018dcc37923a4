/**
 * scripts/token.ts as a child process: only the access token on stdout, from
 * the identity service or, by base URL only, from the real Keycloak
 * (`deno task engines up keycloak`).
 */
import assert from "node:assert/strict";
import { decodeJwt } from "jose";
import { testIdentity } from "../services/identity/_testing.ts";
import { serveApp } from "../shared/http/serve.ts";
import { tokenOptions } from "./token.ts";

const ROOT = new URL("..", import.meta.url);
const JWT_LINE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n$/;
const KEYCLOAK_ISSUER = "http://127.0.0.1:9091/realms/twitterapi";

async function runToken(args: string[], env: Record<string, string> = {}) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", "scripts/token.ts", ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

async function withIdentity(test: (issuer: string) => Promise<void>): Promise<void> {
  const { service } = await testIdentity();
  const server = serveApp(service.app, { hostname: "127.0.0.1", port: 0 });
  try {
    await test(`${server.url}/realms/twitterapi`);
  } finally {
    await server.shutdown();
  }
}

Deno.test("token.ts prints only a JWT for a development user", async () => {
  await withIdentity(async (issuer) => {
    const result = await runToken(["app_super_user", `--issuer=${issuer}`]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, JWT_LINE);
    const claims = decodeJwt(result.stdout.trim());
    assert.equal(claims.iss, issuer);
    assert.equal(claims.preferred_username, "app_super_user");
    assert.equal(claims.azp, "twitterapi-console");
  });
});

Deno.test("token.ts reports a refused login on stderr with exit code 1", async () => {
  await withIdentity(async (issuer) => {
    const result = await runToken(["app_user", `--issuer=${issuer}`], {
      IDENTITY_DEV_PASSWORDS: "app_user:wrong",
    });
    assert.equal(result.code, 1);
    assert.equal(result.stdout, "");
    assert.match(result.stderr, /Cannot get a token for app_user .*invalid_grant/);
  });
});

Deno.test("token.ts refuses an unknown user, bad arguments and an unreachable issuer", async () => {
  const unknown = await runToken(["nobody", "--issuer=http://127.0.0.1:1/realms/twitterapi"]);
  assert.equal(unknown.code, 1);
  assert.equal(unknown.stdout, "");
  assert.match(unknown.stderr, /nobody is not a development user of realm twitterapi/);

  const noUser = await runToken([]);
  assert.equal(noUser.code, 1);
  assert.match(noUser.stderr, /^Usage: deno task token <user>/);

  const unreachable = await runToken(["app_user", "--issuer=http://127.0.0.1:1/realms/twitterapi"]);
  assert.equal(unreachable.code, 1);
  assert.equal(unreachable.stdout, "");
  assert.match(unreachable.stderr, /Cannot reach the issuer at http:\/\/127\.0\.0\.1:1\//);
});

Deno.test("token.ts defaults to the local identity service's issuer", async () => {
  const options = await tokenOptions(["app_user"], {});
  assert.equal(options.issuer, "http://127.0.0.1:8090/realms/twitterapi");
  assert.equal(options.clientId, "twitterapi-console");
  assert.equal(options.password, "dev-only-app-user-password");
  const moved = await tokenOptions(["app_user", "--client=other"], {
    IDENTITY_PUBLIC_URL: "https://id.example.org",
    IDENTITY_DEV_PASSWORDS: "app_user:changed",
  });
  assert.equal(moved.issuer, "https://id.example.org/realms/twitterapi");
  assert.equal(moved.clientId, "other");
  assert.equal(moved.password, "changed");
});

Deno.test("token.ts gets the same user's token from the real Keycloak by base URL only", async () => {
  const result = await runToken(["app_user", `--issuer=${KEYCLOAK_ISSUER}`]);
  assert.ok(
    !/Cannot reach the issuer/.test(result.stderr),
    `Keycloak is not reachable at ${KEYCLOAK_ISSUER}: start it with ` +
      `\`deno task engines up keycloak\` (${result.stderr.trim()})`,
  );
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, JWT_LINE);
  assert.equal(decodeJwt(result.stdout.trim()).preferred_username, "app_user");
});
