import assert from "node:assert/strict";
import { TokenSourceError } from "../auth/client_credentials.ts";
import { testContext } from "../testing/test_context.ts";
import { createTestIssuer } from "../testing/test_issuer.ts";
import { startTestRegistry, type TestRegistry } from "../testing/test_registry.ts";
import { delay, waitFor } from "../testing/wait.ts";
import {
  checkRegistration,
  RegistryClient,
  type RegistryClientOptions,
  ServerSentEventParser,
} from "./registry_client.ts";
import type { ServiceInstance } from "./service_discovery.ts";

const API = "/api/v1/registry/services";
const HEARTBEAT_MS = 100;

type Registry = TestRegistry;

/** One issuer for every registry of these tests, so one client's token works on each. */
const issuer = await createTestIssuer();
/** The client of the services these tests register (a test client may register several). */
const credentials = () =>
  issuer.serviceTokens("query", { roles: ["service:query", "service:indexer"] });
const authorization = async () => ({ authorization: `Bearer ${await credentials().token()}` });

function startRegistry(options: { port?: number; ttlMs?: number } = {}): Promise<Registry> {
  return startTestRegistry({ ...options, issuer });
}

/** A loopback port nothing listens on (for a registry that is down). */
function deadPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

async function listed(registry: Registry, service: string): Promise<string[]> {
  const response = await fetch(`${registry.url}${API}/${service}/instances`, {
    headers: await authorization(),
  });
  const body = await response.json();
  return body.instances.map((instance: ServiceInstance) => instance.instanceId);
}

function client(urls: string[], options: Partial<RegistryClientOptions> = {}) {
  return new RegistryClient({
    urls,
    heartbeatMs: HEARTBEAT_MS,
    logger: testContext("client").logger,
    tokens: credentials(),
    maxRetryDelayMs: 500,
    ...options,
  });
}

function instance(service: string, instanceId: string, port = 8000): ServiceInstance {
  return {
    service,
    instanceId,
    baseUrl: `http://127.0.0.1:${port}`,
    version: "1.0.0",
    metadata: { zone: "a" },
  };
}

const ids = (instances: readonly ServiceInstance[]) => instances.map((i) => i.instanceId);

Deno.test("client heartbeats keep an instance alive past several TTLs", async () => {
  // Twenty heartbeats per TTL: only a stall of a whole second on a loaded
  // machine would evict, which is what this test must not measure.
  const ttlMs = 1000;
  const registry = await startRegistry({ ttlMs });
  const provider = client([registry.url]);
  try {
    await provider.register(instance("query", "query-1"));
    assert.deepEqual(await listed(registry, "query"), ["query-1"]);
    const until = Date.now() + 3 * ttlMs;
    await waitFor("three TTLs with the instance listed throughout", async () => {
      assert.deepEqual(await listed(registry, "query"), ["query-1"]);
      return Date.now() > until;
    });
    assert.equal(registry.evictions, 0);
  } finally {
    await provider.close();
    await registry.stop();
  }
});

Deno.test("a killed instance leaves consumers' views within the TTL", async () => {
  const ttlMs = 300;
  const registry = await startRegistry({ ttlMs });
  let killed = false;
  const victim = client([registry.url], {
    fetch: (input, init) => killed ? Promise.reject(new TypeError("killed")) : fetch(input, init),
  });
  const survivor = client([registry.url]);
  const consumer = client([registry.url]);
  try {
    await victim.register(instance("query", "query-1"));
    await survivor.register(instance("query", "query-2", 8001));
    await waitFor("both instances in the consumer's view", async () => {
      return ids(await consumer.instances("query")).length === 2;
    });
    killed = true; // no heartbeat, no deregistration: like a killed process
    // Deadline: the TTL plus slack for a loaded machine.
    await waitFor("the killed instance to leave the view", async () => {
      return ids(await consumer.instances("query")).join() === "query-2";
    }, ttlMs + 1500);
  } finally {
    await Promise.all([victim.close(), survivor.close(), consumer.close()]);
    await registry.stop();
  }
});

