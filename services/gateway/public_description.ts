/**
 * The gateway's public OpenAPI 3.1 description: its own routes, and for each
 * route of its table the operations the upstream service describes at its
 * own `/openapi.json`, at the paths the table maps them to, with what the
 * gateway adds to each (OAuth 2 security from the issuer's discovery
 * document, the rate-limit fields and 429, the 401/403 of its token check,
 * the 503 fallback and the 413 of its body limit).
 *
 * The merge works on fetched JSON only: no service's code is imported. It is
 * built when `/openapi.json` is asked for, never on a proxied request, and
 * kept until the route table changes or its time to live passes. An upstream
 * that cannot be read leaves its paths out and is listed under
 * `x-unavailable`, so a service that is down never fails the description.
 */
import type { Logger } from "../../shared/log/log.ts";
import { PROBLEM_CONTENT_TYPE } from "../../shared/http/problem.ts";
import { type GatewayRoute, upstreamPath } from "./routes.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

/** An OpenAPI document as JSON. */
export type OpenApiDocument = Record<string, Json>;

/** The security scheme of every route behind the gateway's token check. */
export const OAUTH2 = "oauth2";

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
const COMPONENT_KINDS = [
  "schemas",
  "responses",
  "parameters",
  "examples",
  "requestBodies",
  "headers",
  "links",
  "callbacks",
  "pathItems",
];
/** The upstreams' security schemes give way to the gateway's: it checks the tokens. */
const UPSTREAM_SECURITY_SCHEMES = "securitySchemes";

/** What the issuer's discovery document says about its endpoints. */
interface IssuerEndpoints {
  readonly authorizationUrl: string;
  readonly tokenUrl: string;
  readonly scopes: readonly string[];
  /** Why the discovery document was not used, when it was not. */
  readonly unavailable?: string;
}

export interface UnavailableUpstream {
  readonly service: string;
  readonly reason: string;
  /** The public prefixes whose operations are missing. */
  readonly prefixes: readonly string[];
}

export interface PublicDescriptionOptions {
  /** The route table in force, read on each build. */
  readonly routes: () => readonly GatewayRoute[];
  /** The issuer whose tokens the gateway accepts. */
  readonly issuer: string;
  /** GETs `path` of an instance of `route.service` (the proxy's balanced client). */
  readonly fetchUpstream: (route: GatewayRoute, path: string) => Promise<Response>;
  /** For the issuer's discovery document. @default globalThis.fetch */
  readonly fetch?: typeof fetch;
  readonly logger: Logger;
  /** How long a complete description is kept. @default 60_000 */
  readonly ttlMs?: number;
  /** How long one missing an upstream is kept: the service may be back soon. @default 5_000 */
  readonly incompleteTtlMs?: number;
  /** @default Date.now */
  readonly now?: () => number;
}

function isObject(value: unknown): value is Record<string, Json> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The route a request path goes to: the longest matching prefix, as the dispatcher chooses. */
function routeOf(table: readonly GatewayRoute[], path: string): GatewayRoute | undefined {
  let best: GatewayRoute | undefined;
  for (const route of table) {
    const { prefix } = route;
    const hit = prefix === "/" || path === prefix || path.startsWith(`${prefix}/`);
    if (hit && (best === undefined || prefix.length > best.prefix.length)) best = route;
  }
  return best;
}

/**
 * The public path whose requests `route` sends to the upstream path `path`,
 * or undefined when none does (or a more specific route takes it).
 */
export function publicPath(
  table: readonly GatewayRoute[],
  route: GatewayRoute,
  path: string,
): string | undefined {
  const target = route.rewrite?.prefix ?? route.prefix;
  if (!path.startsWith(target === "/" ? "/" : target)) return undefined;
  const rest = path.slice(target === "/" && route.rewrite === undefined ? 0 : target.length);
  const candidate = (route.prefix === "/" ? "" : route.prefix) + rest || "/";
  if (upstreamPath(route, candidate) !== path) return undefined;
  return routeOf(table, candidate) === route ? candidate : undefined;
}

/** Replaces every `$ref` to a renamed component. */
function renameRefs(value: Json, renames: ReadonlyMap<string, string>): Json {
  if (Array.isArray(value)) return value.map((item) => renameRefs(item, renames));
  if (!isObject(value)) return value;
  const result: Record<string, Json> = {};
  for (const [key, item] of Object.entries(value)) {
    result[key] = key === "$ref" && typeof item === "string" && renames.has(item)
      ? renames.get(item)
      : renameRefs(item, renames);
  }
  return result;
}

