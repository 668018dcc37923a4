import assert from "node:assert/strict";
import type { SqlDatabase } from "./database.ts";
import {
  ACCOUNT_MIGRATIONS,
  connectPostgres,
  describeColumns,
  describeKeys,
  memoryPglite,
  uniqueSchema,
} from "./database_contract.ts";
import { migrate, type Migration, MigrationError } from "./migrations.ts";
import { PgliteDatabase } from "./pglite_database.ts";
import { PostgresDatabase } from "./postgres_database.ts";

/** A service's migrations with the features services use: keys, identity, defaults, views. */
const TIMELINE_MIGRATIONS: readonly Migration[] = [
  ...ACCOUNT_MIGRATIONS,
  {
    id: "0003_posts",
    sql: `
      CREATE TABLE posts (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account_id bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        body varchar(280) NOT NULL CHECK (body <> ''),
        score numeric(10, 2) NOT NULL DEFAULT 0,
        words integer NOT NULL DEFAULT 0,
        tags text[] NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (account_id, created_at)
      );
      CREATE INDEX posts_account ON posts (account_id, created_at DESC);
      CREATE VIEW recent_posts AS
        SELECT id, account_id, body FROM posts WHERE created_at > now() - interval '1 day';
    `,
  },
  {
    id: "0004_word_counts",
    sql: `
      CREATE TABLE word_counts (word text PRIMARY KEY, count bigint NOT NULL DEFAULT 0);
      ALTER TABLE posts DROP COLUMN words;
      INSERT INTO word_counts (word) VALUES ('hello');
    `,
  },
];

/** Runs `body` with a fresh in-memory PGlite database. */
async function withPglite(body: (db: SqlDatabase) => Promise<void>): Promise<void> {
  const db = new PgliteDatabase(await memoryPglite());
  try {
    await body(db);
  } finally {
    await db.close();
  }
}

Deno.test("migrate gives the same tables on PGlite and PostgreSQL", async () => {
  const schema = uniqueSchema("timeline");
  const pglite = new PgliteDatabase(await memoryPglite());
  const server = new PostgresDatabase(await connectPostgres());
  try {
    const ids = TIMELINE_MIGRATIONS.map((migration) => migration.id);
    assert.deepEqual(await migrate(pglite, { schema, migrations: TIMELINE_MIGRATIONS }), ids);
    assert.deepEqual(await migrate(server, { schema, migrations: TIMELINE_MIGRATIONS }), ids);
    const columns = await describeColumns(server, schema);
    assert.equal(columns.length, 18, "columns of four tables and a view");
    assert.deepEqual(await describeColumns(pglite, schema), columns);
    assert.deepEqual(await describeKeys(pglite, schema), await describeKeys(server, schema));
    // Data written by a migration is there once on both.
    for (const db of [pglite, server]) {
      assert.deepEqual(await db.query(`SELECT * FROM ${schema}.word_counts`), [
        { word: "hello", count: "0" },
      ]);
    }
  } finally {
    await server.execute(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).finally(() => server.close());
    await pglite.close();
  }
});

