/**
 * The behaviour every `SqlDatabase` adapter must show, as Deno tests, and
 * the databases the adapter tests use. Every case works in a schema of its
 * own, dropped afterwards, so the cases also hold against a shared server.
 */

import assert from "node:assert/strict";
import { PGlite } from "@electric-sql/pglite";
import postgres from "postgres";
import { DatabaseClosedError, type SqlDatabase, SqlError } from "./database.ts";
import { migrate, type Migration } from "./migrations.ts";
import { redactedUrl } from "../testing/redact.ts";

/** A schema name no other test run uses. */
export function uniqueSchema(prefix = "test"): string {
  return `${prefix}_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
}

let pgliteTemplate: Promise<Blob> | undefined;

/**
 * A fresh in-memory PGlite. The first call initialises a cluster (seconds);
 * later ones load a copy of it (a fraction of a second).
 */
export async function memoryPglite(): Promise<PGlite> {
  pgliteTemplate ??= (async () => {
    const pg = await PGlite.create();
    try {
      return await pg.dumpDataDir("none");
    } finally {
      await pg.close();
    }
  })();
  return await PGlite.create({ loadDataDir: await pgliteTemplate });
}

export const DATABASE_URL = Deno.env.get("DATABASE_URL") ??
  "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/** A client that answered `SELECT 1`, or an error that says how to start PostgreSQL. */
export async function connectPostgres(url = DATABASE_URL): Promise<postgres.Sql> {
  const sql = postgres(url, { max: 4, connect_timeout: 5, onnotice: () => {} });
  try {
    await sql`SELECT 1`;
    return sql;
  } catch (cause) {
    await sql.end({ timeout: 1 });
    throw new Error(
      `PostgreSQL is not reachable at ${
        redactedUrl(url)
      }: start it with \`deno task engines up postgres\``,
      { cause },
    );
  }
}

/** Two migrations a small service might have, used by the contract and the migration tests. */
export const ACCOUNT_MIGRATIONS: readonly Migration[] = [
  {
    id: "0001_accounts",
    sql: `
      CREATE TABLE accounts (
        id bigint PRIMARY KEY,
        handle text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX accounts_created_at ON accounts (created_at);
    `,
  },
  {
    id: "0002_account_settings",
    sql: `
      ALTER TABLE accounts ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';
      ALTER TABLE accounts ADD COLUMN verified boolean NOT NULL DEFAULT false;
    `,
  },
];

/** The columns of a schema's tables, as `information_schema` describes them. */
export async function describeColumns(db: SqlDatabase, schema: string): Promise<unknown[]> {
  return await db.query(
    `SELECT table_name, column_name, ordinal_position::int AS position, data_type,
            is_nullable, column_default, character_maximum_length::int AS max_length,
            numeric_precision::int AS numeric_precision, is_identity
       FROM information_schema.columns
      WHERE table_schema = $1
      ORDER BY table_name, ordinal_position`,
    [schema],
  );
}

/** Constraints and indexes of a schema, comparable across servers. */
export async function describeKeys(db: SqlDatabase, schema: string): Promise<unknown[]> {
  return [
    ...await db.query(
      `SELECT tc.table_name, tc.constraint_name, tc.constraint_type,
              string_agg(kcu.column_name, ',' ORDER BY kcu.ordinal_position) AS columns
         FROM information_schema.table_constraints tc
         LEFT JOIN information_schema.key_column_usage kcu
           ON kcu.constraint_schema = tc.constraint_schema
          AND kcu.constraint_name = tc.constraint_name
        WHERE tc.table_schema = $1 AND tc.constraint_type <> 'CHECK'
        GROUP BY tc.table_name, tc.constraint_name, tc.constraint_type
        ORDER BY tc.table_name, tc.constraint_name`,
      [schema],
    ),
    ...await db.query(
      `SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = $1 ORDER BY tablename, indexname`,
      [schema],
    ),
    ...await db.query(
      `SELECT table_name, table_type FROM information_schema.tables
        WHERE table_schema = $1 ORDER BY table_name`,
      [schema],
    ),
  ];
}

