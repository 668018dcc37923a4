/**
 * The API gateway (seed: Spring Cloud Gateway): the one entry for clients.
 * It checks access tokens at the edge, rate-limits per route policy, and
 * proxies to the services found through discovery, behind a circuit
 * breaker per service.
 */
import { BalancedClient } from "../../shared/http/balanced_client.ts";
import { createServiceApp } from "../../shared/http/service_app.ts";
import type { ServiceDiscovery } from "../../shared/discovery/service_discovery.ts";
import type { RateLimitStore } from "../../shared/rate_limit/rate_limit_store.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { RefreshableConfig } from "../../shared/config/refreshable_config.ts";
import { ConfigError } from "../../shared/config/setting.ts";
import { type AppConfig, parseRateLimitOverrides } from "../config.ts";
import { createGatewayRoutes } from "./app.ts";
import { ServiceBreakers } from "./breaker.ts";
import type { BreakerOptions, GatewayRoute } from "./routes.ts";
import { DEFAULT_ROUTES, loadRouteFile } from "./routes.ts";

export interface GatewayDependencies {
  readonly config: AppConfig;
  readonly context: ServiceContext;
  readonly discovery: ServiceDiscovery;
  /** Shared by every gateway instance (Redis in production). */
  readonly rateLimitStore: RateLimitStore;
  /** For the issuer's discovery document and key set. @default globalThis.fetch */
  readonly fetch?: typeof fetch;
  /**
   * The route table.
   * @default the file `config.gateway.routesFile`, else `DEFAULT_ROUTES`
   */
  readonly routes?: readonly GatewayRoute[];
  /** The live configuration: its rate limits apply to running routes. */
  readonly configuration?: RefreshableConfig<AppConfig>;
}

/**
 * One in this many successful proxied requests is logged at info (errors and
 * requests a caller traces always are): at one line each, logging cost the
 * gateway more CPU than proxying (`bench:gateway`'s profile).
 */
const SUCCESS_LOG_SAMPLING = 100;

type RateLimitOverrides = ReturnType<typeof parseRateLimitOverrides>;

/** GATEWAY_RATE_LIMITS of `config`, checked against the route table; throws `ConfigError`. */
export function rateLimitOverrides(
  config: AppConfig,
  routes: readonly GatewayRoute[],
): RateLimitOverrides {
  const overrides = parseRateLimitOverrides(config.gateway.rateLimits);
  const policies = new Set(routes.flatMap((route) => route.rateLimit?.policy ?? []));
  const unknown = [...overrides.keys()].filter((policy) => !policies.has(policy));
  if (unknown.length > 0) {
    throw new ConfigError([{
      env: "GATEWAY_RATE_LIMITS",
      message: `names policies the route table does not have: ${unknown.join(", ")} (it has ${
        [...policies].join(", ")
      })`,
    }]);
  }
  return overrides;
}

/** The gateway's route table from configuration; throws `RouteTableError` for a bad file. */
export function gatewayRoutes(config: AppConfig): readonly GatewayRoute[] {
  return config.gateway.routesFile === ""
    ? DEFAULT_ROUTES
    : loadRouteFile(config.gateway.routesFile);
}

/** Creates the gateway; throws `RouteTableError` when the route file is invalid. */
export function createGatewayService(deps: GatewayDependencies): Service {
  const { config, context, discovery } = deps;
  const routes = deps.routes ?? gatewayRoutes(config);
  let overrides = rateLimitOverrides(config, routes);
  deps.configuration?.subscribe({
    validate: (next) => void rateLimitOverrides(next, routes),
    apply(next) {
      const applied = rateLimitOverrides(next, routes);
      const changed = [...new Set([...applied.keys(), ...overrides.keys()])].filter((policy) =>
        JSON.stringify(applied.get(policy)) !== JSON.stringify(overrides.get(policy))
      );
      overrides = applied;
      if (changed.length > 0) {
        context.logger.info("Rate limits changed for {policies}: {limits}", {
          policies: changed,
          limits: changed.map((policy) => {
            const limit = applied.get(policy);
            return limit === undefined
              ? `${policy}: the route table's`
              : `${policy}: ${limit.limit} per ${limit.windowMs} ms`;
          }),
        });
      }
    },
  });

  const breakerOptions = new Map<string, BreakerOptions>();
  for (const route of routes) {
    if (!breakerOptions.has(route.service)) breakerOptions.set(route.service, route.breaker);
  }
  const breakers = new ServiceBreakers({
    services: breakerOptions,
    logger: context.logger,
    metrics: context.metrics,
  });

  // One balanced client per timeout and retry count; the first one reports the client metrics.
  const clients = new Map<string, BalancedClient>();
  function clientFor(route: GatewayRoute): BalancedClient {
    const key = `${route.timeoutMs}/${route.retries}`;
    let client = clients.get(key);
    if (client === undefined) {
      client = new BalancedClient({
        discovery,
        timeoutMs: route.timeoutMs,
        retries: route.retries,
        logger: context.logger,
        tracer: context.tracer,
        ...(clients.size === 0 ? { metrics: context.metrics } : {}),
      });
      clients.set(key, client);
    }
    return client;
  }

  const gateway = createGatewayRoutes({
    routes,
    issuer: config.auth.oidcIssuer,
    rateLimitStore: deps.rateLimitStore,
    trustForwardedFor: config.gateway.trustForwardedFor,
    clientFor,
    breakers,
    logger: context.logger,
    metrics: context.metrics,
    rateLimitOverride: (policy) => overrides.get(policy),
    ...(deps.fetch === undefined ? {} : { fetch: deps.fetch }),
  });
  const app = createServiceApp({
    context,
    bodyLimitBytes: config.process.bodyLimitBytes,
    readiness: gateway.readiness,
    successLogSampling: SUCCESS_LOG_SAMPLING,
  });
  gateway.register(app);

  return {
    name: context.name,
    app,
    start() {
      context.logger.info("Gateway routes: {routes}", {
        routes: routes.map((route) => `${route.prefix} -> ${route.service}`),
      });
      return Promise.resolve();
    },
    stop() {
      breakers.shutdown();
      return Promise.resolve();
    },
  };
}
