/**
 * The gateway's route table: which path prefixes go to which service, with
 * what authentication, rate limit, circuit breaker, timeout and retries.
 *
 * The built-in table is `DEFAULT_ROUTES`; `GATEWAY_ROUTES_FILE` names a JSON
 * file that replaces it, validated at start by `parseRouteTable`, and
 * `GATEWAY_ROUTES` carries the table itself (JSON or YAML, from the config
 * service's repository, refreshable while the gateway runs):
 *
 * ```json
 * {
 *   "routes": [
 *     {
 *       "prefix": "/api/v1/tweets",            // required: matches the path and its sub-paths
 *       "service": "query",                    // required: the service name in discovery
 *       "rewrite": { "prefix": "/v1/tweets" }, // optional: replaces the matched prefix upstream
 *       "auth": { "mode": "authenticated", "audience": "query" },
 *               // or { "mode": "none" }
 *               // or { "mode": "anyRole", "roles": ["app_admin_role"], "audience": "stream" }
 *       "rateLimit": { "policy": "tweets", "limit": 600, "windowMs": 60000 }, // optional
 *       "breaker": {                           // optional, per service (every route of a
 *         "errorThresholdPercentage": 50,      // service must agree)
 *         "volumeThreshold": 5,
 *         "resetTimeoutMs": 10000,
 *         "rollingCountTimeoutMs": 10000
 *       },
 *       "timeoutMs": 5000,                     // optional: per attempt, until response headers
 *       "retries": 2,                          // optional: idempotent requests only
 *       "fallback": { "retryAfterSec": 10 }    // optional: Retry-After of the 503 fallback
 *     }
 *   ]
 * }
 * ```
 *
 * Routes sharing a rate-limit policy name share its counts and must agree on
 * its limit and window.
 */
import { parse as parseYaml } from "yaml";
import type { BreakerOptions } from "../../shared/http/circuit_breaker.ts";

export type RouteAuth =
  | { readonly mode: "none" }
  | { readonly mode: "authenticated"; readonly audience: string }
  | { readonly mode: "anyRole"; readonly roles: readonly string[]; readonly audience: string };

export interface RouteRateLimit {
  /** Counts are kept per policy name (and caller). */
  readonly policy: string;
  readonly limit: number;
  readonly windowMs: number;
}

export type { BreakerOptions };

export interface GatewayRoute {
  readonly prefix: string;
  readonly service: string;
  /** Replaces `prefix` with `rewrite.prefix` in the upstream path; unchanged when absent. */
  readonly rewrite?: { readonly prefix: string };
  readonly auth: RouteAuth;
  readonly rateLimit?: RouteRateLimit;
  readonly breaker: BreakerOptions;
  /** Per attempt, until the upstream's response headers arrive. */
  readonly timeoutMs: number;
  /** Attempts after the first, for idempotent requests without a stream body. */
  readonly retries: number;
  readonly fallback: { readonly retryAfterSec: number };
}

export const DEFAULT_BREAKER: BreakerOptions = {
  errorThresholdPercentage: 50,
  volumeThreshold: 5,
  resetTimeoutMs: 10_000,
  rollingCountTimeoutMs: 10_000,
};

const DEFAULT_TIMEOUT_MS = 5000;
const DEFAULT_RETRIES = 2;

/** A route with the default breaker, timeout, retries and fallback. */
function route(
  prefix: string,
  service: string,
  auth: RouteAuth,
  rateLimit: RouteRateLimit,
): GatewayRoute {
  return {
    prefix,
    service,
    auth,
    rateLimit,
    breaker: DEFAULT_BREAKER,
    timeoutMs: DEFAULT_TIMEOUT_MS,
    retries: DEFAULT_RETRIES,
    fallback: { retryAfterSec: DEFAULT_BREAKER.resetTimeoutMs / 1000 },
  };
}

function tweetsRoute(prefix: string): GatewayRoute {
  return route(prefix, "query", { mode: "authenticated", audience: "query" }, {
    policy: "tweets",
    limit: 600,
    windowMs: 60_000,
  });
}

