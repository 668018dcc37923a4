import assert from "node:assert/strict";
import {
  boolean,
  ConfigError,
  decimal,
  instant,
  integer,
  list,
  listSettings,
  loadSettings,
  oneOf,
  text,
} from "./setting.ts";

const tree = {
  port: integer("PORT", { default: 8080, min: 0, max: 65535, doc: "Port" }),
  nested: {
    mode: oneOf("MODE", ["memory", "kafka"], { default: "memory", doc: "Mode" }),
    name: text("NAME", { default: "x", doc: "Name", pattern: /^[a-z]+$/ }),
    enabled: boolean("ENABLED", { default: true, doc: "Enabled" }),
    words: list("WORDS", { default: ["a", "b"], doc: "Words" }),
    since: instant("SINCE", { default: 0, doc: "Since" }),
  },
};

Deno.test("loadSettings() uses defaults for unset variables", () => {
  const config = loadSettings(tree, {});
  assert.deepEqual(config, {
    port: 8080,
    nested: { mode: "memory", name: "x", enabled: true, words: ["a", "b"], since: 0 },
  });
});

Deno.test("loadSettings() parses every kind of setting", () => {
  const config = loadSettings(tree, {
    PORT: " 9000 ",
    MODE: "kafka",
    NAME: "abc",
    ENABLED: "false",
    WORDS: "Java, Kafka",
    SINCE: "2026-01-01T00:00:00Z",
  });
  assert.equal(config.port, 9000);
  assert.equal(config.nested.mode, "kafka");
  assert.equal(config.nested.name, "abc");
  assert.equal(config.nested.enabled, false);
  assert.deepEqual(config.nested.words, ["Java", "Kafka"]);
  assert.equal(config.nested.since, Date.UTC(2026, 0, 1));
});

Deno.test("loadSettings() names every invalid variable in one error", () => {
  let error: unknown;
  try {
    loadSettings(tree, {
      PORT: "70000",
      MODE: "redis",
      NAME: "A1",
      ENABLED: "maybe",
      WORDS: "a,,b",
      SINCE: "2026-01-01",
    });
  } catch (caught) {
    error = caught;
  }
  assert.ok(error instanceof ConfigError);
  assert.deepEqual(error.issues.map((issue) => issue.env), [
    "PORT",
    "MODE",
    "NAME",
    "ENABLED",
    "WORDS",
    "SINCE",
  ]);
  assert.match(error.message, /PORT: must be between 0 and 65535, got 70000/);
  assert.match(error.message, /MODE: must be one of memory, kafka, got 'redis'/);
});

Deno.test("integer() rejects fractions and words", () => {
  const port = tree.port;
  assert.throws(() => port.parse("1.5"), /must be an integer/);
  assert.throws(() => port.parse("ten"), /must be an integer/);
  assert.throws(() => port.parse(""), /must be an integer/);
});

Deno.test("text() refuses an empty value unless its default is empty or it allows one", () => {
  assert.throws(() => text("FILE", { default: "a.json", doc: "File" }).parse(" "), {
    message: "must not be empty",
  });
  assert.equal(text("FILE", { default: "a.json", doc: "File", allowEmpty: true }).parse(""), "");
  assert.equal(text("URL", { default: "", doc: "URL" }).parse(""), "");
});

Deno.test("listSettings() lists every leaf once", () => {
  assert.deepEqual(listSettings(tree).map((setting) => setting.env), [
    "PORT",
    "MODE",
    "NAME",
    "ENABLED",
    "WORDS",
    "SINCE",
  ]);
});

Deno.test("decimal() reads a number within its bounds", () => {
  const ratio = decimal("RATIO", { default: 1, min: 0, max: 1, doc: "Ratio" });
  assert.equal(ratio.parse("0.25"), 0.25);
  assert.equal(ratio.parse(" 1 "), 1);
  assert.equal(ratio.parse(".5"), 0.5);
  assert.throws(() => ratio.parse("1.5"), /between 0 and 1/);
  assert.throws(() => ratio.parse("half"), /must be a number/);
  assert.throws(() => ratio.parse("1e-3"), /must be a number/);
});
