import assert from "node:assert/strict";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { KeyFileError, KeyRing } from "./key_ring.ts";

Deno.test("KeyRing publishes one key per algorithm with kid, alg and use", async () => {
  const keys = await KeyRing.create({ retentionMs: 1000 });
  const jwks = keys.jwks().keys;
  assert.deepEqual(jwks.map((key) => [key.alg, key.kty, key.use]), [
    ["RS256", "RSA", "sig"],
    ["ES256", "EC", "sig"],
  ]);
  assert.ok(jwks.every((key) => key.kid.length > 20 && !("d" in key)));
});

Deno.test("KeyRing signs with the active key of the algorithm, its kid in the header", async () => {
  const keys = await KeyRing.create({ retentionMs: 1000 });
  for (const alg of ["RS256", "ES256"] as const) {
    const token = await keys.sign({ sub: "x" }, alg);
    assert.deepEqual(decodeProtectedHeader(token), { alg, typ: "JWT", kid: keys.activeKid(alg) });
    const { payload } = await jwtVerify(token, createLocalJWKSet(keys.jwks()));
    assert.equal(payload.sub, "x");
  }
});

Deno.test("KeyRing keeps a retired key published for the retention, then drops it", async () => {
  let now = 1_000_000;
  const keys = await KeyRing.create({ retentionMs: 300_000, now: () => now });
  const before = keys.activeKid("RS256");
  const token = await keys.sign({ sub: "x" }, "RS256");
  now += 10_000;
  const [fresh] = await keys.rotate();
  assert.notEqual(keys.activeKid("RS256"), before);
  assert.equal(keys.activeKid("RS256"), fresh);
  assert.deepEqual(keys.jwks().keys.map((key) => key.kid).slice(0, 2), [
    keys.activeKid("RS256"),
    keys.activeKid("ES256"),
  ]);
  assert.ok(keys.jwks().keys.some((key) => key.kid === before));
  await jwtVerify(token, createLocalJWKSet(keys.jwks()));

  now += 299_999;
  assert.ok(keys.jwks().keys.some((key) => key.kid === before), "still published");
  now += 1;
  assert.ok(!keys.jwks().keys.some((key) => key.kid === before), "dropped");
  assert.equal(keys.jwks().keys.length, 2);
  await assert.rejects(jwtVerify(token, createLocalJWKSet(keys.jwks())), {
    code: "ERR_JWKS_NO_MATCHING_KEY",
  });
});

/** A key file in a fresh temporary folder (its own folder not made yet), removed after `body`. */
async function withKeyFile(body: (path: string) => Promise<void>): Promise<void> {
  const folder = await Deno.makeTempDir();
  try {
    await body(`${folder}/identity/signing-keys.json`);
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
}

function failOnWrite(error: Error): never {
  throw error;
}

Deno.test("KeyRing with a key file writes it (mode 0600, folder made) and a restart signs with the same keys", async () => {
  await withKeyFile(async (path) => {
    const first = await KeyRing.create({
      retentionMs: 1000,
      file: { path, onWriteError: failOnWrite },
    });
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    const token = await first.sign({ sub: "x" }, "RS256");

    const restarted = await KeyRing.create({
      retentionMs: 1000,
      file: { path, onWriteError: failOnWrite },
    });
    assert.deepEqual(restarted.jwks(), first.jwks());
    assert.ok(restarted.jwks().keys.every((key) => !("d" in key)), "only public halves published");
    const { payload } = await jwtVerify(token, createLocalJWKSet(restarted.jwks()));
    assert.equal(payload.sub, "x");
    const signedAfter = await restarted.sign({ sub: "y" }, "ES256");
    await jwtVerify(signedAfter, createLocalJWKSet(first.jwks()));
  });
});

Deno.test("KeyRing keeps a rotation in its key file, and drops retired keys past their retention at start", async () => {
  await withKeyFile(async (path) => {
    let now = 1_000_000;
    const file = { path, onWriteError: failOnWrite };
    const keys = await KeyRing.create({ retentionMs: 300_000, now: () => now, file });
    const before = keys.activeKid("RS256");
    now += 10_000;
    await keys.rotate();

    const restarted = await KeyRing.create({ retentionMs: 300_000, now: () => now, file });
    assert.equal(restarted.activeKid("RS256"), keys.activeKid("RS256"));
    assert.ok(restarted.jwks().keys.some((key) => key.kid === before), "retired, still published");

    now += 300_000;
    const later = await KeyRing.create({ retentionMs: 300_000, now: () => now, file });
    assert.equal(later.activeKid("RS256"), keys.activeKid("RS256"));
    assert.ok(!later.jwks().keys.some((key) => key.kid === before), "past its retention");
    assert.equal(later.jwks().keys.length, 2);
  });
});

Deno.test("KeyRing refuses a key file that holds no signing keys, naming the file", async () => {
  await withKeyFile(async (path) => {
    await Deno.mkdir(path.replace(/\/[^/]*$/, ""));
    for (const content of ["not json", '{"keys":[{"alg":"HS256","privateJwk":{}}]}', "{}"]) {
      await Deno.writeTextFile(path, content);
      await assert.rejects(
        KeyRing.create({ retentionMs: 1000, file: { path, onWriteError: failOnWrite } }),
        (error: Error) => {
          assert.ok(error instanceof KeyFileError);
          assert.match(error.message, /^Cannot use the signing keys in .*signing-keys\.json: /);
          assert.match(error.message, /delete the file to start with new keys$/);
          return true;
        },
      );
    }
  });
});

Deno.test("KeyRing reports a key file it cannot write, and its keys still sign", async () => {
  await withKeyFile(async (path) => {
    // The key file's folder is a file: neither the folder nor the key file can be made.
    await Deno.writeTextFile(path.replace(/\/[^/]*$/, ""), "");
    const errors: Error[] = [];
    const keys = await KeyRing.create({
      retentionMs: 1000,
      file: { path, onWriteError: (error) => errors.push(error) },
    });
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof KeyFileError);
    assert.match(errors[0].message, /^Cannot write the signing keys to .*signing-keys\.json: /);
    const token = await keys.sign({ sub: "x" }, "RS256");
    await jwtVerify(token, createLocalJWKSet(keys.jwks()));
  });
});
