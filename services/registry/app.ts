/**
 * The registry API: `/api/v1/registry/services/...`. Instances register,
 * renew by heartbeat and deregister; clients list them or watch them as
 * server-sent events. Every route needs an access token for the audience
 * `registry`; changing a service's instances needs its role `service:<name>`.
 */
import type { Context, Hono, MiddlewareHandler } from "hono";
import { bearerAuth, type BearerAuthEnv } from "../../shared/auth/bearer_auth.ts";
import type { JwtVerifier } from "../../shared/auth/jwt_verifier.ts";
import {
  INSTANCE_ID_PATTERN,
  parseBaseUrl,
  REGISTRATION_LIMITS,
  SERVICE_NAME_PATTERN,
} from "../../shared/discovery/registry_client.ts";
import {
  bearerSecurity,
  createRoute,
  mountRoute,
  type OpenAPIHono,
  problemResponses,
  serverSentEventSchema,
  z,
} from "../../shared/http/openapi.ts";
import { ProblemError } from "../../shared/http/problem.ts";
import type { InstanceRegistry, RegisteredInstance, ServiceSnapshot } from "./registry.ts";
import { targetGroups } from "./prometheus_targets.ts";

export interface RegistryRoutesOptions {
  readonly registry: InstanceRegistry;
  /** Aborted when the service stops: ends every open watch stream. */
  readonly closing: AbortSignal;
  /**
   * How often a watch stream carries a comment, so idle connections stay
   * open through proxies and dead ones are noticed.
   * @default 15_000
   */
  readonly pingMs?: number;
  /**
   * The registry itself, listed among the Prometheus targets at the address
   * Prometheus reached it at (it does not register with itself).
   */
  readonly self: {
    readonly service: string;
    readonly instanceId: string;
    readonly version: string;
  };
}

/** Every route under it needs a token; see `requireRegistryToken`. */
export const REGISTRY_API = "/api/v1/registry";
const BASE = `${REGISTRY_API}/services`;
/** Prometheus HTTP service discovery: every Prometheus polls it every few seconds. */
export const PROMETHEUS_TARGETS_ROUTE = `${REGISTRY_API}/prometheus/targets`;
/** Registrations: logged at debug, the registry logs each change itself. */
export const INSTANCE_ROUTE = `${BASE}/:service/instances/:instanceId`;
/** Renewals, every second per instance: logged at debug. */
export const HEARTBEAT_ROUTE = `${BASE}/:service/instances/:instanceId/heartbeat`;
/** Events a slow watcher may fall behind by before it is dropped (it reconnects and resyncs). */
const MAX_QUEUED_EVENTS = 64;
const TAG = "registry";

const ServiceName = z.string().regex(SERVICE_NAME_PATTERN, {
  error: `must match ${SERVICE_NAME_PATTERN.source} (lower-case letters, digits, '-')`,
}).openapi({
  param: { name: "service", in: "path" },
  description: "The service's name",
  example: "query",
});

const InstanceId = z.string().regex(INSTANCE_ID_PATTERN, {
  error: `must match ${INSTANCE_ID_PATTERN.source} (letters, digits, '.', '_', ':', '-')`,
}).openapi({
  param: { name: "instanceId", in: "path" },
  description: "The instance's id, unique among the service's instances",
  example: "query-host:8183",
});

const ServiceParams = z.object({ service: ServiceName });
const InstanceParams = z.object({ service: ServiceName, instanceId: InstanceId });

/** The base URL comes out without a trailing slash, as instances are listed. */
const BaseUrl = z.string().transform((value, ctx) => {
  const parsed = parseBaseUrl(value);
  if ("url" in parsed) return parsed.url;
  ctx.addIssue({ code: "custom", message: parsed.problem });
  return z.NEVER;
}).openapi({
  type: "string",
  format: "uri",
  maxLength: REGISTRATION_LIMITS.baseUrlLength,
  description: "Where the instance answers: an absolute http(s) URL without credentials, " +
    "query or fragment",
  example: "http://127.0.0.1:8183",
});

const Version = z.string().min(1).max(REGISTRATION_LIMITS.versionLength, {
  error: `must be a string of 1 to ${REGISTRATION_LIMITS.versionLength} characters`,
});