export const DEFAULT_ROUTES: readonly GatewayRoute[] = [
  tweetsRoute("/api/tweets"),
  tweetsRoute("/api/v1/tweets"),
  tweetsRoute("/api/v2/tweets"),
  route(
    "/api/v1/permissions",
    "query",
    { mode: "anyRole", roles: ["app_admin_role", "app_super_user_role"], audience: "query" },
    { policy: "permissions", limit: 60, windowMs: 60_000 },
  ),
  route(
    "/api/v1/stream",
    "stream",
    { mode: "anyRole", roles: ["app_admin_role"], audience: "stream" },
    { policy: "stream", limit: 60, windowMs: 60_000 },
  ),
  route("/api/v1/words", "wordcount", { mode: "authenticated", audience: "wordcount" }, {
    policy: "words",
    limit: 600,
    windowMs: 60_000,
  }),
  route("/api/v1/analytics", "analytics", { mode: "authenticated", audience: "analytics" }, {
    policy: "analytics",
    limit: 600,
    windowMs: 60_000,
  }),
];

/** The route table is invalid; the message names the file and the field. */
export class RouteTableError extends Error {
  readonly code = "invalid-route-table";
  constructor(readonly source: string, readonly issues: readonly string[]) {
    super(`Cannot load the gateway routes from ${source}: ${issues.join("; ")}`);
    this.name = "RouteTableError";
  }
}

