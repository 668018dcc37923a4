/**
 * One circuit breaker (opossum) per upstream service. A call fails the
 * breaker when it throws (every attempt failed, timeout) or when the
 * upstream answers 5xx. A client that went away does not count, nor does a
 * service with no instance registered: no upstream was called (an instance
 * that registers a moment later, as at start, must find its circuit closed).
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
import { NoInstanceError } from "../../shared/http/balanced_client.ts";
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

/** Failures that say nothing of the upstream's health. */
function isNotUpstreamFailure(error: unknown): boolean {
  return (error instanceof DOMException && error.name === "AbortError") ||
    error instanceof NoInstanceError;
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
  /** The options each breaker was made with, to tell a change. */
  readonly #options = new Map<string, string>();
  readonly #logger: Logger;

  constructor(options: ServiceBreakersOptions) {
    this.#logger = options.logger;
    this.configure(options.services);
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

  /**
   * Takes new options per service (a refreshed route table). A breaker whose
   * options changed is replaced by a fresh, closed one: opossum reads its
   * options only when built, so its state and rolling counts start over. A
   * service no longer listed loses its breaker; the others keep theirs.
   * Returns the services whose breaker was replaced, added or removed.
   */
  configure(services: ReadonlyMap<string, BreakerOptions>): string[] {
    const changed: string[] = [];
    for (const [service, breakerOptions] of services) {
      const key = JSON.stringify(breakerOptions);
      if (this.#options.get(service) === key) continue;
      // Calls already running finish on the old breaker; new ones use the new.
      this.#breakers.get(service)?.shutdown();
      this.#breakers.set(
        service,
        new Circuit<Response>({
          ...breakerOptions,
          name: service,
          logger: this.#logger,
          // The balanced client times out each attempt itself, and cancels it.
          isNotFailure: isNotUpstreamFailure,
        }),
      );
      this.#options.set(service, key);
      changed.push(service);
    }
    for (const [service, breaker] of this.#breakers) {
      if (services.has(service)) continue;
      breaker.shutdown();
      this.#breakers.delete(service);
      this.#options.delete(service);
      changed.push(service);
    }
    return changed;
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
