import assert from "node:assert/strict";
import { MemoryRateLimitStore } from "./memory_rate_limit_store.ts";
import { runRateLimitStoreContract, uniqueKey } from "./rate_limit_store_contract.ts";

runRateLimitStoreContract("MemoryRateLimitStore", {
  create: () => {
    let now = 1_000_000;
    const store = new MemoryRateLimitStore({ now: () => now });
    return Promise.resolve({
      store,
      elapse: (ms) => {
        now += ms;
        return Promise.resolve();
      },
    });
  },
  fakeClock: true,
  windowMs: 1000,
});

Deno.test("MemoryRateLimitStore drops keys whose hits all left the window", async () => {
  let now = 0;
  const store = new MemoryRateLimitStore({ now: () => now, sweepIntervalMs: 5000 });
  try {
    for (let i = 0; i < 1000; i++) await store.hit(`idle-${i}`, 5, 1000);
    await store.hit("long", 5, 60_000);
    assert.equal(store.size, 1001);
    now += 4999;
    await store.hit("busy", 5, 1000);
    assert.equal(store.size, 1002, "no sweep before the interval");
    now += 1;
    await store.hit("busy", 5, 1000);
    // The idle keys and nothing else are gone: "busy" was hit a moment ago and
    // "long" has a one-minute window.
    assert.equal(store.size, 2);
    assert.equal((await store.hit("busy", 5, 1000)).remaining, 2);
    assert.equal((await store.hit("long", 5, 60_000)).remaining, 3);
  } finally {
    await store.close();
  }
});

Deno.test("MemoryRateLimitStore admits exactly the limit in each of many windows", async () => {
  let now = 0;
  const store = new MemoryRateLimitStore({ now: () => now });
  try {
    // One hit a millisecond for ten windows: the first 100 of each window get in.
    let admitted = 0;
    for (let i = 0; i < 10_000; i++) {
      if ((await store.hit("key", 100, 1000)).allowed) admitted++;
      now += 1;
    }
    assert.equal(admitted, 1000);
    assert.equal(store.size, 1);
  } finally {
    await store.close();
  }
});

Deno.test("MemoryRateLimitStore measures time with the monotonic clock by default", async () => {
  const store = new MemoryRateLimitStore();
  try {
    const key = uniqueKey("default-clock");
    assert.equal((await store.hit(key, 1, 60_000)).allowed, true);
    const rejected = await store.hit(key, 1, 60_000);
    assert.equal(rejected.allowed, false);
    assert.ok(rejected.retryAfterMs > 0 && rejected.retryAfterMs <= 60_000);
  } finally {
    await store.close();
  }
});
