import assert from "node:assert/strict";
import { isoTime } from "./iso_time.ts";

Deno.test("isoTime formats as toISOString does, across days, years and the epoch", () => {
  const times = [
    0,
    1,
    999,
    Date.UTC(2026, 10, 24, 10, 0, 20),
    Date.UTC(2026, 10, 24, 23, 59, 59, 999),
    Date.UTC(2026, 10, 25, 0, 0, 0, 5),
    Date.UTC(2024, 1, 29, 12, 34, 56, 78),
    Date.UTC(1969, 11, 31, 23, 59, 59, 990),
    Date.UTC(12_000, 0, 1, 1, 2, 3, 40),
    8.64e15,
    -8.64e15,
    1234.75,
  ];
  // Every time twice, in an order that changes day on most calls.
  for (const ms of [...times, ...times.toReversed()]) {
    assert.equal(isoTime(ms), new Date(ms).toISOString(), String(ms));
  }
  for (let ms = Date.UTC(2026, 0, 1); ms < Date.UTC(2026, 0, 3); ms += 1_234_567) {
    assert.equal(isoTime(ms), new Date(ms).toISOString(), String(ms));
  }
});

Deno.test("isoTime refuses an invalid time as toISOString does", () => {
  assert.throws(() => isoTime(Number.NaN), RangeError);
  assert.throws(() => isoTime(8.64e15 + 1), RangeError);
  assert.throws(() => isoTime(Number.POSITIVE_INFINITY), RangeError);
});
