import assert from "node:assert/strict";
import { SnowflakeIds, TWITTER_EPOCH_MS } from "./tweet_ids.ts";

Deno.test("SnowflakeIds encodes time, worker and sequence", () => {
  const ids = new SnowflakeIds(5, () => TWITTER_EPOCH_MS + 1000);
  const first = ids.next();
  const second = ids.next();
  assert.equal(first.id, (1000n << 22n) | (5n << 12n));
  assert.equal(second.id, first.id + 1n);
  assert.equal(first.createdAt, TWITTER_EPOCH_MS + 1000);
});

Deno.test("SnowflakeIds stays unique and increasing past 4096 ids per millisecond", () => {
  const ids = new SnowflakeIds(1023, () => Date.UTC(2026, 0, 1));
  let previous = -1n;
  const seen = new Set<bigint>();
  for (let i = 0; i < 10_000; i++) {
    const { id } = ids.next();
    assert.ok(id > previous);
    seen.add(id);
    previous = id;
  }
  assert.equal(seen.size, 10_000);
});

Deno.test("SnowflakeIds never goes back when the clock does", () => {
  let now = Date.UTC(2026, 0, 1);
  const ids = new SnowflakeIds(0, () => now);
  const before = ids.next();
  now -= 5000;
  const after = ids.next();
  assert.ok(after.id > before.id);
  assert.ok(after.createdAt >= before.createdAt);
});

Deno.test("SnowflakeIds produces positive 63-bit ids", () => {
  const { id } = new SnowflakeIds(1023, () => Date.UTC(2080, 0, 1)).next();
  assert.ok(id > 0n && id < 2n ** 63n);
});

Deno.test("SnowflakeIds rejects a worker id outside 10 bits", () => {
  assert.throws(() => new SnowflakeIds(1024), RangeError);
  assert.throws(() => new SnowflakeIds(-1), RangeError);
});
