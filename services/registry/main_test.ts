import assert from "node:assert/strict";
import { readServerSentEvents } from "../../shared/discovery/registry_client.ts";
import { waitFor } from "../../shared/testing/wait.ts";
import { startTestRegistry, type TestRegistry } from "./_testing.ts";

const API = "/api/v1/registry/services";

type Registry = TestRegistry;

function register(registry: Registry, service: string, id: string, body: unknown) {
  return fetch(`${registry.url}${API}/${service}/instances/${encodeURIComponent(id)}`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

function heartbeat(registry: Registry, service: string, id: string) {
  return fetch(`${registry.url}${API}/${service}/instances/${encodeURIComponent(id)}/heartbeat`, {
    method: "PUT",
  });
}

async function listIds(registry: Registry, service: string): Promise<string[]> {
  const body = await (await fetch(`${registry.url}${API}/${service}/instances`)).json();
  return body.instances.map((instance: { instanceId: string }) => instance.instanceId);
}

interface Snapshot {
  service: string;
  warmingUp: boolean;
  instances: { instanceId: string; version: string }[];
}

/** A watch stream read event by event. */
async function openWatch(registry: Registry, service: string) {
  const response = await fetch(`${registry.url}${API}/${service}/watch`);
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
    const list = await (await fetch(`${registry.url}${API}/query/instances`)).json();
    assert.equal(list.service, "query");
    assert.deepEqual(
      list.instances.map((i: Record<string, unknown>) => [i.instanceId, i.version, i.metadata]),
      [["query-2", "1.2.3", { zone: "a" }], ["query-host:1", "1.2.4", { zone: "a" }]],
    );
    assert.match(list.instances[0].lastHeartbeatAt, /Z$/);
    const services = await (await fetch(`${registry.url}${API}`)).json();
    assert.deepEqual(services.services, [
      { service: "indexer", instances: 1 },
      { service: "query", instances: 2 },
    ]);
    assert.deepEqual(await listIds(registry, "unknown"), []);

    const url = `${registry.url}${API}/query/instances/query-2`;
    const deleted = await fetch(url, { method: "DELETE" });
    assert.equal(deleted.status, 204);
    await deleted.body?.cancel();
    const again = await fetch(url, { method: "DELETE" });
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
      ["query", "q1", { ...BODY, baseUrl: "ftp://host/x" }, "baseUrl"],
      ["query", "q1", { ...BODY, baseUrl: "/relative" }, "baseUrl"],
      ["query", "q1", { ...BODY, baseUrl: "http://host:1/?a=b" }, "baseUrl"],
      ["query", "q1", { ...BODY, baseUrl: 8183 }, "baseUrl"],
      ["query", "q1", { ...BODY, version: "" }, "version"],
      ["query", "q1", { ...BODY, version: "v".repeat(65) }, "version"],
      ["query", "q1", { baseUrl: BODY.baseUrl }, "version"],
      ["query", "q1", { ...BODY, metadata: { nested: { a: "b" } } }, "metadata.nested"],
      ["query", "q1", { ...BODY, metadata: { port: 1 } }, "metadata.port"],
      ["query", "q1", { ...BODY, metadata: ["a"] }, "metadata"],
      [
        "query",
        "q1",
        {
          ...BODY,
          metadata: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, "v"])),
        },
        "metadata",
      ],
    ];
    for (const [service, id, body, field] of cases) {
      const response = await register(registry, service, id, body);
      assert.equal(response.status, 400, `${service}/${id} ${JSON.stringify(body)}`);
      assert.equal(response.headers.get("content-type"), "application/problem+json");
      const problem = await response.json();
      const named = problem.errors.map((e: Record<string, string>) => e.parameter ?? e.field);
      assert.ok(named.includes(field), `${field} in ${JSON.stringify(problem)}`);
    }
    const notJson = await fetch(`${registry.url}${API}/query/instances/q1`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: "{",
    });
    assert.equal(notJson.status, 400);
    assert.equal((await notJson.json()).type, "urn:twitterapi:problem:invalid-body");
    const text = await fetch(`${registry.url}${API}/query/instances/q1`, {
      method: "PUT",
      body: "x",
    });
    assert.equal(text.status, 415);
    await text.body?.cancel();
    for (const path of [`${API}/Bad/instances`, `${API}/Bad/watch`]) {
      const response = await fetch(`${registry.url}${path}`);
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
    const [listed] = (await (await fetch(`${registry.url}${API}/query/instances`)).json())
      .instances;
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
    await (await fetch(`${registry.url}${API}/query/instances/q2`, { method: "DELETE" })).body
      ?.cancel();
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
      heartbeat(registry, "query", "alive").then((response) => response.body?.cancel());
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
    const response = await fetch(`${registry.url}${API}/query/watch`);
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
  const refused = await fetch(`${registry.url}${API}/query/watch`);
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
    const response = await fetch(`${registry.url}/api/v1/registry/prometheus/targets`);
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
    await (await fetch(`${registry.url}${API}/query/instances/query-1`, { method: "DELETE" })).body
      ?.cancel();
    const after = await (await fetch(`${registry.url}/api/v1/registry/prometheus/targets`)).json();
    assert.deepEqual(
      after.map((group: { labels: { instance: string } }) => group.labels.instance),
      ["registry-test", "gateway-1"],
    );
  } finally {
    await registry.stop();
  }
});
