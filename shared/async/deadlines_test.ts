import assert from "node:assert/strict";
import { Deadlines } from "./deadlines.ts";

Deno.test("Deadlines calls expire once the length has passed, and not for calls done before", async () => {
  const deadlines = new Deadlines(40);
  const expired: string[] = [];
  const started = performance.now();
  const doneEarly = deadlines.start(() => expired.push("early"));
  deadlines.start(() => expired.push("late"));
  doneEarly();
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(expired, []);
  const timings: number[] = [];
  await new Promise<void>((resolve) =>
    deadlines.start(() => {
      timings.push(performance.now() - started);
      resolve();
    })
  );
  assert.deepEqual(expired, ["late"]);
  // No deadline passes early.
  assert.ok(timings[0]! >= 40, `expired after ${timings[0]} ms`);
});

Deno.test("Deadlines leaves no timer once every call is done", () => {
  // Deno's test sanitizer fails this test if a timer is left.
  const deadlines = new Deadlines(1000);
  const calls = Array.from({ length: 3 }, () => deadlines.start(() => assert.fail("expired")));
  for (const done of calls) done();
});

Deno.test("Deadlines refuses a length that is not a positive number", () => {
  for (const ms of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => new Deadlines(ms), RangeError, String(ms));
  }
});
