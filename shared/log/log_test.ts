import assert from "node:assert/strict";
import { configureTracing, inSpan, serviceTracer } from "../trace/tracing.ts";
import { configureLogging, logShippingLogger, serviceLogger, shutdownLogging } from "./log.ts";
import { MemoryLogStore } from "./memory_log_store.ts";
import { getPrettyFormatter } from "./pretty_formatter.ts";

Deno.test("logging writes JSON lines with service, instance, trace and span ids", async () => {
  configureTracing();
  const chunks: Uint8Array[] = [];
  let ids = { traceId: "unset", spanId: "unset" };
  await configureLogging({
    level: "debug",
    stream: new WritableStream({ write: (chunk) => void chunks.push(chunk) }),
  });
  try {
    const logger = serviceLogger("query", "query-1");
    await inSpan(serviceTracer("query"), "work", {}, async (span) => {
      ids = span.spanContext();
      await Promise.resolve();
      logger.info("Searched {count} tweets", { count: 3 });
    });
    logger.error("Failed", { error: new Error("boom", { cause: new Error("root") }) });
  } finally {
    await shutdownLogging();
  }
  const lines = new TextDecoder().decode(new Uint8Array(chunks.flatMap((chunk) => [...chunk])))
    .trim().split("\n").map((line) => JSON.parse(line));
  const [searched, failed] = lines;
  assert.equal(searched.message, "Searched 3 tweets");
  assert.equal(searched.level, "INFO");
  assert.equal(searched.logger, "twitterapi.query");
  assert.equal(searched.service, "query");
  assert.equal(searched.instance, "query-1");
  assert.equal(searched.count, 3);
  assert.equal(searched.traceId, ids.traceId);
  assert.equal(searched.spanId, ids.spanId);
  assert.equal(failed.traceId, undefined);
  assert.equal(failed.error.message, "boom");
  assert.equal(failed.error.cause.message, "root");
  assert.match(failed.error.stack, /Error: boom/);
});

function collect(): { stream: WritableStream<Uint8Array>; text: () => string } {
  const chunks: Uint8Array[] = [];
  return {
    stream: new WritableStream({ write: (chunk) => void chunks.push(chunk) }),
    text: () => new TextDecoder().decode(new Uint8Array(chunks.flatMap((chunk) => [...chunk]))),
  };
}

Deno.test("every line reaches the aggregation sinks too, but log-shipping lines only stdout", async () => {
  configureTracing();
  const stdout = collect();
  const store = new MemoryLogStore();
  await configureLogging({ stream: stdout.stream, sinks: [store.sink] });
  try {
    await inSpan(serviceTracer("query"), "work", {}, async () => {
      await Promise.resolve();
      serviceLogger("query", "query-1").info("Searched {count} tweets", { count: 2 });
    });
    logShippingLogger("main", "main-1").error("Cannot ship log lines", {});
  } finally {
    await shutdownLogging();
  }
  const [stored, ...others] = await store.search({});
  assert.equal(others.length, 0);
  assert.equal(stored?.message, "Searched 2 tweets");
  assert.equal(stored?.service, "query");
  assert.match(stored?.traceId ?? "", /^[0-9a-f]{32}$/);
  assert.deepEqual(stored?.labels, { count: 2 });
  const lines = stdout.text().trim().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(lines.map((line) => line.message), [
    "Searched 2 tweets",
    "Cannot ship log lines",
  ]);
});

Deno.test("pretty lines show time, level, service, message and the short trace id", async () => {
  configureTracing();
  const stdout = collect();
  await configureLogging({ stream: stdout.stream, format: "pretty", colors: false });
  let traceId = "";
  try {
    const logger = serviceLogger("gateway", "gateway-1");
    await inSpan(serviceTracer("gateway"), "work", {}, async (span) => {
      traceId = span.spanContext().traceId;
      await Promise.resolve();
      logger.info("GET {path} {status}", { path: "/api/v1/tweets", status: 200 });
    });
    logger.warn("Upstream failed", { error: new Error("refused") });
  } finally {
    await shutdownLogging();
  }
  const [request, warning, stack] = stdout.text().split("\n");
  assert.match(
    request ?? "",
    new RegExp(
      `^\\d\\d:\\d\\d:\\d\\d\\.\\d{3} INFO  gateway   GET /api/v1/tweets 200 \\[${
        traceId.slice(0, 8)
      }\\]$`,
    ),
  );
  assert.ok(warning?.endsWith(" WARN  gateway   Upstream failed"), warning);
  assert.match(stack ?? "", /^ {4}Error: refused$/);
});

Deno.test("pretty lines are coloured by level when asked", () => {
  const format = getPrettyFormatter({ colors: true });
  const line = format({
    category: ["twitterapi", "query"],
    level: "error",
    timestamp: 0,
    rawMessage: "boom",
    message: ["boom"],
    properties: { service: "query" },
  });
  assert.ok(line.includes("\x1b[31mERROR\x1b[0m"));
});
