/**
 * Schema migrations for a service's own PostgreSQL schema, the same on
 * PGlite and PostgreSQL. Applied migrations are recorded in
 * `<schema>.schema_migrations`; each pending one is applied in its own
 * transaction under a transaction-level advisory lock, so instances that
 * start together apply every migration exactly once, in id order.
 */

import type { SqlDatabase, SqlExecutor } from "./database.ts";

export interface Migration {
  /**
   * Unique and never changed once applied; migrations apply in the order of
   * their ids as strings, so give them a fixed-width prefix: "0001_users".
   */
  readonly id: string;
  /** One or more statements; unqualified names resolve in the service's schema. */
  readonly sql: string;
}

export interface MigrateOptions {
  /** The service's schema: lower-case letters, digits and underscores. */
  readonly schema: string;
  readonly migrations: readonly Migration[];
}

export class MigrationError extends Error {
  readonly code = "migration";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MigrationError";
  }
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Creates the schema if missing and applies the pending migrations in id
 * order; resolves to the ids this call applied (none when up to date).
 * Throws `MigrationError` when the database holds a migration the code does
 * not know (deleted or renamed) or when a pending migration sorts before one
 * already applied (added out of order); a failing migration is rolled back
 * and its error rethrown.
 */
export async function migrate(db: SqlDatabase, options: MigrateOptions): Promise<string[]> {
  const { schema } = options;
  if (!IDENTIFIER.test(schema)) {
    throw new RangeError(
      `Cannot migrate schema '${schema}' as its name must be lower-case letters, digits and underscores`,
    );
  }
  const migrations = [...options.migrations].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const ids = new Set<string>();
  for (const { id } of migrations) {
    if (id === "" || ids.has(id)) {
      throw new RangeError(`Cannot migrate schema '${schema}': migration id '${id}' is not unique`);
    }
    ids.add(id);
  }

  const applied: string[] = [];
  for (;;) {
    const id = await db.transaction(async (tx) => {
      const done = await lockAndReadApplied(tx, schema);
      const unknown = done.find((id) => !ids.has(id));
      if (unknown !== undefined) {
        throw new MigrationError(
          `Cannot migrate schema '${schema}': applied migration '${unknown}' is not among the code's migrations (deleted or renamed?)`,
        );
      }
      const next = migrations.find((migration) => !done.includes(migration.id));
      if (next === undefined) return undefined;
      const later = done.find((id) => id > next.id);
      if (later !== undefined) {
        throw new MigrationError(
          `Cannot migrate schema '${schema}': pending migration '${next.id}' sorts before applied migration '${later}'`,
        );
      }
      await tx.execute(`SET LOCAL search_path TO ${schema}`);
      try {
        await tx.execute(next.sql);
      } catch (cause) {
        throw new MigrationError(
          `Cannot apply migration '${next.id}' to schema '${schema}': ${
            cause instanceof Error ? cause.message : String(cause)
          }`,
          { cause },
        );
      }
      await tx.query(`INSERT INTO ${schema}.schema_migrations (id) VALUES ($1)`, [next.id]);
      return next.id;
    });
    if (id === undefined) return applied;
    applied.push(id);
  }
}

/**
 * Takes the schema's migration lock for the rest of the transaction, makes
 * sure the schema and its ledger exist, and returns the applied ids.
 */
async function lockAndReadApplied(tx: SqlExecutor, schema: string): Promise<string[]> {
  // Before anything else: two sessions creating one schema at once can fail.
  await tx.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`schema_migrations:${schema}`]);
  await tx.execute(`
    CREATE SCHEMA IF NOT EXISTS ${schema};
    CREATE TABLE IF NOT EXISTS ${schema}.schema_migrations (
      id text PRIMARY KEY,
      applied_at timestamptz NOT NULL DEFAULT now()
    );
  `);
  const rows = await tx.query<{ id: string }>(
    `SELECT id FROM ${schema}.schema_migrations ORDER BY id`,
  );
  return rows.map((row) => row.id);
}
