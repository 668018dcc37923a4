/**
 * One circuit breaker (opossum) per upstream service. A call fails the
 * breaker when it throws (no instance, every attempt failed, timeout) or
 * when the upstream answers 5xx; a client that went away does not count.
 * While the circuit is open, calls fail fast with `CircuitOpenError` and
 * never reach the upstream; after `resetTimeoutMs` one call goes through
 * (half-open) and its outcome closes or reopens the circuit.
 */
import {
  type BreakerOptions,
  type BreakerState,
  Circuit,
  CircuitOpenError,
} from "../../shared/http/circuit_breaker.ts";
import type { Logger } from "../../shared/log/log.ts";
import type { MetricsRegistry } from "../../shared/metrics/metrics.ts";

export { type BreakerState, CircuitOpenError };

/** The `gateway_breaker_state` value of each state. */
export const BREAKER_STATE_VALUES: Readonly<Record<BreakerState, number>> = {
  closed: 0,
  "half-open": 1,
  open: 2,
};

/** Carries a 5xx response through the breaker, which counts it as a failure. */
class ServerErrorResponse extends Error {
  constructor(readonly response: Response) {
    super(`The upstream answered ${response.status}`);
    this.name = "ServerErrorResponse";
  }
}

type Call = () => Promise<Response>;

function isClientAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === "AbortError";
}

export interface ServiceBreakersOptions {
  /** Breaker options per service name. */
  readonly services: ReadonlyMap<string, BreakerOptions>;
  /** Logs every state change. */
  readonly logger: Logger;
  /** Registers `gateway_breaker_state{upstream}`. */
  readonly metrics?: MetricsRegistry;
}

export class ServiceBreakers {
  readonly #breakers = new Map<string, Circuit<Response>>();

  constructor(options: ServiceBreakersOptions) {
    const { logger } = options;
    for (const [service, breakerOptions] of options.services) {
      this.#breakers.set(
        service,
        new Circuit<Response>({
          ...breakerOptions,
          name: service,
          logger,
          // The balanced client times out each attempt itself, and cancels it.
          isNotFailure: isClientAbort,
        }),
      );
    }
    options.metrics?.gauge(
      "gateway_breaker_state",
      "Circuit breaker state per upstream service: 0 closed, 1 half-open, 2 open.",
      () =>
        [...this.#breakers.keys()].map((service) => ({
          labels: { upstream: service },
          value: BREAKER_STATE_VALUES[this.state(service)],
        })),
    );
  }

  state(service: string): BreakerState {
    const breaker = this.#breakers.get(service);
    if (breaker === undefined) throw new RangeError(`No circuit breaker for service '${service}'`);
    return breaker.state;
  }

  /**
   * Runs `call` through the service's breaker. Resolves with the upstream's
   * response, 5xx included (counted as a failure).
   *
   * @throws {CircuitOpenError} when the circuit is open (or half-open and busy)
   * @throws whatever `call` throws
   */
  async call(service: string, call: Call): Promise<Response> {
    const breaker = this.#breakers.get(service);
    if (breaker === undefined) throw new RangeError(`No circuit breaker for service '${service}'`);
    try {
      return await breaker.fire(async () => {
        const response = await call();
        if (response.status >= 500) throw new ServerErrorResponse(response);
        return response;
      });
    } catch (error) {
      if (error instanceof ServerErrorResponse) return error.response;
      throw error;
    }
  }

  /** Stops every breaker's timers. */
  shutdown(): void {
    for (const breaker of this.#breakers.values()) breaker.shutdown();
  }
}
