/** The registry service: heartbeat-based service discovery (seed: Eureka). */
import type { JwtVerifier } from "../../shared/auth/jwt_verifier.ts";
import { createServiceApp } from "../../shared/http/service_app.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { AppConfig } from "../config.ts";
import {
  addRegistryRoutes,
  HEARTBEAT_ROUTE,
  INSTANCE_ROUTE,
  PROMETHEUS_TARGETS_ROUTE,
  requireRegistryToken,
} from "./app.ts";
import { type Clock, type InstanceChange, InstanceRegistry } from "./registry.ts";

export interface RegistryDependencies {
  readonly config: AppConfig;
  readonly context: ServiceContext;
  /**
   * Verifies the tokens of the registry API (audience `registry`); the
   * issuer's keys are fetched on the first request, so a registry started
   * beside its issuer does not wait for it.
   */
  readonly verifier: JwtVerifier;
  /** @default systemClock */
  readonly clock?: Clock;
  /**
   * Comment interval of watch streams.
   * @default 15_000
   */
  readonly pingMs?: number;
}

export function createRegistryService(deps: RegistryDependencies): Service {
  const { config, context } = deps;
  const { logger, metrics } = context;
  const registrations = metrics.counter(
    "registry_registrations_total",
    "Registrations accepted, new and replacing.",
  );
  const evictions = metrics.counter(
    "registry_evictions_total",
    "Instances evicted for missing their heartbeats.",
  );

  function onChange(change: InstanceChange) {
    const { instance } = change;
    const fields = {
      service: instance.service,
      instanceId: instance.instanceId,
      baseUrl: instance.baseUrl,
      version: instance.version,
    };
    switch (change.kind) {
      case "registered":
      case "replaced":
        registrations.inc();
        logger.info("{action} {service} instance {instanceId} at {baseUrl} (version {version})", {
          ...fields,
          action: change.kind === "registered" ? "Registered" : "Replaced",
        });
        break;
      case "deregistered":
        logger.info("Deregistered {service} instance {instanceId}", fields);
        break;
      case "evicted":
        evictions.inc();
        logger.warn(
          "Evicted {service} instance {instanceId}: no heartbeat for {silentMs} ms",
          { ...fields, silentMs: change.at - instance.lastHeartbeatAt },
        );
        break;
    }
  }

  const registry = new InstanceRegistry({
    ttlMs: config.registry.ttlMs,
    onChange,
    ...(deps.clock === undefined ? {} : { clock: deps.clock }),
  });
  metrics.gauge(
    "registry_instances",
    "Registered instances per registered service.",
    () =>
      registry.services().map(({ service, instances }) => ({
        // Not `service`: that is the target label of the registry itself.
        labels: { registered_service: service },
        value: instances,
      })),
  );
  const closing = new AbortController();
  const app = createServiceApp({
    context,
    bodyLimitBytes: config.process.bodyLimitBytes,
    quietRoutes: [HEARTBEAT_ROUTE, INSTANCE_ROUTE, PROMETHEUS_TARGETS_ROUTE],
  });
  requireRegistryToken(app, deps.verifier);
  addRegistryRoutes(app, {
    registry,
    closing: closing.signal,
    self: { service: context.name, instanceId: context.instanceId, version: context.version },
    ...(deps.pingMs === undefined ? {} : { pingMs: deps.pingMs }),
  });

  return {
    name: context.name,
    app,
    start() {
      logger.info("Evicting instances after {ttlMs} ms without a heartbeat", {
        ttlMs: config.registry.ttlMs,
      });
      return Promise.resolve();
    },
    stop() {
      closing.abort();
      registry.close();
      return Promise.resolve();
    },
  };
}
