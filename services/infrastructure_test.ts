import assert from "node:assert/strict";
import { serviceLogger } from "../shared/log/log.ts";
import { loadConfig } from "./config.ts";
import { Infrastructure, REAL_ENGINES, type RealEngines } from "./infrastructure.ts";

/** The real engines' loaders, each recording its engine's name when it is called. */
function countedEngines(): { engines: RealEngines; loaded: Set<string> } {
  const loaded = new Set<string>();
  const engines = Object.fromEntries(
    Object.entries(REAL_ENGINES).map(([name, load]) => [name, () => {
      loaded.add(name);
      return load();
    }]),
  ) as unknown as RealEngines;
  return { engines, loaded };
}

/** Every engine real, as compose gives every process; nothing here connects to one. */
const EVERY_ENGINE_REAL = {
  EVENT_LOG: "kafka",
  KAFKA_BROKERS: "127.0.0.1:1",
  SEARCH_INDEX: "elasticsearch",
  ELASTICSEARCH_URL: "http://127.0.0.1:1",
  RATE_LIMIT_STORE: "redis",
  REDIS_URL: "redis://127.0.0.1:1",
  ZIPKIN_URL: "http://127.0.0.1:1",
  LOG_SHIPPING: "elasticsearch",
};

Deno.test("a process on the embedded engines loads no real engine's client", async () => {
  const { engines, loaded } = countedEngines();
  const infrastructure = new Infrastructure(loadConfig({}), serviceLogger("test", "t"), engines);
  await infrastructure.logs();
  await infrastructure.tracingOptions();
  await infrastructure.traceReader();
  await infrastructure.eventLog();
  await infrastructure.searchIndex();
  await infrastructure.rateLimitStore();
  await infrastructure.close();
  assert.deepEqual([...loaded], []);
});

Deno.test("each real engine's client is loaded when a service first asks for its adapter", async () => {
  const { engines, loaded } = countedEngines();
  const infrastructure = new Infrastructure(
    loadConfig(EVERY_ENGINE_REAL),
    serviceLogger("test", "t"),
    engines,
  );
  try {
    assert.deepEqual([...loaded], [], "nothing before an adapter is asked for");
    // What a process running the gateway alone asks for.
    await infrastructure.logs();
    await infrastructure.tracingOptions();
    await infrastructure.rateLimitStore();
    assert.deepEqual([...loaded].sort(), ["elasticsearch", "redis", "zipkin"]);
    await infrastructure.eventLog();
    assert.deepEqual([...loaded].sort(), ["elasticsearch", "platformatic", "redis", "zipkin"]);
    await infrastructure.database("analytics", "postgres://user:secret@127.0.0.1:1/analytics");
    assert.deepEqual(
      [...loaded].sort(),
      ["elasticsearch", "platformatic", "postgres", "redis", "zipkin"],
      "kafkajs is never loaded with KAFKA_CLIENT=platformatic",
    );
  } finally {
    await infrastructure.close();
  }
});

Deno.test("the kafkajs event log loads kafkajs, not @platformatic/kafka", async () => {
  const { engines, loaded } = countedEngines();
  const infrastructure = new Infrastructure(
    loadConfig({ ...EVERY_ENGINE_REAL, KAFKA_CLIENT: "kafkajs" }),
    serviceLogger("test", "t"),
    engines,
  );
  try {
    await infrastructure.eventLog();
    assert.deepEqual([...loaded], ["kafkajs"]);
  } finally {
    await infrastructure.close();
  }
});

Deno.test("an adapter asked for twice at once is made once", async () => {
  const infrastructure = new Infrastructure(loadConfig({}), serviceLogger("test", "t"));
  try {
    const [first, second] = await Promise.all([
      infrastructure.eventLog(),
      infrastructure.eventLog(),
    ]);
    assert.equal(first, second);
  } finally {
    await infrastructure.close();
  }
});