/**
 * Adds an upstream's components to `into`: a component equal to one already
 * there is shared, one whose name is taken by another shape becomes
 * `<service>_<name>`. Returns the renamed references.
 */
function mergeComponents(
  into: Record<string, Json>,
  components: unknown,
  service: string,
): Map<string, string> {
  const renames = new Map<string, string>();
  if (!isObject(components)) return renames;
  const kinds = COMPONENT_KINDS.filter((kind) => isObject(components[kind]));
  // Names first, so that references between components are renamed too.
  for (const kind of kinds) {
    for (const [name, value] of Object.entries(components[kind] as Record<string, Json>)) {
      const existing = into[kind]?.[name];
      if (existing !== undefined && JSON.stringify(existing) !== JSON.stringify(value)) {
        renames.set(`#/components/${kind}/${name}`, `#/components/${kind}/${service}_${name}`);
      }
    }
  }
  for (const kind of kinds) {
    into[kind] ??= {};
    for (const [name, value] of Object.entries(components[kind] as Record<string, Json>)) {
      const ref = renames.get(`#/components/${kind}/${name}`);
      into[kind][ref === undefined ? name : ref.split("/").pop()!] = renameRefs(value, renames);
    }
  }
  return renames;
}

const PROBLEM_REF = { $ref: "#/components/schemas/Problem" };

function problem(description: string, headers: Record<string, Json> = {}): Json {
  return {
    description,
    ...(Object.keys(headers).length === 0 ? {} : { headers }),
    content: { [PROBLEM_CONTENT_TYPE]: { schema: PROBLEM_REF } },
  };
}

const HEADER_REFS = {
  rateLimit: { $ref: "#/components/headers/RateLimit" },
  rateLimitPolicy: { $ref: "#/components/headers/RateLimit-Policy" },
  retryAfter: { $ref: "#/components/headers/Retry-After" },
  wwwAuthenticate: { $ref: "#/components/headers/WWW-Authenticate" },
};

/** The headers the gateway sets, as components its responses refer to. */
const GATEWAY_HEADERS: Record<string, Json> = {
  "RateLimit": {
    description: "The caller's remaining quota of the route's policy and the seconds until a " +
      "unit returns (draft-ietf-httpapi-ratelimit-headers)",
    schema: { type: "string", examples: ['"tweets";r=599;t=60'] },
  },
  "RateLimit-Policy": {
    description: "The route's rate-limit policy: its quota and window in seconds",
    schema: { type: "string", examples: ['"tweets";q=600;w=60'] },
  },
  "Retry-After": {
    description: "Seconds to wait before trying again",
    schema: { type: "string", pattern: "^[0-9]+$", examples: ["10"] },
  },
  "WWW-Authenticate": {
    description: "The Bearer challenge (RFC 6750), with the error when a token was refused",
    schema: { type: "string", examples: ['Bearer realm="query", error="invalid_token"'] },
  },
};

/** Adds what the gateway answers itself to a response the upstream describes. */
function addToResponse(response: Json, headers: Record<string, Json>): void {
  if (!isObject(response) || "$ref" in response) return;
  if (Object.keys(headers).length > 0) response.headers = { ...headers, ...response.headers };
}

/** Adds a response, or the problem media type and headers to the upstream's of that status. */
function addResponse(responses: Record<string, Json>, status: string, added: Json): void {
  const existing = responses[status];
  if (existing === undefined) {
    responses[status] = added;
    return;
  }
  if (!isObject(existing) || "$ref" in existing) return;
  existing.content = { ...added.content, ...existing.content };
  existing.headers = { ...added.headers, ...existing.headers };
  existing.description = `${existing.description} (or the gateway's: ${added.description})`;
}

