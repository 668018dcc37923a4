import assert from "node:assert/strict";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { KeyRing } from "./key_ring.ts";

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
