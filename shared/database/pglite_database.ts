/**
 * The embedded SQL database: PostgreSQL compiled to WebAssembly (PGlite),
 * in memory or in a data folder, in this process. Same SQL and migrations
 * as PostgreSQL; one connection, so statements (and transactions) run one
 * at a time.
 */

import { type PGliteInterface, types } from "@electric-sql/pglite";
import {
  checkChannel,
  clientValueOf,
  DatabaseClosedError,
  OID,
  paramTypeOf,
  PARSERS,
  runGuarded,
  SERIALIZERS,
  type SqlDatabase,
  type SqlExecutor,
  type SqlParam,
  type SqlRow,
  type SqlTransaction,
  toSqlError,
} from "./database.ts";

interface PgliteExecutor {
  query<T>(
    sql: string,
    params?: unknown[],
    options?: Parameters<PGliteInterface["query"]>[2],
  ): Promise<{ rows: T[] }>;
  exec(sql: string, options?: Parameters<PGliteInterface["exec"]>[1]): Promise<unknown>;
}

const OPTIONS = {
  serializers: SERIALIZERS,
  parsers: {
    ...PARSERS,
    // PGlite reads int8 arrays as numbers or bigints; keep their text as for int8.
    [OID.int8Array]: (text: string) =>
      types.arrayParser(text, (item: string) => item, OID.int8Array),
  },
};

async function query<T>(
  executor: PgliteExecutor,
  sql: string,
  params: readonly SqlParam[],
): Promise<T[]> {
  try {
    const result = await executor.query<T>(sql, params.map(clientValueOf), {
      ...OPTIONS,
      paramTypes: params.map(paramTypeOf),
    });
    return result.rows;
  } catch (error) {
    throw toSqlError(error);
  }
}

async function execute(executor: PgliteExecutor, script: string): Promise<void> {
  try {
    await executor.exec(script, OPTIONS);
  } catch (error) {
    throw toSqlError(error);
  }
}

export interface PgliteDatabaseOptions {
  /**
   * Whether `close` closes the PGlite instance too: false when several
   * services share one embedded server (a schema each), whose owner closes it.
   * @default true
   */
  readonly ownsInstance?: boolean;
}

/**
 * A database on a PGlite instance: `close` closes it, unless the instance is
 * shared. PGlite runs one statement or transaction at a time, so databases
 * sharing an instance never see each other's open transactions.
 */
export class PgliteDatabase implements SqlDatabase {
  readonly #pg: PGliteInterface;
  readonly #ownsInstance: boolean;
  #closed = false;
  readonly #unlistens = new Set<() => Promise<void>>();

  constructor(pg: PGliteInterface, options: PgliteDatabaseOptions = {}) {
    this.#pg = pg;
    this.#ownsInstance = options.ownsInstance ?? true;
  }

  async query<T = SqlRow>(sql: string, params: readonly SqlParam[] = []): Promise<T[]> {
    this.#checkOpen();
    return await query<T>(this.#pg, sql, params);
  }

  async execute(script: string): Promise<void> {
    this.#checkOpen();
    await execute(this.#pg, script);
  }

  async transaction<T>(fn: (tx: SqlTransaction) => Promise<T>): Promise<T> {
    this.#checkOpen();
    try {
      return await this.#pg.transaction((pgTx) => {
        const tx: SqlExecutor = {
          query: <R = SqlRow>(sql: string, params: readonly SqlParam[] = []) =>
            query<R>(pgTx, sql, params),
          execute: (script: string) => execute(pgTx, script),
        };
        return runGuarded(tx, fn);
      });
    } catch (error) {
      // BEGIN, COMMIT and ROLLBACK fail as PGlite errors; fn's own errors pass unchanged.
      throw toSqlError(error);
    }
  }

  /** One connection in this process, never lost: `onListening` runs once. */
  async listen(
    channel: string,
    onNotification: (payload: string) => void,
    onListening?: () => void,
  ): Promise<() => Promise<void>> {
    this.#checkOpen();
    checkChannel(channel);
    const unlisten = await this.#pg.listen(channel, onNotification);
    this.#unlistens.add(unlisten);
    onListening?.();
    return async () => {
      if (!this.#unlistens.delete(unlisten) || this.#closed) return;
      await unlisten();
    };
  }

  async ping(): Promise<void> {
    await this.query("SELECT 1");
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsInstance) {
      await this.#pg.close();
      return;
    }
    // The instance lives on: stop this database's notifications.
    const unlistens = [...this.#unlistens];
    this.#unlistens.clear();
    await Promise.all(unlistens.map((unlisten) => unlisten().catch(() => {})));
  }

  #checkOpen(): void {
    if (this.#closed) throw new DatabaseClosedError();
  }
}