/** What the gateway does to every operation behind `route`. */
function applyGateway(operation: Json, route: GatewayRoute): void {
  const responses: Record<string, Json> = isObject(operation.responses)
    ? operation.responses
    : (operation.responses = {});
  const limited = route.rateLimit !== undefined;
  const limitHeaders = limited
    ? { RateLimit: HEADER_REFS.rateLimit, "RateLimit-Policy": HEADER_REFS.rateLimitPolicy }
    : {};
  for (const response of Object.values(responses)) addToResponse(response, limitHeaders);
  const notes: string[] = [];
  const { auth } = route;
  if (auth.mode === "none") {
    delete operation.security;
    notes.push("No token needed.");
  } else {
    operation.security = [{ [OAUTH2]: [] }];
    const challenge = { "WWW-Authenticate": HEADER_REFS.wwwAuthenticate };
    addResponse(responses, "401", problem("Missing, invalid or expired access token", challenge));
    notes.push(`Needs an access token for the audience \`${auth.audience}\`.`);
    if (auth.mode === "anyRole") {
      addResponse(responses, "403", problem("The token carries none of the roles", challenge));
      notes.push(`The token must carry one of the roles ${auth.roles.join(", ")}.`);
      operation["x-required-roles"] = [...auth.roles];
    }
  }
  if (limited) {
    const { policy, limit, windowMs } = route.rateLimit!;
    addResponse(
      responses,
      "429",
      problem(`Rate limit '${policy}' reached`, {
        ...limitHeaders,
        "Retry-After": HEADER_REFS.retryAfter,
      }),
    );
    notes.push(`Rate limit \`${policy}\`: ${limit} requests per ${windowMs / 1000} s per caller.`);
  }
  addResponse(
    responses,
    "503",
    problem(
      `The ${route.service} service cannot answer: its circuit is open, no instance is ` +
        "registered, or it failed or did not answer in time",
      { "Retry-After": HEADER_REFS.retryAfter },
    ),
  );
  if (isObject(operation.requestBody)) {
    addResponse(responses, "413", problem("Request body larger than the gateway accepts"));
  }
  const gateway = `Through the gateway (\`${route.prefix}\` to ${route.service}): ${
    notes.join(" ")
  }`;
  operation.description = operation.description === undefined
    ? gateway
    : `${operation.description}\n\n${gateway}`;
}

/**
 * Merges one upstream description into `into`: its operations behind each
 * route of the table that reaches them, operation ids prefixed with the
 * service name (and numbered when one is reachable by two routes).
 */
function mergeUpstream(
  into: OpenApiDocument,
  table: readonly GatewayRoute[],
  service: string,
  upstream: OpenApiDocument,
  operationIds: Set<string>,
): void {
  const { [UPSTREAM_SECURITY_SCHEMES]: _schemes, ...components } = upstream.components ?? {};
  const renames = mergeComponents(into.components, components, service);
  const routes = table.filter((route) => route.service === service);
  for (const [path, item] of Object.entries(upstream.paths ?? {})) {
    for (const route of routes) {
      const target = publicPath(table, route, path);
      if (target === undefined || into.paths[target] !== undefined) continue;
      const copy = renameRefs(item, renames);
      for (const method of METHODS) {
        const operation = copy[method];
        if (!isObject(operation)) continue;
        const base = `${service}_${operation.operationId ?? `${method}${path}`}`;
        let id = base;
        for (let n = 2; operationIds.has(id); n++) id = `${base}_${n}`;
        operationIds.add(id);
        operation.operationId = id;
        applyGateway(operation, route);
      }
      copy["x-service"] = service;
      into.paths[target] = copy;
    }
  }
}

/** Builds and caches the merged description. */
export class PublicDescription {
  readonly #options: PublicDescriptionOptions;
  readonly #now: () => number;
  #cached: { readonly document: Promise<OpenApiDocument>; readonly expiresAt: number } | undefined;