Deno.test("client registers again at once when the registry forgot its instance", async () => {
  const registry = await startRegistry();
  const provider = client([registry.url]);
  try {
    await provider.register(instance("query", "query-1"));
    // What an eviction or a registry restart looks like to the next heartbeat.
    const removed = await fetch(`${registry.url}${API}/query/instances/query-1`, {
      method: "DELETE",
      headers: await authorization(),
    });
    assert.equal(removed.status, 204);
    await waitFor("re-registration", async () => (await listed(registry, "query")).length === 1);
  } finally {
    await provider.close();
    await registry.stop();
  }
});

Deno.test("a restarted registry is refilled by re-registration; consumers keep their view", async () => {
  let registry = await startRegistry();
  const provider = client([registry.url]);
  const consumer = client([registry.url]);
  try {
    await provider.register(instance("query", "query-1"));
    await provider.register(instance("indexer", "indexer-1"));
    assert.deepEqual(ids(await consumer.instances("query")), ["query-1"]);
    const views: string[][] = [];
    consumer.onChange("query", (view) => views.push(ids(view)));

    await registry.stop();
    registry = await startRegistry({ port: registry.port });
    await waitFor("both instances back in the new registry", async () => {
      return (await listed(registry, "query")).length === 1 &&
        (await listed(registry, "indexer")).length === 1;
    }, 20 * HEARTBEAT_MS);
    // The consumer follows the new registry; its view never lost the instance.
    await delay(3 * HEARTBEAT_MS);
    assert.deepEqual(ids(await consumer.instances("query")), ["query-1"]);
    assert.ok(views.every((view) => view.includes("query-1")), JSON.stringify(views));
  } finally {
    await Promise.all([provider.close(), consumer.close()]);
    await registry.stop();
  }
});

Deno.test("client uses the second registry when the first is dead", async () => {
  const dead = `http://127.0.0.1:${deadPort()}`;
  const registry = await startRegistry();
  const provider = client([dead, registry.url]);
  const consumer = client([dead, registry.url]);
  try {
    await provider.register(instance("query", "query-1"));
    assert.deepEqual(await listed(registry, "query"), ["query-1"]);
    assert.deepEqual(ids(await consumer.instances("query")), ["query-1"]);
    const pushed = Promise.withResolvers<readonly ServiceInstance[]>();
    const unsubscribe = consumer.onChange("query", (view) => pushed.resolve(view));
    await provider.register(instance("query", "query-2", 8001));
    assert.deepEqual(ids(await pushed.promise), ["query-1", "query-2"]);
    unsubscribe();
    assert.deepEqual(ids(await consumer.instances("query")), ["query-1", "query-2"]);
    assert.equal((await consumer.instances("query"))[1]?.baseUrl, "http://127.0.0.1:8001");
  } finally {
    await Promise.all([provider.close(), consumer.close()]);
    await registry.stop();
  }
});

Deno.test("instances register with every registry, so consumers fail over with the whole view", async () => {
  const first = await startRegistry();
  const second = await startRegistry();
  const urls = [first.url, second.url];
  const provider = client(urls);
  const consumer = client(urls);
  try {
    await provider.register(instance("query", "query-1"));
    await waitFor("the instance in both registries", async () => {
      return (await listed(first, "query")).length === 1 &&
        (await listed(second, "query")).length === 1;
    });
    assert.deepEqual(ids(await consumer.instances("query")), ["query-1"]);
    const views: string[][] = [];
    consumer.onChange("query", (view) => views.push(ids(view)));
    await first.stop();
    await provider.register(instance("query", "query-2", 8001));
    await waitFor("the consumer to learn of query-2 through the second registry", async () => {
      return ids(await consumer.instances("query")).length === 2;
    });
    assert.ok(views.every((view) => view.includes("query-1")), JSON.stringify(views));
    await provider.deregister("query-1");
    await waitFor("the consumer to learn of the deregistration", async () => {
      return ids(await consumer.instances("query")).join() === "query-2";
    });
  } finally {
    await Promise.all([provider.close(), consumer.close()]);
    await Promise.all([first.stop(), second.stop()]);
  }
});

