/**
 * Circuit breakers (opossum) for calls to another service: while the circuit
 * is open, calls fail fast with `CircuitOpenError` and never reach the
 * upstream; after `resetTimeoutMs` one call goes through (half-open) and its
 * outcome closes or reopens the circuit. Every state change is logged.
 */
// @ts-types="npm:@types/opossum@8.1.9"
import CircuitBreaker from "opossum";
import type { Logger } from "../log/log.ts";

export interface BreakerOptions {
  /** Failure percentage in the rolling window that opens the circuit. */
  readonly errorThresholdPercentage: number;
  /** Fewest calls in the rolling window before the circuit may open. */
  readonly volumeThreshold: number;
  /** How long the circuit stays open before it lets one call through (half-open). */
  readonly resetTimeoutMs: number;
  /** The rolling window of the failure statistics. */
  readonly rollingCountTimeoutMs: number;
}

export type BreakerState = "closed" | "half-open" | "open";

export class CircuitOpenError extends Error {
  readonly code = "circuit-open";
  constructor(readonly service: string) {
    super(`Cannot call ${service}: its circuit is open`);
    this.name = "CircuitOpenError";
  }
}

export interface CircuitOptions extends BreakerOptions {
  /** Named in logs and in `CircuitOpenError`. */
  readonly name: string;
  readonly logger: Logger;
  /** A call still running after this long fails (and counts as a failure). @default none */
  readonly timeoutMs?: number;
  /** Errors that do not count as failures (they still reject the call). */
  readonly isNotFailure?: (error: unknown) => boolean;
}

/** One circuit around calls that resolve to `T`. */
export class Circuit<T> {
  readonly #name: string;
  readonly #breaker: CircuitBreaker<[() => Promise<T>], T>;

  constructor(options: CircuitOptions) {
    const { name, logger, resetTimeoutMs } = options;
    this.#name = name;
    this.#breaker = new CircuitBreaker<[() => Promise<T>], T>((call) => call(), {
      name,
      timeout: options.timeoutMs ?? false,
      errorThresholdPercentage: options.errorThresholdPercentage,
      volumeThreshold: options.volumeThreshold,
      resetTimeout: resetTimeoutMs,
      rollingCountTimeout: options.rollingCountTimeoutMs,
      // Only the failure counts decide; opossum's latency percentiles sorted every
      // latency of the window each second, and its snapshot events had no listener.
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
      ...(options.isNotFailure === undefined ? {} : { errorFilter: options.isNotFailure }),
    });
    this.#breaker.on("open", () => {
      logger.warn("Circuit of {service} opened; calls fail fast for {resetTimeoutMs} ms", {
        service: name,
        resetTimeoutMs,
      });
    });
    this.#breaker.on("halfOpen", () => {
      logger.info("Circuit of {service} half-open: the next call tries the upstream", {
        service: name,
      });
    });
    this.#breaker.on("close", () => {
      logger.info("Circuit of {service} closed: the upstream answers again", { service: name });
    });
  }

  get state(): BreakerState {
    if (this.#breaker.opened) return "open";
    return this.#breaker.halfOpen ? "half-open" : "closed";
  }

  /**
   * Runs `call` through the circuit.
   *
   * @throws {CircuitOpenError} when the circuit is open (or half-open and busy)
   * @throws whatever `call` throws, or opossum's timeout error
   */
  async fire(call: () => Promise<T>): Promise<T> {
    try {
      return await this.#breaker.fire(call);
    } catch (error) {
      if ((error as { code?: unknown })?.code === "EOPENBREAKER") {
        throw new CircuitOpenError(this.#name);
      }
      throw error;
    }
  }

  /** Stops the circuit's timers. */
  shutdown(): void {
    this.#breaker.shutdown();
  }
}
