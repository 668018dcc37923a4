/**
 * The gateway's routes: for each entry of the route table, a chain of
 * token check (per audience and roles), rate limit (per policy) and proxy
 * (through the service's circuit breaker). A path no route matches gets the
 * kernel's 404 problem. The table can be replaced while the gateway runs
 * (`setRoutes`): one handler dispatches each request to the chains of the
 * table current when it arrived.
 */
import type { Context, Hono, MiddlewareHandler } from "hono";
import { bearerAuth } from "../../shared/auth/bearer_auth.ts";
import { createJwtVerifier, type JwtVerifier } from "../../shared/auth/jwt_verifier.ts";
import type { BalancedClient } from "../../shared/http/balanced_client.ts";
import { rateLimit, type RateLimitMiddleware } from "../../shared/http/rate_limit.ts";
import { HTTP_ROUTE, type ReadinessCheck } from "../../shared/http/service_app.ts";
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
  /** The current rate-limit policies' checks, non-critical: `/ready` says degraded while one fails. */
  readiness(): readonly ReadinessCheck[];
  /** Adds the dispatcher of the route table to `app`. */
  register(app: Hono): void;
  /** Replaces the route table at once; requests already dispatched finish on the old one. */
  setRoutes(routes: readonly GatewayRoute[]): void;
}

interface Chain {
  readonly route: GatewayRoute;
  readonly handlers: readonly MiddlewareHandler[];
}

function matches(prefix: string, path: string): boolean {
  return prefix === "/" || path === prefix || path.startsWith(`${prefix}/`);
}

/** Runs `handlers` as Hono's compose does: a returned response becomes `c.res`. */
async function runChain(c: Context, handlers: readonly MiddlewareHandler[], index: number) {
  const handler = handlers[index];
  if (handler === undefined) return;
  const result = await handler(c, () => runChain(c, handlers, index + 1));
  if (result instanceof Response) c.res = result;
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
    // Counts are kept per policy name in the store, so a new limit keeps them.
    const key = `${policy}=${limit}/${windowMs}`;
    let found = limiters.get(key);
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
      limiters.set(key, found);
    }
    return found;
  }

  /** The chains of a table, the most specific prefix first. */
  function chainsOf(table: readonly GatewayRoute[]): { chains: Chain[]; limits: Set<string> } {
    const limits = new Set<string>();
    const chains = table.map((route) => {
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
      if (limit !== undefined) {
        handlers.push(limit);
        limits.add(
          `${route.rateLimit!.policy}=${route.rateLimit!.limit}/${route.rateLimit!.windowMs}`,
        );
      }
      handlers.push(proxy({
        route,
        client: options.clientFor(route),
        breakers: options.breakers,
        logger,
      }));
      return { route, handlers };
    });
    chains.sort((a, b) => b.route.prefix.length - a.route.prefix.length);
    return { chains, limits };
  }

  let current = chainsOf(routes);

  return {
    readiness: () => [...current.limits].map((key) => limiters.get(key)!.readiness),
    register(app) {
      app.all("*", async (c, next) => {
        const chain = current.chains.find(({ route }) => matches(route.prefix, c.req.path));
        if (chain === undefined) return await next();
        const { prefix } = chain.route;
        c.set(HTTP_ROUTE as never, (prefix === "/" ? "/*" : `${prefix}/*`) as never);
        await runChain(c, chain.handlers, 0);
        return c.res;
      });
    },
    setRoutes(table) {
      const next = chainsOf(table);
      current = next;
      // Limiters of policies no table uses any more are dropped.
      for (const key of limiters.keys()) if (!next.limits.has(key)) limiters.delete(key);
    },
  };
}
