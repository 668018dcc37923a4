/**
 * The API gateway (seed: Spring Cloud Gateway): the one entry for clients.
 * It checks access tokens at the edge, rate-limits per route policy, and
 * proxies to the services found through discovery, behind a circuit
 * breaker per service.
 */
import { createOpenApiApp } from "../../shared/http/openapi.ts";
import { BalancedClient } from "../../shared/http/balanced_client.ts";
import { createServiceApp, HOT_PATH_LOG_SAMPLING } from "../../shared/http/service_app.ts";
import type { ServiceDiscovery } from "../../shared/discovery/service_discovery.ts";
import type { RateLimitStore } from "../../shared/rate_limit/rate_limit_store.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { RefreshableConfig } from "../../shared/config/refreshable_config.ts";
import { ConfigError } from "../../shared/config/setting.ts";
import { type AppConfig, parseRateLimitOverrides } from "../config.ts";
import type { InstanceCount } from "../../shared/discovery/instance_count.ts";
import { createGatewayRoutes } from "./app.ts";
import { ServiceBreakers } from "./breaker.ts";
import { registerDocs } from "./docs.ts";
import { PublicDescription } from "./public_description.ts";
import { ProblemSchema } from "../../shared/http/openapi.ts";
import type { BreakerOptions, GatewayRoute } from "./routes.ts";
import { DEFAULT_ROUTES, loadRouteFile, parseRouteText, RouteTableError } from "./routes.ts";

export interface GatewayDependencies {
  readonly config: AppConfig;
  readonly context: ServiceContext;
  readonly discovery: ServiceDiscovery;
  /** Shared by every gateway instance (Redis in production). */
  readonly rateLimitStore: RateLimitStore;
  /** For the issuer's discovery document and key set. @default globalThis.fetch */
  readonly fetch?: typeof fetch;
  /**
   * A fixed route table (tests); the configuration's is not followed then.
   * @default `gatewayRoutes(config)`, refreshed with the configuration
   */
  readonly routes?: readonly GatewayRoute[];
  /**
   * The gateways the registry lists (this one included): while the
   * rate-limit store fails, each admits its share of every limit.
   * @default this gateway alone
   */
  readonly gateways?: InstanceCount;
  /** The live configuration: its route table and rate limits apply to running routes. */
  readonly configuration?: RefreshableConfig<AppConfig>;
}

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

/**
 * The gateway's route table from configuration: GATEWAY_ROUTES, else the file
 * GATEWAY_ROUTES_FILE, else the built-in routes. Throws `RouteTableError` for
 * a bad file and `ConfigError` for a bad GATEWAY_ROUTES.
 */
export function gatewayRoutes(config: AppConfig): readonly GatewayRoute[] {
  if (config.gateway.routes !== "") {
    try {
      return parseRouteText(config.gateway.routes, "GATEWAY_ROUTES");
    } catch (error) {
      if (!(error instanceof RouteTableError)) throw error;
      throw new ConfigError([{ env: "GATEWAY_ROUTES", message: error.issues.join("; ") }]);
    }
  }
  return config.gateway.routesFile === ""
    ? DEFAULT_ROUTES
    : loadRouteFile(config.gateway.routesFile);
}

/** The breaker options of each service of `routes` (every route of a service agrees). */
function breakerOptionsOf(routes: readonly GatewayRoute[]): Map<string, BreakerOptions> {
  const options = new Map<string, BreakerOptions>();
  for (const route of routes) {
    if (!options.has(route.service)) options.set(route.service, route.breaker);
  }
  return options;
}

/** Creates the gateway; throws `RouteTableError` when the route file is invalid. */
export function createGatewayService(deps: GatewayDependencies): Service {
  const { config, context, discovery } = deps;
  const routesOf = (next: AppConfig) => deps.routes ?? gatewayRoutes(next);
  let routes = routesOf(config);
  let overrides = rateLimitOverrides(config, routes);
  const breakers = new ServiceBreakers({
    services: breakerOptionsOf(routes),
    logger: context.logger,
    metrics: context.metrics,
  });
  deps.configuration?.subscribe({
    // The new table and the rate limits are checked together: a limit may name a new policy.
    validate: (next) => void rateLimitOverrides(next, routesOf(next)),
    apply(next, previous) {
      if (next.gateway.routes !== previous.gateway.routes) {
        routes = routesOf(next);
        const replaced = breakers.configure(breakerOptionsOf(routes));
        gateway.setRoutes(routes);
        description.invalidate();
        context.logger.info(
          "Gateway routes changed: {routes}; circuit breakers started afresh for {services}",
          {
            routes: routes.map((route) =>
              `${route.prefix} -> ${route.service} (${route.timeoutMs} ms, ${route.retries} retries)`
            ),
            services: replaced,
          },
        );
      }
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
    ...(deps.gateways === undefined ? {} : { gatewayCount: deps.gateways.count }),
    ...(deps.fetch === undefined ? {} : { fetch: deps.fetch }),
  });
  const description = new PublicDescription({
    routes: () => routes,
    issuer: config.auth.oidcIssuer,
    fetchUpstream: (route, path) => clientFor(route).fetch(route.service, path),
    logger: context.logger,
    ...(deps.fetch === undefined ? {} : { fetch: deps.fetch }),
  });
  // What /ready and /metrics reveal (instances, limits, breakers) stays off the public port.
  const management = createOpenApiApp();
  const app = createServiceApp({
    context,
    management,
    bodyLimitBytes: config.process.bodyLimitBytes,
    readiness: gateway.readiness,
    successLogSampling: HOT_PATH_LOG_SAMPLING,
    description: "The one entry for clients: the public operations of every service behind " +
      "its route table, with its token check, rate limits and fallbacks",
    publishDescription: (own) => description.get(own),
  });
  // The problems the gateway answers itself refer to it.
  app.openAPIRegistry.register("Problem", ProblemSchema);
  registerDocs(app, { clientId: config.gateway.docsClientId });
  // Last: the route table's catch-all, undescribed by design (its operations are the
  // upstreams', merged into /openapi.json by PublicDescription).
  gateway.register(app);

  return {
    name: context.name,
    app,
    management: { app: management, port: config.gateway.managementPort },
    start() {
      context.logger.info("Gateway routes: {routes}", {
        routes: routes.map((route) => `${route.prefix} -> ${route.service}`),
      });
      return Promise.resolve();
    },
    stop() {
      breakers.shutdown();
      deps.gateways?.close();
      return Promise.resolve();
    },
  };
}
