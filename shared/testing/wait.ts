/** Waiting in tests: for conditions with a deadline, never for fixed times as assertions. */
import assert from "node:assert/strict";

const DEADLINE_MS = 30_000;
const POLL_INTERVAL_MS = 10;

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` until it holds; fails the test once the deadline passes. */
export async function waitFor(
  description: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = DEADLINE_MS,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      assert.fail(`Timed out after ${timeoutMs} ms waiting for ${description}`);
    }
    await delay(POLL_INTERVAL_MS);
  }
}
