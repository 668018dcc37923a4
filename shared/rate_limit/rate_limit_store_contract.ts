/**
 * The behaviour every `RateLimitStore` adapter must show, as Deno tests.
 * Adapter test files call `runRateLimitStoreContract` with a factory of
 * fixtures: a store and a way to let time pass on the store's clock (a fake
 * clock jumps; a real one is waited for by polling). Keys are unique per
 * test, so the cases also hold against a shared real Redis.
 *
 * With a fake clock every time is asserted exactly. With a real clock a
 * time is asserted within (0, expected]: it can only be less than the
 * expected value because time ran on between calls, and the window is long
 * enough that a slow machine does not change which hits are admitted.
 */

import assert from "node:assert/strict";
import {
  type RateLimitDecision,
  type RateLimitStore,
  RateLimitStoreClosedError,
} from "./rate_limit_store.ts";

export interface RateLimitStoreFixture {
  readonly store: RateLimitStore;
  /** Lets at least `ms` milliseconds pass on the store's clock. */
  elapse(ms: number): Promise<void>;
}

export interface RateLimitStoreContractOptions {
  /** A fresh store with its clock; the contract closes the store. */
  create(): Promise<RateLimitStoreFixture>;
  /** Whether the clock moves only through `elapse`, so times can be asserted exactly. */
  readonly fakeClock: boolean;
  /**
   * The window of the cases where hits leave it: any for a fake clock; for a
   * real one, long enough that a test's few calls take a small part of it.
   */
  readonly windowMs: number;
}

/** A key no other test run uses. */
export function uniqueKey(prefix: string): string {
  return `${prefix}:${crypto.randomUUID().slice(0, 8)}`;
}

/** A window no contract case lets pass. */
const LONG_WINDOW_MS = 60_000;