export function runDatabaseContract(
  name: string,
  createDatabase: () => Promise<SqlDatabase>,
): void {
  function contract(
    behaviour: string,
    body: (db: SqlDatabase, schema: string) => Promise<void>,
  ): void {
    Deno.test(`${name} ${behaviour}`, async () => {
      const db = await createDatabase();
      const schema = uniqueSchema();
      try {
        await db.execute(`CREATE SCHEMA ${schema}`);
        await body(db, schema);
      } finally {
        try {
          await db.execute(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        } finally {
          await db.close();
        }
      }
    });
  }

  async function rejectsWithSql(
    promise: Promise<unknown>,
    code: string,
    message: string | RegExp,
  ): Promise<SqlError> {
    let caught: unknown;
    await assert.rejects(promise, (error: unknown) => {
      caught = error;
      return true;
    });
    assert.ok(caught instanceof SqlError, `${String(caught)} is a SqlError`);
    assert.equal(caught.code, code);
    if (typeof message === "string") {
      assert.equal(caught.message, message);
    } else {
      assert.match(caught.message, message);
    }
    return caught;
  }

  contract("answers ping", async (db) => {
    await db.ping();
  });

  contract("round-trips values of every pinned type", async (db, schema) => {
    await db.execute(`
      CREATE TABLE ${schema}.items (
        id bigint PRIMARY KEY,
        text_id text NOT NULL,
        name text NOT NULL,
        score integer,
        ratio double precision,
        amount numeric,
        active boolean,
        created_at timestamptz,
        payload jsonb,
        data bytea,
        note text
      )
    `);
    const createdAt = new Date(Date.UTC(2024, 1, 29, 23, 59, 58, 123));
    const payload = { a: [1, "x", null], nested: { b: true, big: "9007199254740993" } };
    const inserted = await db.query(
      `INSERT INTO ${schema}.items
         (id, text_id, name, score, ratio, amount, active, created_at, payload, data, note)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
       RETURNING id`,
      [
        9223372036854775807n,
        9223372036854775806n,
        "O'Brien \u00e9\u{1F600}",
        42,
        0.5,
        "12345678901234567890.123456789",
        true,
        createdAt,
        payload,
        new Uint8Array([0, 1, 127, 255]),
        null,
      ],
    );
    assert.deepEqual(inserted, [{ id: "9223372036854775807" }]);
    const rows = await db.query(`SELECT * FROM ${schema}.items WHERE id = $1`, [
      9223372036854775807n,
    ]);
    assert.deepEqual(rows, [{
      id: "9223372036854775807",
      text_id: "9223372036854775806",
      name: "O'Brien \u00e9\u{1F600}",
      score: 42,
      ratio: 0.5,
      amount: "12345678901234567890.123456789",
      active: true,
      created_at: createdAt,
      payload,
      data: new Uint8Array([0, 1, 127, 255]),
      note: null,
    }]);
    // A bigint id as text finds the same row, and so does its string.
    assert.equal(
      (await db.query(`SELECT id FROM ${schema}.items WHERE text_id = $1`, [
        9223372036854775806n,
      ])).length,
      1,
    );
    assert.equal(
      (await db.query(`SELECT id FROM ${schema}.items WHERE id = $1`, ["9223372036854775807"]))
        .length,
      1,
    );
  });

  contract("lets PostgreSQL parse text parameters by their context", async (db, schema) => {
    await db.execute(
      `CREATE TABLE ${schema}.events (at timestamptz, flag boolean, doc jsonb, raw bytea)`,
    );
    await db.query(`INSERT INTO ${schema}.events VALUES ($1, $2, $3, $4)`, [
      "2024-01-02T03:04:05.123456Z",
      "yes",
      '{"k": [1, 2]}',
      "\\xdeadbeef",
    ]);
    const [row] = await db.query(
      `SELECT (extract(epoch FROM at) * 1000000)::int8 AS micros, flag, doc, raw
         FROM ${schema}.events`,
    );
    assert.deepEqual(row, {
      micros: "1704164645123456",
      flag: true,
      doc: { k: [1, 2] },
      raw: new Uint8Array([0xde, 0xad, 0xbe, 0xef]),
    });
    await rejectsWithSql(
      db.query(`INSERT INTO ${schema}.events (flag) VALUES ($1)`, ["maybe"]),
      "22P02",
      'invalid input syntax for type boolean: "maybe"',
    );
  });

  contract("types parameters and results the same way", async (db) => {
    const [row] = await db.query(
      `SELECT $1 AS untyped_text, $2 AS untyped_number, $3::int AS cast_number, $4 AS bool,
              $5 AS at, $6 AS doc, $7 AS list, $8::text AS missing, $9 AS bytes,
              count(*) AS count, count(*)::int AS int_count,
              ARRAY[1, 2]::int4[] AS ints, ARRAY[9007199254740993]::int8[] AS bigs,
              ARRAY['a', 'b'] AS texts, 1.5::numeric AS num, 2.5::float8 AS float,
              '7 days'::interval AS span, NULL AS nothing`,
      [
        "hello",
        42,
        "42",
        false,
        new Date(0),
        { a: 1 },
        [1, { b: 2 }],
        null,
        new Uint8Array([1, 2]),
      ],
    );
    assert.deepEqual(row, {
      untyped_text: "hello",
      untyped_number: "42",
      cast_number: 42,
      bool: false,
      at: new Date(0),
      doc: { a: 1 },
      list: [1, { b: 2 }],
      missing: null,
      bytes: new Uint8Array([1, 2]),
      count: "1",
      int_count: 1,
      ints: [1, 2],
      bigs: ["9007199254740993"],
      texts: ["a", "b"],
      num: "1.5",
      float: 2.5,
      span: "7 days",
      nothing: null,
    });
  });

  contract("commits a transaction whose function resolves", async (db, schema) => {
    await db.execute(`CREATE TABLE ${schema}.notes (id int PRIMARY KEY, body text)`);
    const result = await db.transaction(async (tx) => {
      await tx.query(`INSERT INTO ${schema}.notes VALUES ($1, $2)`, [1, "one"]);
      await tx.query(`INSERT INTO ${schema}.notes VALUES ($1, $2)`, [2, "two"]);
      return await tx.query<{ id: number }>(`SELECT id FROM ${schema}.notes ORDER BY id`);
    });
    assert.deepEqual(result, [{ id: 1 }, { id: 2 }]);
    assert.deepEqual(await db.query(`SELECT body FROM ${schema}.notes ORDER BY id`), [
      { body: "one" },
      { body: "two" },
    ]);
  });

  contract("rolls back a transaction whose function rejects", async (db, schema) => {
    await db.execute(`CREATE TABLE ${schema}.notes (id int PRIMARY KEY, body text)`);
    const failure = new Error("Cannot finish the note: the test says no");
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO ${schema}.notes VALUES ($1, $2)`, [1, "one"]);
        throw failure;
      }),
      (error: unknown) => error === failure,
    );
    const violation = await rejectsWithSql(
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO ${schema}.notes VALUES ($1, $2)`, [2, "two"]);
        await tx.query(`INSERT INTO ${schema}.notes VALUES ($1, $2)`, [2, "again"]);
      }),
      "23505",
      'duplicate key value violates unique constraint "notes_pkey"',
    );
    assert.equal(violation.constraint, "notes_pkey");
    assert.equal(violation.detail, "Key (id)=(2) already exists.");
    assert.deepEqual(await db.query(`SELECT * FROM ${schema}.notes`), []);
    // The database is still usable.
    await db.transaction((tx) => tx.query(`INSERT INTO ${schema}.notes VALUES (3, 'three')`));
    assert.deepEqual(await db.query(`SELECT id FROM ${schema}.notes`), [{ id: 3 }]);
  });

  contract("fails a transaction whose statement failed, even if caught", async (db, schema) => {
    await db.execute(`CREATE TABLE ${schema}.notes (id int PRIMARY KEY)`);
    let statementError: unknown;
    const violation = await rejectsWithSql(
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO ${schema}.notes VALUES (1)`);
        await tx.query(`INSERT INTO ${schema}.notes VALUES (1)`).catch((error) => {
          statementError = error;
        });
        return "done";
      }),
      "23505",
      'duplicate key value violates unique constraint "notes_pkey"',
    );
    assert.ok(statementError instanceof SqlError && statementError.code === "23505");
    // Later statements fail as "aborted"; the transaction reports the cause.
    const first = await rejectsWithSql(
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO ${schema}.notes VALUES (2), (2)`).catch(() => {});
        await tx.query(`INSERT INTO ${schema}.notes VALUES (3)`);
      }),
      "23505",
      /^duplicate key value/,
    );
    assert.equal(violation.constraint, first.constraint);
    assert.deepEqual(await db.query(`SELECT * FROM ${schema}.notes`), []);
  });

  contract("reports PostgreSQL's message and SQLSTATE", async (db, schema) => {
    await rejectsWithSql(db.query("SELECT 1 / 0"), "22012", "division by zero");
    await rejectsWithSql(
      db.query(`SELECT * FROM ${schema}.nowhere`),
      "42P01",
      `relation "${schema}.nowhere" does not exist`,
    );
    await rejectsWithSql(db.query("SELEC 1"), "42601", /^syntax error at or near "SELEC"/);
    await rejectsWithSql(db.execute("SELECT 1; SELEC 2"), "42601", /^syntax error/);
    await rejectsWithSql(
      db.query("SELECT 1; SELECT 2"),
      "42601",
      "cannot insert multiple commands into a prepared statement",
    );
    await rejectsWithSql(db.query("SELECT $1::int", ["x"]), "22P02", /^invalid input syntax/);
    // Errors leave the database usable.
    assert.deepEqual(await db.query("SELECT 1 AS one"), [{ one: 1 }]);
  });

  contract("runs scripts of several statements", async (db, schema) => {
    await db.execute(`
      CREATE TABLE ${schema}.a (id int);
      INSERT INTO ${schema}.a VALUES (1), (2);
      UPDATE ${schema}.a SET id = id * 10;
    `);
    assert.deepEqual(await db.query(`SELECT id FROM ${schema}.a ORDER BY id`), [
      { id: 10 },
      { id: 20 },
    ]);
  });

  contract("runs concurrent queries", async (db, schema) => {
    await db.execute(`CREATE TABLE ${schema}.counter (id int PRIMARY KEY)`);
    await Promise.all(
      Array.from(
        { length: 20 },
        (_, i) => db.query(`INSERT INTO ${schema}.counter VALUES ($1)`, [i]),
      ),
    );
    assert.deepEqual(await db.query(`SELECT count(*)::int AS n FROM ${schema}.counter`), [{
      n: 20,
    }]);
  });

  contract("applies migrations once, with the same columns", async (db) => {
    // migrate creates its schema itself.
    const schema = uniqueSchema("contract");
    try {
      assert.deepEqual(await migrate(db, { schema, migrations: ACCOUNT_MIGRATIONS }), [
        "0001_accounts",
        "0002_account_settings",
      ]);
      assert.deepEqual(await migrate(db, { schema, migrations: ACCOUNT_MIGRATIONS }), []);
      const ledger = await db.query<{ id: string; applied_at: Date }>(
        `SELECT id, applied_at FROM ${schema}.schema_migrations ORDER BY id`,
      );
      assert.deepEqual(ledger.map((row) => row.id), ["0001_accounts", "0002_account_settings"]);
      assert.ok(ledger.every((row) => row.applied_at instanceof Date));
      const column = (
        table_name: string,
        column_name: string,
        position: number,
        data_type: string,
        is_nullable: string,
        column_default: string | null,
      ) => ({
        table_name,
        column_name,
        position,
        data_type,
        is_nullable,
        column_default,
        max_length: null,
        numeric_precision: data_type === "bigint" ? 64 : null,
        is_identity: "NO",
      });
      assert.deepEqual(await describeColumns(db, schema), [
        column("accounts", "id", 1, "bigint", "NO", null),
        column("accounts", "handle", 2, "text", "NO", null),
        column("accounts", "created_at", 3, "timestamp with time zone", "NO", "now()"),
        column("accounts", "settings", 4, "jsonb", "NO", "'{}'::jsonb"),
        column("accounts", "verified", 5, "boolean", "NO", "false"),
        column("schema_migrations", "id", 1, "text", "NO", null),
        column("schema_migrations", "applied_at", 2, "timestamp with time zone", "NO", "now()"),
      ]);
      await assert.rejects(
        migrate(db, { schema, migrations: ACCOUNT_MIGRATIONS.slice(0, 1) }),
        /applied migration '0002_account_settings' is not among the code's migrations/,
      );
    } finally {
      await db.execute(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    }
  });

  Deno.test(`${name} refuses calls after close`, async () => {
    const db = await createDatabase();
    await db.close();
    await db.close();
    const closed = (error: unknown) =>
      error instanceof DatabaseClosedError && error.code === "database-closed";
    await assert.rejects(db.ping(), closed);
    await assert.rejects(db.query("SELECT 1"), closed);
    await assert.rejects(db.execute("SELECT 1"), closed);
    await assert.rejects(db.transaction(() => Promise.resolve()), closed);
  });
}