const Metadata = z.record(
  z.string().min(1).max(REGISTRATION_LIMITS.metadataKeyLength, {
    error: `keys must be 1 to ${REGISTRATION_LIMITS.metadataKeyLength} characters`,
  }),
  z.string({
    error: `must be a string of at most ${REGISTRATION_LIMITS.metadataValueLength} characters`,
  }).max(REGISTRATION_LIMITS.metadataValueLength),
).refine((metadata) => Object.keys(metadata).length <= REGISTRATION_LIMITS.metadataEntries, {
  error: `must have at most ${REGISTRATION_LIMITS.metadataEntries} entries`,
}).openapi({
  maxProperties: REGISTRATION_LIMITS.metadataEntries,
  description: "String values the instance's clients may read, e.g. `metricsUrl`",
  example: { zone: "a" },
});

const RegistrationSchema = z.object({
  baseUrl: BaseUrl,
  version: Version.openapi({ example: "1.2.3" }),
  metadata: Metadata.optional(),
}).openapi("Registration");

const InstanceSchema = z.object({
  service: z.string(),
  instanceId: z.string(),
  baseUrl: z.string(),
  version: z.string(),
  metadata: z.record(z.string(), z.string()),
  registeredAt: z.iso.datetime(),
  lastHeartbeatAt: z.iso.datetime(),
}).openapi("Instance");

const SnapshotSchema = z.object({
  service: z.string(),
  warmingUp: z.boolean().openapi({
    description: "The registry started recently: an instance may not have renewed yet",
  }),
  instances: z.array(InstanceSchema),
}).openapi("ServiceInstances");

const ServicesSchema = z.object({
  services: z.array(z.object({ service: z.string(), instances: z.int().min(1) })),
  warmingUp: z.boolean(),
}).openapi("RegisteredServices");

const TargetGroupSchema = z.object({
  targets: z.array(z.string()).openapi({ example: ["127.0.0.1:8183"] }),
  labels: z.record(z.string(), z.string()),
}).openapi("PrometheusTargetGroup");

const json = <S extends z.ZodType>(schema: S) => ({ "application/json": { schema } });

const listServicesRoute = createRoute({
  method: "get",
  path: BASE,
  operationId: "listServices",
  summary: "The registered services",
  description: "Every service with at least one instance, and how many it has.",
  tags: [TAG],
  security: bearerSecurity,
  responses: {
    200: { description: "The registered services", content: json(ServicesSchema) },
    ...problemResponses(401),
  },
});

const listInstancesRoute = createRoute({
  method: "get",
  path: `${BASE}/{service}/instances`,
  operationId: "listInstances",
  summary: "The instances of a service",
  description: "Every live instance of the service; none when it has none registered.",
  tags: [TAG],
  security: bearerSecurity,
  request: { params: ServiceParams },
  responses: {
    200: { description: "The service's instances", content: json(SnapshotSchema) },
    ...problemResponses(400, 401),
  },
});

const watchRoute = createRoute({
  method: "get",
  path: `${BASE}/{service}/watch`,
  operationId: "watchInstances",
  summary: "Server-sent events of a service's instances",
  description: "A `text/event-stream`: an `instances` event with the current snapshot " +
    "(`ServiceInstances` as JSON) at once and after every change, a comment every few " +
    "seconds. It ends when the registry stops; reconnect and resync.",
  tags: [TAG],
  security: bearerSecurity,
  request: { params: ServiceParams },
  responses: {
    200: {
      description: "The stream of snapshots",
      content: {
        "text/event-stream": {
          schema: serverSentEventSchema({ events: ["instances"], data: SnapshotSchema }),
        },
      },
    },
    ...problemResponses(400, 401, 503),
  },
});

const prometheusTargetsRoute = createRoute({
  method: "get",
  path: PROMETHEUS_TARGETS_ROUTE,
  operationId: "prometheusTargets",
  summary: "Prometheus HTTP service discovery targets",
  description: "One target group per instance (the registry first), for `http_sd_configs`.",
  tags: [TAG],
  security: bearerSecurity,
  responses: {
    200: { description: "The target groups", content: json(z.array(TargetGroupSchema)) },
    ...problemResponses(401),
  },
});

const roleProblems = {
  ...problemResponses(400, 401, 403),
  403: {
    ...problemResponses(403)[403],
    description: "The token does not carry the role `service:<service>`",
  },
};

