/**
 * What a service is to the process that runs it: a Hono app to serve and a
 * background life (producing, consuming) to start and to stop gracefully.
 */
import type { Hono } from "hono";
import type { Logger } from "../log/log.ts";
import type { MetricsRegistry } from "../metrics/metrics.ts";

export interface Service {
  readonly name: string;
  readonly app: Hono;
  /**
   * Starts background work. Resolves once it runs; a dependency that is down
   * is retried (and reported by `/ready`) rather than failing the start.
   */
  start(): Promise<void>;
  /** Stops background work: stop taking new work, finish, flush, commit. */
  stop(): Promise<void>;
}

/** What every service gets from the process: its identity, logger and metrics. */
export interface ServiceContext {
  readonly name: string;
  readonly instanceId: string;
  readonly logger: Logger;
  readonly metrics: MetricsRegistry;
}
