import assert from "node:assert/strict";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { PGlite } from "@electric-sql/pglite";
import { configureTracing, inSpan, serviceTracer } from "../trace/tracing.ts";
import { PgliteDatabase } from "./pglite_database.ts";
import { summarizeSql, TracedSqlDatabase } from "./traced_database.ts";
import { connectPostgres, runDatabaseContract } from "./database_contract.ts";
import { PostgresDatabase } from "./postgres_database.ts";

Deno.test("summarizeSql() names the operation and the table, also inside WITH", () => {
  assert.deepEqual(
    summarizeSql("SELECT scope, target FROM query.grants WHERE user_id = $1"),
    { operation: "SELECT", collection: "query.grants" },
  );
  assert.deepEqual(
    summarizeSql(`WITH changed AS (
      INSERT INTO query.grants (user_id) VALUES ($1) RETURNING user_id
    ) SELECT user_id, pg_notify($2, user_id) FROM changed`),
    { operation: "INSERT", collection: "query.grants" },
  );
  assert.deepEqual(summarizeSql("update analytics.word_counts set count = 1"), {
    operation: "UPDATE",
    collection: "analytics.word_counts",
  });
  assert.deepEqual(summarizeSql('DELETE FROM "q"."grants" WHERE x = $1'), {
    operation: "DELETE",
    collection: "q.grants",
  });
  assert.deepEqual(summarizeSql("SELECT 1"), { operation: "SELECT" });
  assert.deepEqual(summarizeSql("-- migration\nCREATE TABLE grants (id text)"), {
    operation: "CREATE",
  });
  assert.deepEqual(summarizeSql("  "), { operation: "EXECUTE" });
});

Deno.test("TracedSqlDatabase makes each statement a client span without its text or parameters", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const tracer = serviceTracer("query");
  const database = new TracedSqlDatabase(new PgliteDatabase(new PGlite()), { tracer });
  try {
    await database.execute("CREATE TABLE grants (user_id text PRIMARY KEY)");
    const traceId = await inSpan(tracer, "GET /api/v1/tweets", {}, async (parent) => {
      await database.transaction(async (tx) => {
        await tx.query("INSERT INTO grants (user_id) VALUES ($1)", ["secret-user"]);
      });
      await database.query("SELECT user_id FROM grants WHERE user_id = $1", ["secret-user"]);
      await assert.rejects(() => database.query("SELECT * FROM missing_table"));
      return parent.spanContext().traceId;
    });
    const spans = exporter.getFinishedSpans().filter((span) =>
      span.spanContext().traceId === traceId
    );
    const byName = new Map(spans.map((span) => [span.name, span]));
    const insert = byName.get("INSERT grants")!;
    const transaction = byName.get("transaction")!;
    assert.equal(insert.parentSpanContext?.spanId, transaction.spanContext().spanId);
    const select = byName.get("SELECT grants")!;
    assert.equal(select.kind, SpanKind.CLIENT);
    assert.deepEqual(select.attributes, {
      "db.system.name": "postgresql",
      "db.operation.name": "SELECT",
      "db.collection.name": "grants",
      "db.query.summary": "SELECT grants",
    });
    assert.equal(byName.get("SELECT missing_table")?.status.code, SpanStatusCode.ERROR);
    const everything = JSON.stringify(spans.map((span) => span.attributes));
    assert.ok(!everything.includes("secret-user"), "parameters must not reach spans");
  } finally {
    await database.close();
    configureTracing();
  }
});

// The wrapper must not change what the port does: the contract, through it, on PostgreSQL.
runDatabaseContract(
  "TracedSqlDatabase over PostgresDatabase",
  async () =>
    new TracedSqlDatabase(new PostgresDatabase(await connectPostgres()), {
      tracer: serviceTracer("contract"),
    }),
);
