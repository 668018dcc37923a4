import assert from "node:assert/strict";
import { RefreshableConfig } from "./refreshable_config.ts";
import { variablesOf } from "./remote_config.ts";
import { integer, loadSettings } from "./setting.ts";

const tree = {
  rate: integer("RATE", { default: 1, min: 1, doc: "refreshable" }),
  port: integer("PORT", { default: 80, doc: "restart only" }),
};
const load = (variables: Readonly<Record<string, string>>) => loadSettings(tree, variables);

function refreshable() {
  return new RefreshableConfig({
    load,
    names: ["RATE", "PORT"],
    refreshable: new Set(["RATE"]),
    initial: { variables: { RATE: "2" }, version: "v1", source: "config-service" },
  });
}

Deno.test("RefreshableConfig applies refreshable settings at once and reports the others", () => {
  const config = refreshable();
  const seen: number[] = [];
  config.subscribe({ apply: (next, previous) => seen.push(previous.rate, next.rate) });
  const result = config.propose({ RATE: "3", PORT: "81" }, "v2", "config-service");
  assert.deepEqual(result, { outcome: "applied", changed: ["RATE"], restartRequired: ["PORT"] });
  assert.deepEqual(config.current, { rate: 3, port: 80 });
  assert.deepEqual(seen, [2, 3]);
  assert.deepEqual(config.status, {
    version: "v2",
    source: "config-service",
    restartRequired: ["PORT"],
  });
});

Deno.test("RefreshableConfig refuses an invalid set whole, and a subscriber's veto", () => {
  const config = refreshable();
  let applied = 0;
  config.subscribe({
    validate: (next) => {
      if (next.rate === 13) throw new RangeError("RATE: not 13");
    },
    apply: () => applied++,
  });
  const bad = config.propose({ RATE: "3", PORT: "nope" }, "v2", "config-service");
  assert.equal(bad.outcome, "refused");
  assert.match((bad as { reason: string }).reason, /PORT: must be an integer/);
  const vetoed = config.propose({ RATE: "13" }, "v3", "config-service");
  assert.equal(vetoed.outcome, "refused");
  assert.deepEqual(config.current, { rate: 2, port: 80 });
  assert.equal(config.status.version, "v1");
  assert.equal(config.status.refused?.version, "v3");
  assert.equal(applied, 0);
});

Deno.test("variablesOf() maps Spring keys to settings, the most specific source first, lists joined", () => {
  const names = new Set(["GATEWAY_RATE_LIMITS", "LOG_LEVEL", "EVENT_LOG"]);
  const { variables, origins } = variablesOf(
    [
      {
        name: "file:gateway.yml",
        source: { "gateway.rate-limits[1]": "b=1/1", "gateway.rate-limits[0]": "a=1/1" },
      },
      {
        name: "file:application.yml",
        source: { "gateway.rate-limits": "c=1/1", LOG_LEVEL: "debug" },
      },
    ],
    names,
    new Set(),
  );
  assert.deepEqual(variables, { GATEWAY_RATE_LIMITS: "a=1/1,b=1/1", LOG_LEVEL: "debug" });
  assert.deepEqual(origins.GATEWAY_RATE_LIMITS, {
    key: "gateway.rate-limits",
    file: "file:gateway.yml",
  });
  assert.throws(
    () => variablesOf([{ name: "file:x.yml", source: { "gatewy.port": 1 } }], names, new Set()),
    /'gatewy.port' in file:x.yml names no setting/,
  );
  assert.throws(
    () =>
      variablesOf(
        [{ name: "file:x.yml", source: { "event-log": "kafka" } }],
        names,
        new Set(["EVENT_LOG"]),
      ),
    /read from the environment only/,
  );
});
