/**
 * PostgresDatabase against a real PostgreSQL: `deno task engines up postgres`,
 * or DATABASE_URL. These tests fail, never skip, when it is not reachable.
 */
import assert from "node:assert/strict";
import { connectPostgres, runDatabaseContract } from "./database_contract.ts";
import { PostgresDatabase } from "./postgres_database.ts";

runDatabaseContract("PostgresDatabase", async () => new PostgresDatabase(await connectPostgres()));

Deno.test("connectPostgres names the command that starts PostgreSQL when it is not reachable", async () => {
  await assert.rejects(
    connectPostgres("postgres://postgres:secret@127.0.0.1:1/postgres"),
    (error: unknown) =>
      error instanceof Error &&
      error.message ===
        "PostgreSQL is not reachable at postgres://postgres:***@127.0.0.1:1/postgres: start it with `deno task engines up postgres`",
  );
});