const registerRoute = createRoute({
  method: "put",
  path: `${BASE}/{service}/instances/{instanceId}`,
  operationId: "registerInstance",
  summary: "Register or replace an instance",
  description: "Needs the role `service:<service>`. The instance stays listed while it " +
    "renews within `ttlMs`.",
  tags: [TAG],
  security: bearerSecurity,
  request: {
    params: InstanceParams,
    body: { required: true, content: json(RegistrationSchema) },
  },
  responses: {
    200: {
      description: "Replaced the instance's registration",
      content: json(InstanceSchema.extend({ ttlMs: z.int().min(1) }).openapi("Registered")),
    },
    201: {
      description: "Registered a new instance",
      headers: z.object({
        location: z.string().openapi({ description: "The instance's URL" }),
      }),
      content: json(InstanceSchema.extend({ ttlMs: z.int().min(1) }).openapi("Registered")),
    },
    ...roleProblems,
    ...problemResponses(413, 415),
  },
});

const heartbeatRoute = createRoute({
  method: "put",
  path: `${BASE}/{service}/instances/{instanceId}/heartbeat`,
  operationId: "renewInstance",
  summary: "Renew an instance",
  description: "Needs the role `service:<service>`; 404 once the instance is no longer " +
    "registered (register it again).",
  tags: [TAG],
  security: bearerSecurity,
  request: { params: InstanceParams },
  responses: {
    204: { description: "Renewed" },
    ...roleProblems,
    ...problemResponses(404),
  },
});

const deregisterRoute = createRoute({
  method: "delete",
  path: `${BASE}/{service}/instances/{instanceId}`,
  operationId: "deregisterInstance",
  summary: "Deregister an instance",
  description: "Needs the role `service:<service>`.",
  tags: [TAG],
  security: bearerSecurity,
  request: { params: InstanceParams },
  responses: {
    204: { description: "Deregistered" },
    ...roleProblems,
    ...problemResponses(404),
  },
});

/**
 * Every route of the registry API, reads included (the table names every
 * instance's address), needs a valid access token for the audience
 * `registry`: 401 with `WWW-Authenticate` otherwise. Added before any route,
 * so it covers every route under `/api/v1/registry`, whoever adds it.
 */
export function requireRegistryToken(app: Hono, verifier: JwtVerifier): void {
  const authenticated = bearerAuth({ verifier }) as unknown as MiddlewareHandler;
  app.use(`${REGISTRY_API}/*`, authenticated);
}

/** The realm role that allows a client to register, renew and deregister instances of `service`. */
export function serviceRole(service: string): string {
  return `service:${service}`;
}

/**
 * 403 unless the verified token carries `service:<service>`: a client may
 * change the instances of its own service only, so the instances the registry
 * lists are the ones their services' credentials registered.
 */
function requireServiceRole(c: Context<BearerAuthEnv>, service: string): void {
  const token = c.get("accessToken");
  const role = serviceRole(service);
  if (token.roles.includes(role)) return;
  const who = token.clientId ?? token.username ?? token.subject;
  const own = token.roles.filter((name) => name.startsWith("service:"));
  throw new ProblemError({
    status: 403,
    code: "forbidden",
    title: "Permission denied",
    detail: `The client ${who} may not change the instances of ${service}: ` +
      (own.length === 0
        ? "its token carries no service role"
        : `its token carries ${own.join(", ")}, not ${role}`),
    extensions: { requiredRoles: [role] },
    headers: {
      "www-authenticate": `Bearer realm="twitterapi", error="insufficient_scope", ` +
        `error_description="The token does not carry the role ${role}"`,
    },
  });
}

function unknownInstance(service: string, instanceId: string): ProblemError {
  return new ProblemError({
    status: 404,
    code: "unknown-instance",
    title: "Unknown instance",
    detail: `No instance ${instanceId} of ${service} is registered (never registered, ` +
      "deregistered, evicted, or the registry restarted); register it again",
  });
}

function instanceBody(instance: RegisteredInstance) {
  return {
    service: instance.service,
    instanceId: instance.instanceId,
    baseUrl: instance.baseUrl,
    version: instance.version,
    metadata: instance.metadata,
    registeredAt: new Date(instance.registeredAt).toISOString(),
    lastHeartbeatAt: new Date(instance.lastHeartbeatAt).toISOString(),
  };
}

