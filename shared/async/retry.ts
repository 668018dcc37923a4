import type { Logger } from "../log/log.ts";

export interface RetryOptions {
  /** What is attempted, for the log: "create topic twitter-topic". */
  readonly action: string;
  readonly logger: Logger;
  /** Aborting stops retrying; the pending attempt's failure is rethrown. */
  readonly signal?: AbortSignal;
  /** @default 200 */
  readonly initialDelayMs?: number;
  /** @default 10_000 */
  readonly maxDelayMs?: number;
}

export class RetryAbortedError extends Error {
  readonly code = "retry-aborted";
  constructor(action: string, options: { cause: unknown }) {
    super(`Cannot ${action}: stopped while retrying`, options);
    this.name = "RetryAbortedError";
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Retries `attempt` with exponential back-off and full jitter until it
 * succeeds or `signal` aborts, logging every failure loudly: a dependency that
 * is down is waited for, never silently replaced.
 */
export async function retryUntilDone<T>(
  attempt: () => Promise<T>,
  options: RetryOptions,
): Promise<T> {
  const { initialDelayMs = 200, maxDelayMs = 10_000 } = options;
  for (let failures = 0;; failures++) {
    try {
      return await attempt();
    } catch (error) {
      if (options.signal?.aborted) throw new RetryAbortedError(options.action, { cause: error });
      const ceiling = Math.min(maxDelayMs, initialDelayMs * 2 ** failures);
      const delayMs = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
      options.logger.warn("Cannot {action}, retrying in {delayMs} ms (failure {failures})", {
        action: options.action,
        delayMs,
        failures: failures + 1,
        error,
      });
      await sleep(delayMs, options.signal);
      if (options.signal?.aborted) throw new RetryAbortedError(options.action, { cause: error });
    }
  }
}
