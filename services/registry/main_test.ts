import assert from "node:assert/strict";
import { readServerSentEvents } from "../../shared/discovery/registry_client.ts";
import { waitFor } from "../../shared/testing/wait.ts";
import { createJwtVerifier } from "../../shared/auth/jwt_verifier.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { createTestIssuer } from "../../shared/testing/test_issuer.ts";
import { loadConfig } from "../config.ts";
import { startTestRegistry, type TestRegistry } from "./_testing.ts";
import { createRegistryService } from "./main.ts";

const API = "/api/v1/registry/services";

type Registry = TestRegistry;

/** The credentials of `<service>-service`: audience `registry`, role `service:<service>`. */
async function serviceAuth(registry: Registry, service: string) {
  return { authorization: `Bearer ${await registry.issuer.serviceTokens(service).token()}` };
}

/** A read of the registry API with a reader's token (audience `registry`, no service role). */
async function read(registry: Registry, path: string): Promise<Response> {
  const headers = await registry.issuer.authorization({ audience: "registry", roles: [] });
  return await fetch(`${registry.url}${path}`, { headers });
}

/** A change by the service's own client. */
async function change(
  registry: Registry,
  method: string,
  path: string,
  service: string,
  init: { headers?: Record<string, string>; body?: string } = {},
): Promise<Response> {
  return await fetch(`${registry.url}${path}`, {
    method,
    headers: { ...await serviceAuth(registry, service), ...init.headers },
    ...(init.body === undefined ? {} : { body: init.body }),
  });
}

