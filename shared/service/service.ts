/**
 * What a service is to the process that runs it: a Hono app to serve and a
 * background life (producing, consuming) to start and to stop gracefully.
 */
import type { Hono } from "hono";
import type { Logger } from "../log/log.ts";
import type { MetricsRegistry } from "../metrics/metrics.ts";
import type { Tracer } from "../trace/tracing.ts";
import type { ConfigStatus } from "../config/refreshable_config.ts";

export interface Service {
  readonly name: string;
  readonly app: Hono;
  /**
   * Starts background work. Resolves once it runs; a dependency that is down
   * is retried (and reported by `/ready`) rather than failing the start.
   */
  start(): Promise<void>;
  /**
   * For a service whose registry metadata changes while it runs (the
   * partitions it answers for): calls `publish` with its current metadata at
   * once and at every change, and the process registers it again with them.
   * Without it the service registers with no metadata.
   */
  publishMetadata?(publish: (metadata: Readonly<Record<string, string>>) => void): void;
  /** Stops background work: stop taking new work, finish, flush, commit. */
  stop(): Promise<void>;
}

/** What every service gets from the process: its identity, logger, metrics and tracer. */
export interface ServiceContext {
  readonly name: string;
  readonly instanceId: string;
  /** The build's version, registered and reported on `/metrics` (`service_info`). */
  readonly version: string;
  readonly logger: Logger;
  readonly metrics: MetricsRegistry;
  /** Spans under the service's own `service.name`. */
  readonly tracer: Tracer;
  /**
   * The applied configuration's version and state, when it comes from the
   * config service: `/ready` and `/metrics` show it.
   */
  readonly configStatus?: () => ConfigStatus;
}