/** Prefixes are literal paths: no Hono pattern characters, no trailing slash. */
const PREFIX = /^(\/[A-Za-z0-9._~!$&'()+,;=@%-]+)+$|^\/$/;
const SERVICE = /^[a-z0-9][a-z0-9-]{0,62}$/;
const POLICY = /^[A-Za-z0-9._-]+$/;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Collects issues while reading one untrusted JSON value. */
class Reader {
  readonly issues: string[] = [];

  fail(field: string, rule: string, value: unknown): undefined {
    this.issues.push(`'${field}' must be ${rule}: got ${JSON.stringify(value) ?? "nothing"}`);
    return undefined;
  }

  object(field: string, value: unknown, known: readonly string[]): Json | undefined {
    if (!isObject(value)) return this.fail(field, "an object", value);
    for (const key of Object.keys(value)) {
      if (!known.includes(key)) {
        this.issues.push(`'${field}.${key}' is not a known field (known: ${known.join(", ")})`);
      }
    }
    return value;
  }

  text(field: string, value: unknown, pattern: RegExp, rule: string): string | undefined {
    return typeof value === "string" && pattern.test(value) ? value : this.fail(field, rule, value);
  }

  integer(field: string, value: unknown, min: number, max: number): number | undefined {
    return Number.isSafeInteger(value) && (value as number) >= min && (value as number) <= max
      ? value as number
      : this.fail(field, `an integer from ${min} to ${max}`, value);
  }
}

function readAuth(read: Reader, field: string, value: unknown): RouteAuth | undefined {
  const auth = read.object(field, value, ["mode", "audience", "roles"]);
  if (auth === undefined) return undefined;
  if (auth.mode === "none") return { mode: "none" };
  if (auth.mode !== "authenticated" && auth.mode !== "anyRole") {
    return read.fail(`${field}.mode`, "'none', 'authenticated' or 'anyRole'", auth.mode);
  }
  const audience = read.text(`${field}.audience`, auth.audience, /^\S+$/, "an audience name");
  if (auth.mode === "authenticated") {
    return audience === undefined ? undefined : { mode: "authenticated", audience };
  }
  const roles = auth.roles;
  if (
    !Array.isArray(roles) || roles.length === 0 ||
    !roles.every((role) => typeof role === "string" && /^\S+$/.test(role))
  ) {
    return read.fail(`${field}.roles`, "a non-empty list of role names", roles);
  }
  return audience === undefined ? undefined : { mode: "anyRole", roles, audience };
}

function readBreaker(read: Reader, field: string, value: unknown): BreakerOptions | undefined {
  if (value === undefined) return DEFAULT_BREAKER;
  const known = Object.keys(DEFAULT_BREAKER);
  const breaker = read.object(field, value, known);
  if (breaker === undefined) return undefined;
  const percentage = breaker.errorThresholdPercentage ?? DEFAULT_BREAKER.errorThresholdPercentage;
  const volume = breaker.volumeThreshold ?? DEFAULT_BREAKER.volumeThreshold;
  const reset = breaker.resetTimeoutMs ?? DEFAULT_BREAKER.resetTimeoutMs;
  const rolling = breaker.rollingCountTimeoutMs ?? DEFAULT_BREAKER.rollingCountTimeoutMs;
  const result = {
    errorThresholdPercentage: read.integer(`${field}.errorThresholdPercentage`, percentage, 1, 100),
    volumeThreshold: read.integer(`${field}.volumeThreshold`, volume, 1, 1_000_000),
    resetTimeoutMs: read.integer(`${field}.resetTimeoutMs`, reset, 1, 3_600_000),
    rollingCountTimeoutMs: read.integer(`${field}.rollingCountTimeoutMs`, rolling, 10, 3_600_000),
  };
  return Object.values(result).includes(undefined) ? undefined : result as BreakerOptions;
}

function readRoute(read: Reader, field: string, value: unknown): GatewayRoute | undefined {
  const route = read.object(field, value, [
    "prefix",
    "service",
    "rewrite",
    "auth",
    "rateLimit",
    "breaker",
    "timeoutMs",
    "retries",
    "fallback",
  ]);
  if (route === undefined) return undefined;
  const prefixRule = "a path starting with '/', without a trailing '/', '*', ':', '?' or braces";
  const prefix = read.text(`${field}.prefix`, route.prefix, PREFIX, prefixRule);
  const service = read.text(
    `${field}.service`,
    route.service,
    SERVICE,
    "a service name (lower-case letters, digits, '-')",
  );
  let rewrite: { prefix: string } | undefined;
  if (route.rewrite !== undefined) {
    const raw = read.object(`${field}.rewrite`, route.rewrite, ["prefix"]);
    if (raw !== undefined) {
      const target = raw.prefix === "" ? "" : read.text(
        `${field}.rewrite.prefix`,
        raw.prefix,
        PREFIX,
        `'' or ${prefixRule}`,
      );
      if (target !== undefined) rewrite = { prefix: target };
    }
  }
  const auth = readAuth(read, `${field}.auth`, route.auth);
  let rateLimit: RouteRateLimit | undefined;
  if (route.rateLimit !== undefined) {
    const raw = read.object(`${field}.rateLimit`, route.rateLimit, ["policy", "limit", "windowMs"]);
    if (raw !== undefined) {
      const policy = read.text(
        `${field}.rateLimit.policy`,
        raw.policy,
        POLICY,
        "a policy name (letters, digits, '.', '_', '-')",
      );
      const limit = read.integer(`${field}.rateLimit.limit`, raw.limit, 1, 1_000_000_000);
      const windowMs = read.integer(`${field}.rateLimit.windowMs`, raw.windowMs, 1, 86_400_000);
      if (policy !== undefined && limit !== undefined && windowMs !== undefined) {
        rateLimit = { policy, limit, windowMs };
      }
    }
  }
  const breaker = readBreaker(read, `${field}.breaker`, route.breaker);
  const timeoutMs = read.integer(
    `${field}.timeoutMs`,
    route.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    1,
    600_000,
  );
  const retries = read.integer(`${field}.retries`, route.retries ?? DEFAULT_RETRIES, 0, 10);
  let retryAfterSec: number | undefined = Math.max(
    1,
    Math.ceil((breaker?.resetTimeoutMs ?? DEFAULT_BREAKER.resetTimeoutMs) / 1000),
  );
  if (route.fallback !== undefined) {
    const raw = read.object(`${field}.fallback`, route.fallback, ["retryAfterSec"]);
    retryAfterSec = raw === undefined
      ? undefined
      : read.integer(`${field}.fallback.retryAfterSec`, raw.retryAfterSec, 0, 86_400);
  }
  if (
    prefix === undefined || service === undefined || auth === undefined ||
    breaker === undefined || timeoutMs === undefined || retries === undefined ||
    retryAfterSec === undefined
  ) {
    return undefined;
  }
  return {
    prefix,
    service,
    ...(rewrite === undefined ? {} : { rewrite }),
    auth,
    ...(rateLimit === undefined ? {} : { rateLimit }),
    breaker,
    timeoutMs,
    retries,
    fallback: { retryAfterSec },
  };
}

/** Checks what single routes cannot: unique prefixes, agreeing policies and breakers. */
function checkTable(read: Reader, routes: readonly GatewayRoute[]): void {
  const prefixes = new Map<string, number>();
  const policies = new Map<string, { index: number; limit: number; windowMs: number }>();
  const breakers = new Map<string, { index: number; options: BreakerOptions }>();
  routes.forEach((route, index) => {
    const first = prefixes.get(route.prefix);
    if (first !== undefined) {
      read.issues.push(
        `'routes[${index}].prefix' repeats routes[${first}].prefix '${route.prefix}'`,
      );
    } else {
      prefixes.set(route.prefix, index);
    }
    if (route.rateLimit !== undefined) {
      const { policy, limit, windowMs } = route.rateLimit;
      const known = policies.get(policy);
      if (known === undefined) {
        policies.set(policy, { index, limit, windowMs });
      } else if (known.limit !== limit || known.windowMs !== windowMs) {
        read.issues.push(
          `'routes[${index}].rateLimit' must have the limit and window of routes[${known.index}] ` +
            `for policy '${policy}'`,
        );
      }
    }
    const breaker = breakers.get(route.service);
    if (breaker === undefined) {
      breakers.set(route.service, { index, options: route.breaker });
    } else if (JSON.stringify(breaker.options) !== JSON.stringify(route.breaker)) {
      read.issues.push(
        `'routes[${index}].breaker' must equal routes[${breaker.index}].breaker: ` +
          `the breaker is per service ('${route.service}')`,
      );
    }
  });
}

/** Validates an untrusted route table; throws `RouteTableError` naming every bad field. */
export function parseRouteTable(value: unknown, source: string): GatewayRoute[] {
  const read = new Reader();
  const table = isObject(value) ? value : undefined;
  if (table === undefined) {
    read.issues.push(
      `the route table must be an object with 'routes': got ${JSON.stringify(value)}`,
    );
  } else {
    const extra = Object.keys(table).filter((key) => key !== "routes");
    if (extra.length > 0) read.issues.push(`'${extra[0]}' is not a known field (known: routes)`);
  }
  const raw = table?.routes;
  if (table !== undefined && (!Array.isArray(raw) || raw.length === 0)) {
    read.fail("routes", "a non-empty list of routes", raw);
  }
  const routes: GatewayRoute[] = [];
  if (Array.isArray(raw)) {
    raw.forEach((item, index) => {
      const route = readRoute(read, `routes[${index}]`, item);
      if (route !== undefined) routes.push(route);
    });
  }
  if (read.issues.length === 0) checkTable(read, routes);
  if (read.issues.length > 0) throw new RouteTableError(source, read.issues);
  return routes;
}

/** Reads and validates the route file; throws `RouteTableError`. */
export function loadRouteFile(path: string): GatewayRoute[] {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    throw new RouteTableError(path, [
      `the file cannot be read: ${error instanceof Error ? error.message : String(error)}`,
    ]);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new RouteTableError(path, [
      `the file is not JSON: ${error instanceof Error ? error.message : String(error)}`,
    ]);
  }
  return parseRouteTable(json, path);
}

/** Reads and validates a route table written as JSON or YAML text; throws `RouteTableError`. */
export function parseRouteText(text: string, source: string): GatewayRoute[] {
  let value: unknown;
  try {
    // JSON is YAML: one parser reads both.
    value = parseYaml(text);
  } catch (error) {
    throw new RouteTableError(source, [
      `the text is neither JSON nor YAML: ${
        error instanceof Error ? error.message : String(error)
      }`,
    ]);
  }
  return parseRouteTable(value, source);
}

/** The upstream path for a request path the route matched, with the query unchanged. */
export function upstreamPath(route: GatewayRoute, path: string): string {
  if (route.rewrite === undefined) return path;
  const rest = route.prefix === "/" ? path : path.slice(route.prefix.length);
  const rewritten = route.rewrite.prefix + rest;
  return rewritten.startsWith("/") ? rewritten : `/${rewritten}`;
}