  constructor(options: PublicDescriptionOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Forgets the cached description (the route table changed). */
  invalidate(): void {
    this.#cached = undefined;
  }

  /** The merged description, with `own` (the gateway's own routes) as its base. */
  get(own: () => OpenApiDocument): Promise<OpenApiDocument> {
    const cached = this.#cached;
    if (cached !== undefined && cached.expiresAt > this.#now()) return cached.document;
    // Concurrent requests share one build; it is kept until it has expired.
    const document = this.#build(own());
    this.#cached = { document, expiresAt: Infinity };
    document.then(
      (built) => {
        if (this.#cached?.document !== document) return;
        const incomplete = (built["x-unavailable"] ?? []).length > 0;
        const ttl = incomplete
          ? this.#options.incompleteTtlMs ?? 5_000
          : this.#options.ttlMs ?? 60_000;
        this.#cached = { document, expiresAt: this.#now() + ttl };
      },
      () => {
        if (this.#cached?.document === document) this.#cached = undefined;
      },
    );
    return document;
  }

  async #issuerEndpoints(): Promise<IssuerEndpoints> {
    const { issuer } = this.#options;
    // Identity and Keycloak both serve these: the description still says where to sign in.
    const conventional = {
      authorizationUrl: `${issuer}/protocol/openid-connect/auth`,
      tokenUrl: `${issuer}/protocol/openid-connect/token`,
      scopes: ["openid"],
    };
    const url = `${issuer}/.well-known/openid-configuration`;
    try {
      const response = await (this.#options.fetch ?? fetch)(url, {
        signal: AbortSignal.timeout(5000),
      });
      if (!response.ok) {
        await response.body?.cancel();
        throw new Error(`it answered ${response.status}`);
      }
      const metadata = await response.json();
      if (
        typeof metadata.authorization_endpoint !== "string" ||
        typeof metadata.token_endpoint !== "string"
      ) {
        throw new Error("it names no authorization or token endpoint");
      }
      return {
        authorizationUrl: metadata.authorization_endpoint,
        tokenUrl: metadata.token_endpoint,
        scopes: Array.isArray(metadata.scopes_supported)
          ? metadata.scopes_supported.filter((scope: unknown) => typeof scope === "string")
          : conventional.scopes,
      };
    } catch (error) {
      const reason = `the issuer's discovery document ${url} cannot be read: ${errorText(error)}`;
      this.#options.logger.warn("Public description: {reason}", { reason });
      return { ...conventional, unavailable: reason };
    }
  }

  async #upstream(route: GatewayRoute): Promise<OpenApiDocument> {
    const response = await this.#options.fetchUpstream(route, "/openapi.json");
    if (!response.ok) {
      await response.body?.cancel();
      throw new Error(`its /openapi.json answered ${response.status}`);
    }
    const document = await response.json();
    if (!isObject(document) || !String(document.openapi).startsWith("3.1")) {
      throw new Error("its /openapi.json is not an OpenAPI 3.1 description");
    }
    return document;
  }

  async #build(own: OpenApiDocument): Promise<OpenApiDocument> {
    const table = this.#options.routes();
    const document: OpenApiDocument = structuredClone(own);
    document.paths ??= {};
    document.components ??= {};
    const components = document.components;
    components.headers = { ...components.headers, ...GATEWAY_HEADERS };

    const services = [...new Set(table.map((route) => route.service))];
    const [issuer, ...upstreams] = await Promise.all([
      this.#issuerEndpoints(),
      ...services.map((service) =>
        this.#upstream(table.find((route) => route.service === service)!).then(
          (description) => ({ service, description }),
          (error) => ({ service, error: errorText(error) }),
        )
      ),
    ]);
    const scopes = Object.fromEntries(
      issuer.scopes.map((scope) => [scope, `The \`${scope}\` scope`]),
    );
    // The gateway checks tokens from the issuer: that is its scheme, not the services' own.
    components.securitySchemes = {
      [OAUTH2]: {
        type: "oauth2",
        description: "Access tokens from the issuer (identity in development, Keycloak when " +
          "configured): people sign in with the authorization code flow and PKCE (S256), " +
          "services use client credentials. Send them as `Authorization: Bearer <token>`.",
        flows: {
          authorizationCode: {
            authorizationUrl: issuer.authorizationUrl,
            tokenUrl: issuer.tokenUrl,
            refreshUrl: issuer.tokenUrl,
            scopes,
          },
          clientCredentials: { tokenUrl: issuer.tokenUrl, scopes },
        },
      },
    };
    const unavailable: UnavailableUpstream[] = [];
    const operationIds = new Set<string>();
    for (const item of Object.values(document.paths) as Json[]) {
      for (const method of METHODS) {
        if (typeof item[method]?.operationId === "string") {
          operationIds.add(item[method].operationId);
        }
      }
    }
    for (const upstream of upstreams) {
      if ("error" in upstream) {
        const prefixes = table.filter((route) => route.service === upstream.service)
          .map((route) => route.prefix);
        unavailable.push({ service: upstream.service, reason: upstream.error, prefixes });
        this.#options.logger.warn(
          "Public description: the {service} service's operations are left out: {reason}",
          { service: upstream.service, reason: upstream.error },
        );
        continue;
      }
      mergeUpstream(document, table, upstream.service, upstream.description, operationIds);
    }
    if (unavailable.length > 0) {
      document["x-unavailable"] = unavailable;
      document.info.description = `${document.info.description ?? ""}\n\nNot described now ` +
        `(the service's description cannot be read): ${
          unavailable.map(({ service, prefixes }) => `${service} (${prefixes.join(", ")})`)
            .join("; ")
        }.`;
    }
    if (issuer.unavailable !== undefined) document["x-issuer-unavailable"] = issuer.unavailable;
    return document;
  }
}