Deno.test("client keeps its last view while every registry is down, and follows again", async () => {
  const ttlMs = 300;
  let registry = await startRegistry({ ttlMs });
  const consumer = client([registry.url]);
  const provider = client([registry.url]);
  try {
    await fetch(`${registry.url}${API}/query/instances/query-1`, {
      method: "PUT",
      headers: { "content-type": "application/json", ...await authorization() },
      body: JSON.stringify({ baseUrl: "http://127.0.0.1:8000", version: "1" }),
    }).then((response) => response.body?.cancel());
    assert.deepEqual(ids(await consumer.instances("query")), ["query-1"]);
    await registry.stop();
    await delay(1000); // several failed reconnection rounds
    assert.deepEqual(ids(await consumer.instances("query")), ["query-1"]);
    assert.deepEqual(ids(await consumer.instances("query")), ["query-1"]);

    registry = await startRegistry({ port: registry.port, ttlMs });
    await provider.register(instance("query", "query-2", 8001));
    // query-1 never comes back: once the new registry has warmed up, the view is exact.
    await waitFor("the new registry's view", async () => {
      const view = ids(await consumer.instances("query"));
      return view.length === 1 && view[0] === "query-2";
    });
  } finally {
    await Promise.all([provider.close(), consumer.close()]);
    await registry.stop();
  }
});

Deno.test("client register() does not throw while registries are down, and retries", async () => {
  const port = deadPort();
  const provider = client([`http://127.0.0.1:${port}`]);
  let registry: Registry | undefined;
  try {
    await provider.register(instance("query", "query-1"));
    assert.deepEqual(ids(await provider.instances("query")), []);
    registry = await startRegistry({ port });
    const up = registry;
    await waitFor("the background registration", async () => {
      return (await listed(up, "query")).length === 1;
    });
    await waitFor("the client's own view", async () => {
      return ids(await provider.instances("query")).length === 1;
    });
  } finally {
    await provider.close();
    await registry?.stop();
  }
});

Deno.test("client deregister() and close() remove instances and leave nothing running", async () => {
  const registry = await startRegistry();
  const provider = client([registry.url]);
  try {
    await provider.register(instance("query", "query-1"));
    await provider.register(instance("query", "query-2"));
    await provider.register(instance("indexer", "indexer-1"));
    await provider.register(instance("stream", "query-2")); // one id, two services
    assert.deepEqual(ids(await provider.instances("query")), ["query-1", "query-2"]);
    await provider.deregister("query-2");
    assert.deepEqual(await listed(registry, "query"), ["query-1"]);
    assert.deepEqual(await listed(registry, "stream"), []);
    await waitFor("the client's view without query-2", async () => {
      return ids(await provider.instances("query")).length === 1;
    });
    await provider.close();
    assert.deepEqual(await listed(registry, "query"), []);
    assert.deepEqual(await listed(registry, "indexer"), []);
    await delay(3 * HEARTBEAT_MS);
    assert.deepEqual(await listed(registry, "query"), [], "no heartbeat registers it again");
    assert.deepEqual(ids(await provider.instances("query")), ["query-1"], "the last view");
    await assert.rejects(provider.register(instance("query", "query-3")), /closed/);
    await provider.close();
    // The test sanitizers fail the test on any timer, request or stream left behind.
  } finally {
    await provider.close();
    await registry.stop();
  }
});

Deno.test("client refuses what the registry would refuse", async () => {
  const provider = client(["http://127.0.0.1:1"]);
  try {
    await assert.rejects(provider.register(instance("Query", "q1")), TypeError);
    await assert.rejects(provider.register(instance("query", "q 1")), TypeError);
    await assert.rejects(
      provider.register({ ...instance("query", "q1"), baseUrl: "ftp://x" }),
      TypeError,
    );
    await assert.rejects(provider.instances("Query"), TypeError);
    assert.throws(() => client([]), TypeError);
    assert.throws(() => client(["registry:8761"]), TypeError);
    assert.throws(() => client(["http://127.0.0.1:1"], { heartbeatMs: 0 }), RangeError);
  } finally {
    await provider.close();
  }
  assert.deepEqual(
    checkRegistration({ baseUrl: "https://host/base/", version: "1" }),
    { ok: true, fields: { baseUrl: "https://host/base", version: "1", metadata: {} } },
  );
});

