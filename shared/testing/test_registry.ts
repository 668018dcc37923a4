/**
 * A registry on loopback that speaks the registry protocol the discovery
 * client uses (`/api/v1/registry/services/...`), for tests of that client:
 * registration with the same field checks, heartbeats answered 404 once an
 * instance is unknown, eviction after the TTL, a warm-up of one TTL after
 * start, the watch stream of snapshots, and the same access rules (a token
 * of the test issuer for the audience `registry`, and `service:<name>` to
 * change `<name>`'s instances). It is a protocol double: the registry
 * service itself, with its own tests, is services/registry/, and it runs
 * with the real client in the services' end-to-end tests.
 */
import { Hono, type MiddlewareHandler } from "hono";
import { bearerAuth, type BearerAuthEnv } from "../auth/bearer_auth.ts";
import { checkRegistration } from "../discovery/registry_client.ts";
import type { ServiceInstance } from "../discovery/service_discovery.ts";
import { ProblemError, problemResponse } from "../http/problem.ts";
import { createTestIssuer, type TestIssuer } from "./test_issuer.ts";

export interface TestRegistryOptions {
  /** @default 0: a free port */
  readonly port?: number;
  /** @default 3000 */
  readonly ttlMs?: number;
  /** Whose tokens it accepts. @default a new test issuer */
  readonly issuer?: TestIssuer;
}

export interface TestRegistry {
  readonly url: string;
  readonly port: number;
  readonly issuer: TestIssuer;
  /** Registrations accepted so far, new and replacing. */
  readonly registrations: number;
  /** Instances evicted so far for missing their heartbeats. */
  readonly evictions: number;
  /** Stops answering, ends every watch stream; safe to call twice. */
  stop(): Promise<void>;
}

interface Entry {
  readonly instance: ServiceInstance;
  lastHeartbeatAt: number;
}

const API = "/api/v1/registry";

function problem(status: number, code: string, detail: string): ProblemError {
  return new ProblemError({ status, code, title: code, detail });
}

export async function startTestRegistry(options: TestRegistryOptions = {}): Promise<TestRegistry> {
  const ttlMs = options.ttlMs ?? 3000;
  const issuer = options.issuer ?? await createTestIssuer();
  const startedAt = Date.now();
  const table = new Map<string, Map<string, Entry>>();
  const watchers = new Map<string, Set<(text: string) => void>>();
  const closing = new AbortController();
  let registrations = 0;
  let evictions = 0;

  const warmingUp = () => Date.now() - startedAt < ttlMs;
  const instancesOf = (service: string) =>
    [...table.get(service)?.values() ?? []].map((entry) => entry.instance)
      .sort((a, b) => a.instanceId < b.instanceId ? -1 : 1);
  const snapshot = (service: string) => ({
    service,
    warmingUp: warmingUp(),
    instances: instancesOf(service),
  });
  const event = (service: string) =>
    `event: instances\ndata: ${JSON.stringify(snapshot(service))}\n\n`;
  const changed = (service: string) => {
    for (const send of watchers.get(service) ?? []) send(event(service));
  };

  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [service, entries] of table) {
      let evicted = false;
      for (const [id, entry] of entries) {
        if (now - entry.lastHeartbeatAt < ttlMs) continue;
        entries.delete(id);
        evictions += 1;
        evicted = true;
      }
      if (evicted) changed(service);
    }
  }, Math.max(10, Math.floor(ttlMs / 10)));
  // Watchers see the end of the warm-up.
  const warmedUp = setTimeout(() => {
    for (const service of watchers.keys()) changed(service);
  }, ttlMs);

  const app = new Hono<BearerAuthEnv>();
  const authenticated = bearerAuth({ verifier: issuer.verifier("registry") });
  app.use(API, authenticated);
  app.use(`${API}/*`, authenticated);
  const ownService: MiddlewareHandler<BearerAuthEnv> = async (c, next) => {
    const service = c.req.param("service") ?? "";
    if (!c.get("accessToken").roles.includes(`service:${service}`)) {
      throw problem(403, "forbidden", `The token does not carry the role service:${service}`);
    }
    await next();
  };

  app.get(`${API}/services`, (c) =>
    c.json({
      warmingUp: warmingUp(),
      services: [...table].filter(([, entries]) => entries.size > 0)
        .map(([service, entries]) => ({ service, instances: entries.size }))
        .sort((a, b) => a.service < b.service ? -1 : 1),
    }));
  app.get(`${API}/services/:service/instances`, (c) => c.json(snapshot(c.req.param("service"))));
  app.get(`${API}/services/:service/watch`, (c) => {
    const service = c.req.param("service");
    const encoder = new TextEncoder();
    let finish = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        const send = (text: string) => controller.enqueue(encoder.encode(text));
        const set = watchers.get(service) ?? new Set();
        watchers.set(service, set.add(send));
        const ping = setInterval(() => send(": ping\n\n"), 1000);
        finish = () => {
          clearInterval(ping);
          set.delete(send);
          closing.signal.removeEventListener("abort", finish);
          try {
            controller.close();
          } catch {
            // Cancelled by the client already.
          }
        };
        closing.signal.addEventListener("abort", finish, { once: true });
        send(`retry: 1000\n\n${event(service)}`);
      },
      cancel: () => finish(),
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  });
  app.put(`${API}/services/:service/instances/:instanceId`, ownService, async (c) => {
    const service = c.req.param("service");
    const instanceId = c.req.param("instanceId");
    const check = checkRegistration(await c.req.json());
    if (!check.ok) throw problem(400, "invalid-body", JSON.stringify(check.problems));
    const entries = table.get(service) ?? new Map<string, Entry>();
    table.set(service, entries);
    const created = !entries.has(instanceId);
    entries.set(instanceId, {
      instance: { service, instanceId, ...check.fields },
      lastHeartbeatAt: Date.now(),
    });
    registrations += 1;
    changed(service);
    return c.json({ service, instanceId, ...check.fields, ttlMs }, created ? 201 : 200);
  });
  app.put(`${API}/services/:service/instances/:instanceId/heartbeat`, ownService, (c) => {
    const entry = table.get(c.req.param("service"))?.get(c.req.param("instanceId"));
    if (entry === undefined) throw problem(404, "unknown-instance", "Register again");
    entry.lastHeartbeatAt = Date.now();
    return c.body(null, 204);
  });
  app.delete(`${API}/services/:service/instances/:instanceId`, ownService, (c) => {
    const service = c.req.param("service");
    if (table.get(service)?.delete(c.req.param("instanceId")) !== true) {
      throw problem(404, "unknown-instance", "No such instance");
    }
    changed(service);
    return c.body(null, 204);
  });
  app.onError((error, c) => {
    if (error instanceof ProblemError) return problemResponse(error, c.req.path);
    throw error;
  });

  const server = Deno.serve(
    { hostname: "127.0.0.1", port: options.port ?? 0, onListen: () => {} },
    app.fetch,
  );
  let stopped: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    port: server.addr.port,
    issuer,
    get registrations() {
      return registrations;
    },
    get evictions() {
      return evictions;
    },
    stop: () =>
      stopped ??= (async () => {
        clearInterval(sweep);
        clearTimeout(warmedUp);
        closing.abort();
        await server.shutdown();
      })(),
  };
}