function snapshotBody(snapshot: ServiceSnapshot) {
  return {
    service: snapshot.service,
    warmingUp: snapshot.warmingUp,
    instances: snapshot.instances.map(instanceBody),
  };
}

function instancesEvent(snapshot: ServiceSnapshot): string {
  return `event: instances\ndata: ${JSON.stringify(snapshotBody(snapshot))}\n\n`;
}

/**
 * A `text/event-stream` of the service's snapshots: one at once, one after
 * every change, a comment every `pingMs`. It ends when the client goes away
 * (the server cancels the body), when the service stops, or when the client
 * falls too far behind.
 */
function watchResponse(
  registry: InstanceRegistry,
  service: string,
  options: { closing: AbortSignal; pingMs: number },
): Response {
  const encoder = new TextEncoder();
  let finish = () => {};
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      let open = true;
      const send = (text: string) => {
        if (!open) return;
        if ((controller.desiredSize ?? 0) < -MAX_QUEUED_EVENTS) return finish();
        controller.enqueue(encoder.encode(text));
      };
      const unsubscribe = registry.subscribe(service, (snapshot) => send(instancesEvent(snapshot)));
      const ping = setInterval(() => send(": ping\n\n"), options.pingMs);
      finish = () => {
        if (!open) return;
        open = false;
        unsubscribe();
        clearInterval(ping);
        options.closing.removeEventListener("abort", finish);
        try {
          controller.close();
        } catch {
          // Already closed or errored by a cancelled response.
        }
      };
      options.closing.addEventListener("abort", finish, { once: true });
      send(`retry: 1000\n\n${instancesEvent(registry.snapshot(service))}`);
      if (options.closing.aborted) finish();
    },
    cancel() {
      finish();
    },
  });
  return new Response(body, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
    },
  });
}

export function addRegistryRoutes(app: OpenAPIHono, options: RegistryRoutesOptions): OpenAPIHono {
  const { registry, closing, pingMs = 15_000, self } = options;

  app.openapi(
    listServicesRoute,
    (c) => c.json({ services: registry.services(), warmingUp: registry.warmingUp }, 200),
  );

  app.openapi(listInstancesRoute, (c) => {
    const { service } = c.req.valid("param");
    return c.json(snapshotBody(registry.snapshot(service)), 200);
  });

  mountRoute(app, watchRoute, (c) => {
    const { service } = c.req.valid("param");
    if (closing.aborted) {
      throw new ProblemError({
        status: 503,
        code: "shutting-down",
        title: "Shutting down",
        detail: "The registry is stopping; watch another registry",
      });
    }
    return watchResponse(registry, service, { closing, pingMs });
  });

  // Target groups are read-only; the typed `app.openapi` wants mutable arrays.
  mountRoute(app, prometheusTargetsRoute, (c) => {
    const instances = registry.services().flatMap(({ service }) =>
      registry.snapshot(service).instances
    );
    const itself = { ...self, baseUrl: new URL(c.req.url).origin, metadata: {} };
    return c.json(targetGroups([itself, ...instances]));
  });

  app.openapi(registerRoute, (c) => {
    const { service, instanceId } = c.req.valid("param");
    requireServiceRole(c as unknown as Context<BearerAuthEnv>, service);
    const { baseUrl, version, metadata = {} } = c.req.valid("json");
    const { instance, created } = registry.register({
      service,
      instanceId,
      baseUrl,
      version,
      metadata,
    });
    const body = { ...instanceBody(instance), ttlMs: registry.ttlMs };
    if (!created) return c.json(body, 200);
    c.header(
      "location",
      `${BASE}/${encodeURIComponent(service)}/instances/${encodeURIComponent(instanceId)}`,
    );
    return c.json(body, 201);
  });

  app.openapi(heartbeatRoute, (c) => {
    const { service, instanceId } = c.req.valid("param");
    requireServiceRole(c as unknown as Context<BearerAuthEnv>, service);
    if (registry.renew(service, instanceId) === undefined) {
      throw unknownInstance(service, instanceId);
    }
    return c.body(null, 204);
  });

  app.openapi(deregisterRoute, (c) => {
    const { service, instanceId } = c.req.valid("param");
    requireServiceRole(c as unknown as Context<BearerAuthEnv>, service);
    if (registry.deregister(service, instanceId) === undefined) {
      throw unknownInstance(service, instanceId);
    }
    return c.body(null, 204);
  });

  return app;
}