export function runRateLimitStoreContract(
  name: string,
  options: RateLimitStoreContractOptions,
): void {
  const { fakeClock, windowMs: W } = options;

  function contract(
    behaviour: string,
    body: (store: RateLimitStore, elapse: (ms: number) => Promise<void>) => Promise<void>,
  ): void {
    Deno.test(`${name} ${behaviour}`, async () => {
      const { store, elapse } = await options.create();
      try {
        await body(store, elapse);
      } finally {
        await store.close();
      }
    });
  }

  /** Exactly `expected` on a fake clock; in (0, expected] on a real one. */
  function assertTime(actual: number, expected: number, what: string): void {
    assert.ok(Number.isInteger(actual), `${what}: ${actual} is not whole milliseconds`);
    if (fakeClock) {
      assert.equal(actual, expected, what);
    } else {
      assert.ok(actual > 0 && actual <= expected, `${what}: ${actual} is not in (0, ${expected}]`);
    }
  }

  function assertAdmitted(decision: RateLimitDecision, limit: number, remaining: number): void {
    assert.equal(decision.allowed, true, "the hit is admitted");
    assert.equal(decision.limit, limit);
    assert.equal(decision.remaining, remaining, "remaining");
    assert.equal(decision.retryAfterMs, 0, "retryAfterMs of an admitted hit");
  }

  function assertRejected(decision: RateLimitDecision, limit: number): void {
    assert.equal(decision.allowed, false, "the hit is rejected");
    assert.equal(decision.limit, limit);
    assert.equal(decision.remaining, 0, "remaining");
    assert.ok(decision.retryAfterMs > 0, "retryAfterMs of a rejected hit is positive");
  }

  contract("answers ping", async (store) => {
    await store.ping();
  });

  contract("admits up to the limit, then rejects", async (store) => {
    const key = uniqueKey("contract-limit");
    for (const remaining of [2, 1, 0]) {
      const decision = await store.hit(key, 3, LONG_WINDOW_MS);
      assertAdmitted(decision, 3, remaining);
      assertTime(decision.resetAfterMs, LONG_WINDOW_MS, "resetAfterMs");
    }
    for (let i = 0; i < 2; i++) {
      const decision = await store.hit(key, 3, LONG_WINDOW_MS);
      assertRejected(decision, 3);
      assertTime(decision.retryAfterMs, LONG_WINDOW_MS, "retryAfterMs");
      assert.equal(decision.resetAfterMs, decision.retryAfterMs, "the oldest hit frees the slot");
    }
  });

  contract("counts each key on its own", async (store) => {
    const [first, second] = [uniqueKey("contract-keys"), uniqueKey("contract-keys")];
    const odd = `${uniqueKey("contract-keys")} /api/v1/tweets?q=a:b`;
    assertAdmitted(await store.hit(first, 1, LONG_WINDOW_MS), 1, 0);
    assertRejected(await store.hit(first, 1, LONG_WINDOW_MS), 1);
    assertAdmitted(await store.hit(second, 1, LONG_WINDOW_MS), 1, 0);
    assertAdmitted(await store.hit(odd, 2, LONG_WINDOW_MS), 2, 1);
    assertRejected(await store.hit(first, 1, LONG_WINDOW_MS), 1);
    assertRejected(await store.hit(second, 1, LONG_WINDOW_MS), 1);
    assertAdmitted(await store.hit(odd, 2, LONG_WINDOW_MS), 2, 0);
  });

  contract("frees a slot when the oldest hit leaves the window", async (store, elapse) => {
    const key = uniqueKey("contract-slide");
    const a = await store.hit(key, 2, W);
    assertAdmitted(a, 2, 1);
    assert.equal(a.resetAfterMs, W, "a lone hit leaves after the whole window");
    await elapse(W / 2);
    const b = await store.hit(key, 2, W);
    assertAdmitted(b, 2, 0);
    assertTime(b.resetAfterMs, W / 2, "resetAfterMs once the first hit is half a window old");
    const c = await store.hit(key, 2, W);
    assertRejected(c, 2);
    assertTime(c.retryAfterMs, W / 2, "retryAfterMs until the first hit leaves");
    assert.equal(c.resetAfterMs, c.retryAfterMs);

    await elapse(c.retryAfterMs);
    const d = await store.hit(key, 2, W);
    assertAdmitted(d, 2, 0);
    // The second hit is now the oldest; at least c.retryAfterMs passed since it.
    assertTime(d.resetAfterMs, W - c.retryAfterMs, "resetAfterMs until the second hit leaves");
    assertRejected(await store.hit(key, 2, W), 2);

    await elapse(W);
    const f = await store.hit(key, 2, W);
    assertAdmitted(f, 2, 1);
    assert.equal(f.resetAfterMs, W);
  });

  contract("does not record rejected hits", async (store, elapse) => {
    const key = uniqueKey("contract-rejected");
    assertAdmitted(await store.hit(key, 1, W), 1, 0);
    await elapse(W / 2);
    const rejected = await store.hit(key, 1, W);
    assertRejected(rejected, 1);
    assertTime(rejected.retryAfterMs, W / 2, "retryAfterMs");
    await elapse(rejected.retryAfterMs);
    // Had the rejected hit been recorded, it would still be in the window.
    const admitted = await store.hit(key, 1, W);
    assertAdmitted(admitted, 1, 0);
    assert.equal(admitted.resetAfterMs, W);
  });

  contract("waits for enough hits to leave when the limit is lowered", async (store, elapse) => {
    const key = uniqueKey("contract-lowered");
    assertAdmitted(await store.hit(key, 3, W), 3, 2);
    await elapse(W / 4);
    assertAdmitted(await store.hit(key, 3, W), 3, 1);
    await elapse(W / 4);
    assertAdmitted(await store.hit(key, 3, W), 3, 0);
    // Three hits in the window and a limit of 2: the first two must leave.
    const lowered = await store.hit(key, 2, W);
    assertRejected(lowered, 2);
    assertTime(lowered.resetAfterMs, W / 2, "resetAfterMs until the first hit leaves");
    assertTime(lowered.retryAfterMs, (3 * W) / 4, "retryAfterMs until the second hit leaves");
    assert.ok(lowered.retryAfterMs > lowered.resetAfterMs);
    assertAdmitted(await store.hit(key, 4, W), 4, 0);
  });

  contract("admits exactly the limit under concurrent hits", async (store) => {
    const key = uniqueKey("contract-concurrent");
    const decisions = await Promise.all(
      Array.from({ length: 50 }, () => store.hit(key, 10, LONG_WINDOW_MS)),
    );
    const admitted = decisions.filter((decision) => decision.allowed);
    assert.equal(admitted.length, 10);
    assert.deepEqual(
      admitted.map((decision) => decision.remaining).sort((x, y) => x - y),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    assert.ok(decisions.every((decision) => decision.allowed || decision.remaining === 0));
  });

  contract("rejects a limit or window that is not a positive integer", async (store) => {
    const key = uniqueKey("contract-arguments");
    for (
      const [limit, windowMs] of [
        [0, 1000],
        [-1, 1000],
        [1.5, 1000],
        [NaN, 1000],
        [
          Infinity,
          1000,
        ],
        [1, 0],
        [1, 2.5],
        [1, -1000],
      ] as const
    ) {
      await assert.rejects(
        store.hit(key, limit, windowMs),
        (error: unknown) => error instanceof RangeError && error.message.includes(key),
        `limit ${limit}, window ${windowMs}`,
      );
    }
    // Nothing was recorded by the refused calls.
    assertAdmitted(await store.hit(key, 1, LONG_WINDOW_MS), 1, 0);
  });

  Deno.test(`${name} refuses calls after close`, async () => {
    const { store } = await options.create();
    await store.close();
    await store.close();
    const closed = (error: unknown) =>
      error instanceof RateLimitStoreClosedError && error.code === "rate-limit-store-closed";
    await assert.rejects(store.ping(), closed);
    await assert.rejects(store.hit(uniqueKey("contract-closed"), 1, 1000), closed);
  });
}