Deno.test("migrate applies each migration once when instances start together", async () => {
  const schema = uniqueSchema("race");
  // Four instances of a service, each with its own connection pool.
  const instances = await Promise.all(
    Array.from({ length: 4 }, async () => new PostgresDatabase(await connectPostgres())),
  );
  try {
    const applied = await Promise.all(
      instances.map((db) => migrate(db, { schema, migrations: TIMELINE_MIGRATIONS })),
    );
    // Every id once over all instances, each instance's share in id order.
    assert.deepEqual(
      applied.flat().sort(),
      TIMELINE_MIGRATIONS.map((migration) => migration.id),
    );
    for (const ids of applied) assert.deepEqual(ids, [...ids].sort());
    const db = instances[0]!;
    assert.deepEqual(
      await db.query(`SELECT count(*)::int AS n FROM ${schema}.schema_migrations`),
      [{ n: TIMELINE_MIGRATIONS.length }],
    );
    assert.deepEqual(await db.query(`SELECT count(*)::int AS n FROM ${schema}.word_counts`), [{
      n: 1,
    }]);
  } finally {
    await instances[0]!.execute(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await Promise.all(instances.map((db) => db.close()));
  }
});

Deno.test("migrate applies only the migrations added since the last run", () =>
  withPglite(async (db) => {
    const schema = uniqueSchema();
    assert.deepEqual(
      await migrate(db, { schema, migrations: TIMELINE_MIGRATIONS.slice(0, 2) }),
      ["0001_accounts", "0002_account_settings"],
    );
    // Given in any order, applied in id order.
    const shuffled = [...TIMELINE_MIGRATIONS].reverse();
    assert.deepEqual(await migrate(db, { schema, migrations: shuffled }), [
      "0003_posts",
      "0004_word_counts",
    ]);
    assert.deepEqual(await migrate(db, { schema, migrations: shuffled }), []);
  }));

Deno.test("migrate creates unqualified names in the service's schema only", () =>
  withPglite(async (db) => {
    const schema = uniqueSchema();
    await migrate(db, { schema, migrations: ACCOUNT_MIGRATIONS });
    assert.deepEqual(
      await db.query(
        `SELECT table_schema FROM information_schema.tables WHERE table_name = 'accounts'`,
      ),
      [{ table_schema: schema }],
    );
    // The search path was local to the migration's transaction.
    assert.deepEqual(await db.query("SELECT current_schemas(false) AS path"), [{
      path: ["public"],
    }]);
  }));

Deno.test("migrate refuses a database holding a migration the code does not know", () =>
  withPglite(async (db) => {
    const schema = uniqueSchema();
    await migrate(db, { schema, migrations: TIMELINE_MIGRATIONS.slice(0, 3) });
    const withoutSecond = TIMELINE_MIGRATIONS.filter((m) => m.id !== "0002_account_settings");
    await assert.rejects(
      migrate(db, { schema, migrations: withoutSecond }),
      (error: unknown) =>
        error instanceof MigrationError && error.code === "migration" &&
        error.message ===
          `Cannot migrate schema '${schema}': applied migration '0002_account_settings' is not among the code's migrations (deleted or renamed?)`,
    );
    // Nothing was applied by the refused run.
    assert.deepEqual(await db.query(`SELECT count(*)::int AS n FROM ${schema}.schema_migrations`), [
      { n: 3 },
    ]);
  }));

Deno.test("migrate refuses a migration added before one already applied", () =>
  withPglite(async (db) => {
    const schema = uniqueSchema();
    const [first, second, third] = TIMELINE_MIGRATIONS;
    await migrate(db, { schema, migrations: [first!, third!] });
    await assert.rejects(
      migrate(db, { schema, migrations: [first!, second!, third!] }),
      (error: unknown) =>
        error instanceof MigrationError &&
        error.message ===
          `Cannot migrate schema '${schema}': pending migration '0002_account_settings' sorts before applied migration '0003_posts'`,
    );
  }));

Deno.test("migrate rolls back a failing migration and names it", () =>
  withPglite(async (db) => {
    const schema = uniqueSchema();
    const broken: Migration = {
      id: "0003_broken",
      sql: "CREATE TABLE half_done (id int); ALTER TABLE no_such_table ADD COLUMN x int;",
    };
    await assert.rejects(
      migrate(db, { schema, migrations: [...ACCOUNT_MIGRATIONS, broken] }),
      (error: unknown) =>
        error instanceof MigrationError &&
        error.message ===
          `Cannot apply migration '0003_broken' to schema '${schema}': relation "no_such_table" does not exist` &&
        (error.cause as { code?: string }).code === "42P01",
    );
    // The migrations before it stay applied; nothing of the broken one remains.
    assert.deepEqual(
      await db.query(`SELECT id FROM ${schema}.schema_migrations ORDER BY id`),
      [{ id: "0001_accounts" }, { id: "0002_account_settings" }],
    );
    assert.deepEqual(
      await db.query(`SELECT table_name FROM information_schema.tables WHERE table_name = $1`, [
        "half_done",
      ]),
      [],
    );
  }));

Deno.test("migrate rejects a schema name or migration ids it cannot use", () =>
  withPglite(async (db) => {
    for (const schema of ["Timeline", "time-line", "1st", "", "a; DROP SCHEMA public"]) {
      await assert.rejects(migrate(db, { schema, migrations: [] }), RangeError, schema);
    }
    const [first] = ACCOUNT_MIGRATIONS;
    await assert.rejects(
      migrate(db, { schema: uniqueSchema(), migrations: [first!, first!] }),
      (error: unknown) => error instanceof RangeError && error.message.includes("not unique"),
    );
  }));
