/**
 * The gateway's routes: for each entry of the route table, a chain of
 * token check (per audience and roles), rate limit (per policy) and proxy
 * (through the service's circuit breaker). A path no route matches gets the
 * kernel's 404 problem.
 */
import type { Hono, MiddlewareHandler } from "hono";
import { bearerAuth } from "../../shared/auth/bearer_auth.ts";
import { createJwtVerifier, type JwtVerifier } from "../../shared/auth/jwt_verifier.ts";
import type { BalancedClient } from "../../shared/http/balanced_client.ts";
import { rateLimit, type RateLimitMiddleware } from "../../shared/http/rate_limit.ts";
import type { ReadinessCheck } from "../../shared/http/service_app.ts";
import type { Logger } from "../../shared/log/log.ts";
import type { MetricsRegistry } from "../../shared/metrics/metrics.ts";
import type { RateLimitStore } from "../../shared/rate_limit/rate_limit_store.ts";
import type { ServiceBreakers } from "./breaker.ts";
import { clientAddress, proxy } from "./proxy.ts";
import type { GatewayRoute } from "./routes.ts";

export interface GatewayRoutesOptions {
  readonly routes: readonly GatewayRoute[];
  /** The issuer whose tokens are accepted. */
  readonly issuer: string;
  readonly rateLimitStore: RateLimitStore;
  /** Whether the rate-limit key trusts the last X-Forwarded-For entry. */
  readonly trustForwardedFor: boolean;
  /** The balanced client for each route (by timeout and retries). */
  readonly clientFor: (route: GatewayRoute) => BalancedClient;
  readonly breakers: ServiceBreakers;
  readonly logger: Logger;
  readonly metrics: MetricsRegistry;
  /** For the issuer's discovery document and key set. */
  readonly fetch?: typeof fetch;
  /**
   * The live limit and window of a policy, read on every request (the
   * configuration's GATEWAY_RATE_LIMITS); undefined: the route table's.
   */
  /** The gateways sharing the rate limits while their store fails. @default () => 1 */
  readonly gatewayCount?: () => number;
  readonly rateLimitOverride?: (policy: string) => { limit: number; windowMs: number } | undefined;
}

export interface GatewayRoutes {
  /** The rate-limit stores' checks, non-critical: `/ready` says degraded while one fails. */
  readonly readiness: readonly ReadinessCheck[];
  /** Adds every route to `app`, the most specific prefix first. */
  register(app: Hono): void;
}

/** Builds the middleware of every route, sharing verifiers per audience and limits per policy. */
export function createGatewayRoutes(options: GatewayRoutesOptions): GatewayRoutes {
  const { routes, issuer, logger } = options;
  const verifiers = new Map<string, JwtVerifier>();
  const limiters = new Map<string, RateLimitMiddleware>();

  function verifier(audience: string): JwtVerifier {
    let found = verifiers.get(audience);
    if (found === undefined) {
      found = createJwtVerifier({
        issuer,
        audience,
        ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
      });
      verifiers.set(audience, found);
    }
    return found;
  }

  function limiter(route: GatewayRoute): RateLimitMiddleware | undefined {
    if (route.rateLimit === undefined) return undefined;
    const { policy, limit, windowMs } = route.rateLimit;
    let found = limiters.get(policy);
    if (found === undefined) {
      found = rateLimit({
        store: options.rateLimitStore,
        policy: () => {
          const override = options.rateLimitOverride?.(policy);
          return override === undefined
            ? { name: policy, limit, windowMs }
            : { name: policy, limit: override.limit, windowMs: override.windowMs };
        },
        logger,
        metrics: options.metrics,
        instanceNoun: "gateway",
        ...(options.gatewayCount === undefined ? {} : { sharing: options.gatewayCount }),
        ...(options.trustForwardedFor ? { trustForwardedFor: true } : {}),
        ...(options.trustForwardedFor ? {} : {
          key: (c) => {
            const token: unknown = c.get("accessToken");
            const subject = typeof token === "object" && token !== null && "subject" in token
              ? token.subject
              : undefined;
            return typeof subject === "string" && subject !== ""
              ? `subject:${subject}`
              : `address:${clientAddress(c)}`;
          },
        }),
      });
      limiters.set(policy, found);
    }
    return found;
  }

  const chains = routes.map((route) => {
    const handlers: MiddlewareHandler[] = [];
    const { auth } = route;
    if (auth.mode !== "none") {
      handlers.push(
        bearerAuth({
          verifier: verifier(auth.audience),
          ...(auth.mode === "anyRole" ? { anyRole: auth.roles } : {}),
        }) as unknown as MiddlewareHandler,
      );
    }
    const limit = limiter(route);
    if (limit !== undefined) handlers.push(limit);
    return { route, handlers };
  });

  return {
    readiness: [...limiters.values()].map((limit) => limit.readiness),
    register(app) {
      const bySpecificity = [...chains].sort((a, b) =>
        b.route.prefix.length - a.route.prefix.length
      );
      for (const { route, handlers } of bySpecificity) {
        const handler = proxy({
          route,
          client: options.clientFor(route),
          breakers: options.breakers,
          logger,
        });
        const paths = route.prefix === "/" ? ["/*"] : [route.prefix, `${route.prefix}/*`];
        // Hono's typed overloads take a fixed number of handlers; the chain's length varies.
        const all = app.all.bind(app) as unknown as (
          path: string,
          ...chain: MiddlewareHandler[]
        ) => void;
        for (const path of paths) all(path, ...handlers, handler);
      }
    },
  };
}
