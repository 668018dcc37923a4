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
  checkRegistration,
  INSTANCE_ID_PATTERN,
  isInstanceId,
  isServiceName,
  SERVICE_NAME_PATTERN,
} from "../../shared/discovery/registry_client.ts";
import { invalidParameters, type ParameterError, ProblemError } from "../../shared/http/problem.ts";
import type { InstanceRegistry, RegisteredInstance, ServiceSnapshot } from "./registry.ts";
import { readJsonObject } from "../../shared/http/json_body.ts";
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

function serviceParam(c: Context, errors: ParameterError[]): string {
  const service = c.req.param("service") ?? "";
  if (!isServiceName(service)) {
    errors.push({
      parameter: "service",
      detail: `must match ${SERVICE_NAME_PATTERN.source} (lower-case letters, digits, '-')`,
    });
  }
  return service;
}

function pathParams(c: Context, withInstance: true): { service: string; instanceId: string };
function pathParams(c: Context, withInstance: false): { service: string };
function pathParams(c: Context, withInstance: boolean) {
  const errors: ParameterError[] = [];
  const service = serviceParam(c, errors);
  const instanceId = withInstance ? c.req.param("instanceId") ?? "" : "";
  if (withInstance && !isInstanceId(instanceId)) {
    errors.push({
      parameter: "instanceId",
      detail: `must match ${INSTANCE_ID_PATTERN.source} (letters, digits, '.', '_', ':', '-')`,
    });
  }
  if (errors.length > 0) throw invalidParameters(errors);
  return { service, instanceId };
}

/**
 * Every route of the registry API, reads included (the table names every
 * instance's address), needs a valid access token for the audience
 * `registry`: 401 with `WWW-Authenticate` otherwise. Added before any route,
 * so it covers every route under `/api/v1/registry`, whoever adds it.
 */
export function requireRegistryToken(app: Hono, verifier: JwtVerifier): void {
  const authenticated = bearerAuth({ verifier }) as unknown as MiddlewareHandler;
  app.use(REGISTRY_API, authenticated);
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

export function addRegistryRoutes(app: Hono, options: RegistryRoutesOptions): Hono {
  const { registry, closing, pingMs = 15_000, self } = options;

  app.get(BASE, (c) => c.json({ services: registry.services(), warmingUp: registry.warmingUp }));

  app.get(`${BASE}/:service/instances`, (c) => {
    const { service } = pathParams(c, false);
    return c.json(snapshotBody(registry.snapshot(service)));
  });

  app.get(`${BASE}/:service/watch`, (c) => {
    const { service } = pathParams(c, false);
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

  app.get(PROMETHEUS_TARGETS_ROUTE, (c) => {
    const instances = registry.services().flatMap(({ service }) =>
      registry.snapshot(service).instances
    );
    const itself = { ...self, baseUrl: new URL(c.req.url).origin, metadata: {} };
    return c.json(targetGroups([itself, ...instances]));
  });

  app.put(INSTANCE_ROUTE, async (c) => {
    const { service, instanceId } = pathParams(c, true);
    requireServiceRole(c as unknown as Context<BearerAuthEnv>, service);
    const check = checkRegistration(await readJsonObject(c.req.raw));
    if (!check.ok) {
      throw new ProblemError({
        status: 400,
        code: "invalid-body",
        title: "Invalid request body",
        detail: check.problems.map((problem) => `${problem.field}: ${problem.detail}`).join("; "),
        extensions: { errors: check.problems },
      });
    }
    const { instance, created } = registry.register({ service, instanceId, ...check.fields });
    if (created) {
      c.header(
        "location",
        `${BASE}/${encodeURIComponent(service)}/instances/${encodeURIComponent(instanceId)}`,
      );
    }
    return c.json({ ...instanceBody(instance), ttlMs: registry.ttlMs }, created ? 201 : 200);
  });

  app.put(HEARTBEAT_ROUTE, (c) => {
    const { service, instanceId } = pathParams(c, true);
    requireServiceRole(c as unknown as Context<BearerAuthEnv>, service);
    if (registry.renew(service, instanceId) === undefined) {
      throw unknownInstance(service, instanceId);
    }
    return c.body(null, 204);
  });

  app.delete(INSTANCE_ROUTE, (c) => {
    const { service, instanceId } = pathParams(c, true);
    requireServiceRole(c as unknown as Context<BearerAuthEnv>, service);
    if (registry.deregister(service, instanceId) === undefined) {
      throw unknownInstance(service, instanceId);
    }
    return c.body(null, 204);
  });

  return app;
}
