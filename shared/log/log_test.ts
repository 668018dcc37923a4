import assert from "node:assert/strict";
import { configureTracing, inSpan, serviceTracer } from "../trace/tracing.ts";
import { configureLogging, serviceLogger, shutdownLogging } from "./log.ts";

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