function register(registry: Registry, service: string, id: string, body: unknown) {
  return change(registry, "PUT", `${API}/${service}/instances/${encodeURIComponent(id)}`, service, {
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

function heartbeat(registry: Registry, service: string, id: string) {
  return change(
    registry,
    "PUT",
    `${API}/${service}/instances/${encodeURIComponent(id)}/heartbeat`,
    service,
  );
}

function deregister(registry: Registry, service: string, id: string) {
  return change(
    registry,
    "DELETE",
    `${API}/${service}/instances/${encodeURIComponent(id)}`,
    service,
  );
}

async function listIds(registry: Registry, service: string): Promise<string[]> {
  const body = await (await read(registry, `${API}/${service}/instances`)).json();
  return body.instances.map((instance: { instanceId: string }) => instance.instanceId);
}

interface Snapshot {
  service: string;
  warmingUp: boolean;
  instances: { instanceId: string; version: string }[];
}

/** A watch stream read event by event. */
async function openWatch(registry: Registry, service: string) {
  const response = await read(registry, `${API}/${service}/watch`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const events = readServerSentEvents(response.body!);
  return {
    /** The next `instances` event; undefined once the stream ended. */
    async next(): Promise<Snapshot | undefined> {
      const { done, value } = await events.next();
      if (done) return undefined;
      assert.equal(value.event, "instances");
      return JSON.parse(value.data);
    },
    /** Reads events until one satisfies `condition`. */
    async until(condition: (snapshot: Snapshot) => boolean): Promise<Snapshot> {
      for (;;) {
        const snapshot = await this.next();
        assert.ok(snapshot !== undefined, "the watch stream ended early");
        if (condition(snapshot)) return snapshot;
      }
    },
    close: () => events.return(undefined),
  };
}

/** Fails instead of hanging when `promise` does not settle in time. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const BODY = { baseUrl: "http://127.0.0.1:8183", version: "1.2.3", metadata: { zone: "a" } };

Deno.test("registry API registers, lists, replaces and deregisters instances", async () => {
  const registry = await startTestRegistry();
  try {
    const created = await register(registry, "query", "query-host:1", BODY);
    assert.equal(created.status, 201);
    assert.equal(created.headers.get("location"), `${API}/query/instances/query-host%3A1`);
    const body = await created.json();
    assert.deepEqual({ ...body, registeredAt: "", lastHeartbeatAt: "" }, {
      service: "query",
      instanceId: "query-host:1",
      ...BODY,
      registeredAt: "",
      lastHeartbeatAt: "",
      ttlMs: 3000,
    });
    assert.match(body.registeredAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    const replaced = await register(registry, "query", "query-host:1", {
      ...BODY,
      baseUrl: "http://127.0.0.1:9183/",
      version: "1.2.4",
    });
    assert.equal(replaced.status, 200);
    const replacedBody = await replaced.json();
    assert.equal(replacedBody.baseUrl, "http://127.0.0.1:9183", "the trailing slash is dropped");
    assert.equal(replacedBody.registeredAt, body.registeredAt);

    assert.equal((await register(registry, "query", "query-2", { ...BODY })).status, 201);
    assert.equal(
      (await register(registry, "indexer", "indexer-1", { baseUrl: BODY.baseUrl, version: "1" }))
        .status,
      201,
    );
    const list = await (await read(registry, `${API}/query/instances`)).json();
    assert.equal(list.service, "query");
    assert.deepEqual(
      list.instances.map((i: Record<string, unknown>) => [i.instanceId, i.version, i.metadata]),
      [["query-2", "1.2.3", { zone: "a" }], ["query-host:1", "1.2.4", { zone: "a" }]],
    );
    assert.match(list.instances[0].lastHeartbeatAt, /Z$/);
    const services = await (await read(registry, API)).json();
    assert.deepEqual(services.services, [
      { service: "indexer", instances: 1 },
      { service: "query", instances: 2 },
    ]);
    assert.deepEqual(await listIds(registry, "unknown"), []);

    const deleted = await deregister(registry, "query", "query-2");
    assert.equal(deleted.status, 204);
    await deleted.body?.cancel();
    const again = await deregister(registry, "query", "query-2");
    assert.equal(again.status, 404);
    assert.equal((await again.json()).type, "urn:twitterapi:problem:unknown-instance");
    assert.deepEqual(await listIds(registry, "query"), ["query-host:1"]);
  } finally {
    await registry.stop();
  }
});

Deno.test("registry API refuses invalid names, ids and bodies with 400 problems", async () => {
  const registry = await startTestRegistry();
  try {
    const cases: [string, string, unknown, string][] = [
      ["Query", "q1", BODY, "service"],
      ["1query", "q1", BODY, "service"],
      ["q".repeat(64), "q1", BODY, "service"],
      ["query", "q 1", BODY, "instanceId"],
      ["query", "q".repeat(129), BODY, "instanceId"],
      ["query", "q1", { ...BODY, baseUrl: "ftp://host/x" }, "body.baseUrl"],
      ["query", "q1", { ...BODY, baseUrl: "/relative" }, "body.baseUrl"],
      ["query", "q1", { ...BODY, baseUrl: "http://host:1/?a=b" }, "body.baseUrl"],
      ["query", "q1", { ...BODY, baseUrl: 8183 }, "body.baseUrl"],
      ["query", "q1", { ...BODY, version: "" }, "body.version"],
      ["query", "q1", { ...BODY, version: "v".repeat(65) }, "body.version"],
      ["query", "q1", { baseUrl: BODY.baseUrl }, "body.version"],
      ["query", "q1", { ...BODY, metadata: { nested: { a: "b" } } }, "body.metadata.nested"],
      ["query", "q1", { ...BODY, metadata: { port: 1 } }, "body.metadata.port"],
      ["query", "q1", { ...BODY, metadata: ["a"] }, "body.metadata"],
      [
        "query",
        "q1",
        {
          ...BODY,
          metadata: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, "v"])),
        },
        "body.metadata",
      ],
    ];
    for (const [service, id, body, field] of cases) {
      const response = await register(registry, service, id, body);
      assert.equal(response.status, 400, `${service}/${id} ${JSON.stringify(body)}`);
      assert.equal(response.headers.get("content-type"), "application/problem+json");
      const problem = await response.json();
      const named = problem.errors.map((e: { parameter: string }) => e.parameter);
      assert.ok(named.includes(field), `${field} in ${JSON.stringify(problem)}`);
    }
    const notJson = await change(registry, "PUT", `${API}/query/instances/q1`, "query", {
      headers: { "content-type": "application/json" },
      body: "{",
    });
    assert.equal(notJson.status, 400);
    assert.equal((await notJson.json()).type, "urn:twitterapi:problem:invalid-body");
    const text = await change(registry, "PUT", `${API}/query/instances/q1`, "query", {
      body: "x",
    });
    assert.equal(text.status, 415);
    await text.body?.cancel();
    for (const path of [`${API}/Bad/instances`, `${API}/Bad/watch`]) {
      const response = await read(registry, path);
      assert.equal(response.status, 400, path);
      assert.equal((await response.json()).type, "urn:twitterapi:problem:invalid-parameter");
    }
    assert.deepEqual(await listIds(registry, "query"), []);
  } finally {
    await registry.stop();
  }
});

Deno.test("registry heartbeat renews a known instance and answers 404 for an unknown one", async () => {
  const registry = await startTestRegistry();
  try {
    const unknown = await heartbeat(registry, "query", "q1");
    assert.equal(unknown.status, 404);
    assert.equal(unknown.headers.get("content-type"), "application/problem+json");
    assert.equal((await unknown.json()).type, "urn:twitterapi:problem:unknown-instance");
    const first = await (await register(registry, "query", "q1", BODY)).json();
    await waitFor("the clock to move", () => Date.now() > Date.parse(first.lastHeartbeatAt) + 5);
    const renewed = await heartbeat(registry, "query", "q1");
    assert.equal(renewed.status, 204);
    await renewed.body?.cancel();
    const [listed] = (await (await read(registry, `${API}/query/instances`)).json()).instances;
    assert.ok(Date.parse(listed.lastHeartbeatAt) > Date.parse(first.lastHeartbeatAt));
    assert.equal(listed.registeredAt, first.registeredAt);
  } finally {
    await registry.stop();
  }
});

Deno.test("registry watch delivers the full list at once and after every change", async () => {
  const registry = await startTestRegistry();
  const watch = await openWatch(registry, "query");
  try {
    const initial = await watch.next();
    assert.deepEqual(initial, { service: "query", warmingUp: true, instances: [] });
    await register(registry, "query", "q1", BODY);
    assert.deepEqual((await watch.next())?.instances.map((i) => i.instanceId), ["q1"]);
    await register(registry, "indexer", "i1", BODY);
    await register(registry, "query", "q2", BODY);
    assert.deepEqual((await watch.next())?.instances.map((i) => i.instanceId), ["q1", "q2"]);
    await register(registry, "query", "q1", { ...BODY, version: "2" });
    assert.deepEqual((await watch.next())?.instances.map((i) => i.version), ["2", "1.2.3"]);
    await (await deregister(registry, "query", "q2")).body?.cancel();
    assert.deepEqual((await watch.next())?.instances.map((i) => i.instanceId), ["q1"]);
  } finally {
    await watch.close();
    await registry.stop();
  }
});

Deno.test("registry evicts an instance that stops heart-beating, from list and watch", async () => {
  // Twenty heartbeats per TTL, so a loaded machine cannot evict the live one.
  const ttlMs = 1000;
  const registry = await startTestRegistry({ ttlMs });
  const watch = await openWatch(registry, "query");
  let beating: ReturnType<typeof setInterval> | undefined;
  try {
    await watch.next();
    await register(registry, "query", "alive", BODY);
    await register(registry, "query", "silent", BODY);
    beating = setInterval(() => {
      heartbeat(registry, "query", "alive").then((response) => response.body?.cancel()).catch(
        () => {}, // one in flight when the registry stops
      );
    }, 50);
    await watch.until((s) => s.instances.length === 2);
    const silentSince = Date.now();
    // Deadline: the TTL, plus the sweep that notices, plus slack for a loaded machine.
    await waitFor("the silent instance to leave the list", async () => {
      const ids = await listIds(registry, "query");
      return ids.length === 1 && ids[0] === "alive";
    }, ttlMs + 1500);
    const evicted = await within(
      ttlMs + 1500 - (Date.now() - silentSince),
      "the eviction event",
      watch.until((s) => !s.instances.some((i) => i.instanceId === "silent")),
    );
    assert.deepEqual(evicted.instances.map((i) => i.instanceId), ["alive"]);
    // The heart-beating instance outlives several TTLs.
    const aliveUntil = Date.now() + 3 * ttlMs;
    await waitFor("three TTLs", () => Date.now() > aliveUntil, 10 * ttlMs);
    assert.deepEqual(await listIds(registry, "query"), ["alive"]);
    const metrics = await (await fetch(`${registry.url}/metrics`)).text();
    assert.match(metrics, /registry_evictions_total 1\n/);
    assert.match(metrics, /registry_registrations_total 2\n/);
    assert.match(metrics, /registry_instances\{registered_service="query"\} 1\n/);
  } finally {
    clearInterval(beating);
    await watch.close();
    await registry.stop();
  }
});

Deno.test("registry watch pings, and ends when the client goes away", async () => {
  const registry = await startTestRegistry({ pingMs: 20 });
  try {
    const response = await read(registry, `${API}/query/watch`);
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes(": ping\n\n")) {
      const { value, done } = await reader.read();
      assert.equal(done, false);
      text += value;
    }
    assert.match(text, /^retry: 1000\n\nevent: instances\ndata: \{"service":"query"/);
    await reader.cancel();
    // The stream closed on the server side: shutting down does not wait for it.
    await within(5000, "the server shutdown", registry.server.shutdown());
  } finally {
    await registry.stop();
  }
});

Deno.test("registry stop() ends open watch streams, so the server shuts down", async () => {
  const registry = await startTestRegistry();
  const first = await openWatch(registry, "query");
  const second = await openWatch(registry, "indexer");
  assert.ok(await first.next());
  assert.ok(await second.next());
  await registry.service.stop();
  assert.equal(await first.next(), undefined);
  assert.equal(await second.next(), undefined);
  const refused = await read(registry, `${API}/query/watch`);
  assert.equal(refused.status, 503);
  await refused.body?.cancel();
  await within(5000, "the server shutdown", registry.stop());
});

Deno.test("registry is ready as soon as it is up", async () => {
  const registry = await startTestRegistry();
  try {
    const response = await fetch(`${registry.url}/ready`);
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { status: "ready", checks: {} });
  } finally {
    await registry.stop();
  }
});

Deno.test("registry API refuses changes without a token, with a user's token and for another service", async () => {
  const registry = await startTestRegistry();
  try {
    const path = `${API}/query/instances/impostor-1`;
    const body = JSON.stringify(BODY);
    const json = { "content-type": "application/json" };
    const attempts: [string, Record<string, string>, number, string][] = [
      ["anonymous", {}, 401, 'Bearer realm="twitterapi"'],
      [
        "a user's token",
        await registry.issuer.authorization({
          audience: ["query", "registry"],
          roles: ["app_user_role", "app_super_user_role"],
          username: "app_user",
        }),
        403,
        "insufficient_scope",
      ],
      ["another service's client", await serviceAuth(registry, "stream"), 403, "not service:query"],
      [
        "a token for another audience",
        await registry.issuer.authorization({ audience: "query", roles: ["service:query"] }),
        401,
        "invalid_token",
      ],
    ];
    for (const [who, headers, status, expected] of attempts) {
      for (
        const [method, target] of [["PUT", path], ["PUT", `${path}/heartbeat`], [
          "DELETE",
          path,
        ]] as const
      ) {
        const response = await fetch(`${registry.url}${target}`, {
          method,
          headers: { ...json, ...headers },
          ...(method === "PUT" && !target.endsWith("/heartbeat") ? { body } : {}),
        });
        const problem = await response.json();
        assert.equal(
          response.status,
          status,
          `${who}: ${method} ${target}: ${JSON.stringify(problem)}`,
        );
        assert.equal(response.headers.get("content-type"), "application/problem+json");
        const challenge = `${response.headers.get("www-authenticate")} ${problem.detail}`;
        assert.ok(challenge.includes(expected), `${who}: ${challenge}`);
      }
    }
    assert.deepEqual(await listIds(registry, "query"), []);
    assert.equal((await register(registry, "query", "query-1", BODY)).status, 201);
    // Nobody but query's client renews or removes query's instance.
    const foreign = await fetch(`${registry.url}${API}/query/instances/query-1`, {
      method: "DELETE",
      headers: await serviceAuth(registry, "indexer"),
    });
    assert.equal(foreign.status, 403);
    await foreign.body?.cancel();
    assert.deepEqual(await listIds(registry, "query"), ["query-1"]);
  } finally {
    await registry.stop();
  }
});

Deno.test("registry API answers reads only with a token for the audience registry", async () => {
  const registry = await startTestRegistry();
  try {
    await (await register(registry, "query", "query-1", BODY)).body?.cancel();
    const paths = [API, `${API}/query/instances`, `${API}/query/watch`, "/api/v1/registry/other"];
    for (const path of paths) {
      const anonymous = await fetch(`${registry.url}${path}`);
      assert.equal(anonymous.status, 401, path);
      assert.equal(anonymous.headers.get("www-authenticate"), 'Bearer realm="twitterapi"');
      assert.equal((await anonymous.json()).type, "urn:twitterapi:problem:unauthorized");
      const elsewhere = await fetch(`${registry.url}${path}`, {
        headers: await registry.issuer.authorization({ audience: "query" }),
      });
      assert.equal(elsewhere.status, 401, path);
      await elsewhere.body?.cancel();
    }
    // A reader needs no service role: Prometheus's client reads every service.
    const listed = await read(registry, `${API}/query/instances`);
    assert.equal(listed.status, 200);
    assert.equal((await listed.json()).instances.length, 1);
    // The operational endpoints stay open to the process's own probes.
    const health = await fetch(`${registry.url}/health`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    await registry.stop();
  }
});

Deno.test("registry starts without its issuer and answers 503 until the issuer's keys can be read", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = listener.addr.port;
  listener.close();
  // The issuer is read on the first request, never at start: start() does not wait for it.
  const service = createRegistryService({
    config: loadConfig({}),
    context: testContext("registry"),
    verifier: createJwtVerifier({
      issuer: `http://127.0.0.1:${deadPort}/realms/twitterapi`,
      audience: "registry",
    }),
  });
  await within(1000, "start()", service.start());
  try {
    const health = await service.app.request("/health");
    assert.equal(health.status, 200);
    const token = await (await createTestIssuer()).token({
      audience: "registry",
      roles: ["service:query"],
    });
    const response = await service.app.request(`${API}/query/instances/q1`, {
      method: "PUT",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(BODY),
    });
    assert.equal(response.status, 503);
    assert.equal(response.headers.get("retry-after"), "5");
    assert.equal((await response.json()).type, "urn:twitterapi:problem:unavailable");
  } finally {
    await service.stop();
  }
});

Deno.test("registry serves every registered instance, and itself, as Prometheus HTTP service discovery", async () => {
  const registry = await startTestRegistry();
  try {
    await (await register(registry, "query", "query-1", {
      baseUrl: "http://10.0.0.5:8183",
      version: "1.2.3",
      metadata: { "wordcount-partitions": "0,2" },
    })).body?.cancel();
    await (await register(registry, "gateway", "gateway-1", {
      baseUrl: "https://gateway.example/edge",
      version: "1.2.3",
      metadata: {},
    })).body?.cancel();
    // Its /metrics on a management port of its own: scraped there.
    await (await register(registry, "gateway", "gateway-2", {
      baseUrl: "http://10.0.0.6:9092",
      version: "1.2.3",
      metadata: { metricsUrl: "http://10.0.0.6:9093/metrics" },
    })).body?.cancel();
    const anonymous = await fetch(`${registry.url}/api/v1/registry/prometheus/targets`);
    assert.equal(anonymous.status, 401, "Prometheus reads with a token too");
    await anonymous.body?.cancel();
    const response = await read(registry, "/api/v1/registry/prometheus/targets");
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "application/json");
    assert.deepEqual(await response.json(), [
      {
        targets: [`127.0.0.1:${registry.port}`],
        labels: {
          service: "registry",
          instance: "registry-test",
          __scheme__: "http",
          __metrics_path__: "/metrics",
          __meta_registry_version: "0.0.0-test",
          __meta_registry_base_url: `http://127.0.0.1:${registry.port}`,
        },
      },
      {
        targets: ["gateway.example:443"],
        labels: {
          service: "gateway",
          instance: "gateway-1",
          __scheme__: "https",
          __metrics_path__: "/edge/metrics",
          __meta_registry_version: "1.2.3",
          __meta_registry_base_url: "https://gateway.example/edge",
        },
      },
      {
        targets: ["10.0.0.6:9093"],
        labels: {
          service: "gateway",
          instance: "gateway-2",
          __scheme__: "http",
          __metrics_path__: "/metrics",
          __meta_registry_version: "1.2.3",
          __meta_registry_base_url: "http://10.0.0.6:9092",
          __meta_registry_metadata_metricsUrl: "http://10.0.0.6:9093/metrics",
        },
      },
      {
        targets: ["10.0.0.5:8183"],
        labels: {
          service: "query",
          instance: "query-1",
          __scheme__: "http",
          __metrics_path__: "/metrics",
          __meta_registry_version: "1.2.3",
          __meta_registry_base_url: "http://10.0.0.5:8183",
          __meta_registry_metadata_wordcount_partitions: "0,2",
        },
      },
    ]);

    // A deregistered instance is no target any more.
    await (await deregister(registry, "query", "query-1")).body?.cancel();
    const after = await (await read(registry, "/api/v1/registry/prometheus/targets")).json();
    assert.deepEqual(
      after.map((group: { labels: { instance: string } }) => group.labels.instance),
      ["registry-test", "gateway-1", "gateway-2"],
    );
  } finally {
    await registry.stop();
  }
});