Deno.test("server-sent event parser handles split chunks, CRLF, comments and multi-line data", () => {
  const parser = new ServerSentEventParser();
  assert.deepEqual(parser.push("retry: 1000\n\n: ping\n\nevent: inst"), []);
  assert.deepEqual(parser.push("ances\r"), []);
  assert.deepEqual(parser.push('\ndata: {"a":\r\ndata:1}\r\n\r'), []);
  assert.deepEqual(parser.push("\ndata: plain\n\n"), [
    { event: "instances", data: '{"a":\n1}' },
    { event: "message", data: "plain" },
  ]);
  assert.deepEqual(parser.push("data\n\nevent: x\n\n"), [{ event: "message", data: "" }]);
});

Deno.test("client renews short-lived tokens as it heartbeats, without an eviction", async () => {
  const ttlMs = 1000;
  const registry = await startRegistry({ ttlMs });
  // Each token lives 2 s and is replaced half-way: several tokens over the test.
  const tokens = issuer.serviceTokens("query", { lifetimeSec: 2 });
  const provider = client([registry.url], { tokens });
  try {
    await provider.register(instance("query", "query-1"));
    const until = Date.now() + 4500;
    await waitFor("three token renewals with the instance listed throughout", async () => {
      assert.deepEqual(await listed(registry, "query"), ["query-1"]);
      return Date.now() > until;
    }, 10_000);
    assert.ok(tokens.issued >= 4, `${tokens.issued} tokens issued`);
    assert.equal(registry.registrations, 1);
    assert.equal(registry.evictions, 0);
  } finally {
    await provider.close();
    await registry.stop();
  }
});

Deno.test("client replaces a token the registry refuses and sends the request again at once", async () => {
  const registry = await startRegistry();
  const genuine = credentials();
  let refusedOnce = false;
  const provider = client([registry.url], {
    tokens: {
      // The first token is one the registry refuses (expired, or signed by a retired key).
      token: () => refusedOnce ? genuine.token() : Promise.resolve("expired.or.revoked"),
      invalidate() {
        refusedOnce = true;
        genuine.invalidate();
      },
    },
  });
  try {
    await provider.register(instance("query", "query-1"));
    assert.ok(refusedOnce, "the refused token was dropped");
    assert.deepEqual(await listed(registry, "query"), ["query-1"]);
  } finally {
    await provider.close();
    await registry.stop();
  }
});

Deno.test("client with another service's credentials is refused and never listed", async () => {
  const registry = await startRegistry();
  const impostor = client([registry.url], { tokens: issuer.serviceTokens("stream") });
  try {
    // register() does not throw (the registry may be fixed); it keeps trying and logs errors.
    await impostor.register(instance("query", "query-evil"));
    await delay(5 * HEARTBEAT_MS);
    assert.deepEqual(await listed(registry, "query"), []);
  } finally {
    await impostor.close();
    await registry.stop();
  }
});

Deno.test("client whose token cannot be had logs it as an error and registers once it can", async () => {
  const registry = await startRegistry();
  const genuine = credentials();
  let refused = 2;
  const errors: string[] = [];
  const logger = testContext("client").logger;
  const provider = client([registry.url], {
    // The client's logger, with its errors recorded.
    logger: new Proxy(logger, {
      get(target, property, receiver) {
        if (property !== "error") return Reflect.get(target, property, receiver);
        return (message: string, fields?: Record<string, unknown>) => {
          errors.push(message);
          target.error(message, fields);
        };
      },
    }),
    tokens: {
      token: () =>
        refused-- > 0
          ? Promise.reject(new TokenSourceError("the token endpoint answered 401"))
          : genuine.token(),
      invalidate: () => genuine.invalidate(),
    },
  });
  try {
    await provider.register(instance("query", "query-1"));
    await waitFor("the registration", async () => (await listed(registry, "query")).length === 1);
    assert.ok(
      errors.some((message) => /^Cannot get the token of/.test(message)),
      errors.join("; "),
    );
  } finally {
    await provider.close();
    await registry.stop();
  }
});
