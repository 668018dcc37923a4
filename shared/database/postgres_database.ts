/**
 * The SQL database on a real PostgreSQL server, through the npm `postgres`
 * client and its connection pool.
 */

import type postgres from "postgres";
import {
  checkChannel,
  clientValueOf,
  DatabaseClosedError,
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

/**
 * Extended protocol always (one statement per query, as on PGlite, even
 * without parameters), with statements prepared and cached per connection:
 * keep SQL text fixed and vary the parameters. `simple` is honoured by the
 * client although its type leaves it out.
 */
const QUERY_OPTIONS = { prepare: true, simple: false } as postgres.UnsafeQueryOptions;

function toClientParams(sql: postgres.Sql, params: readonly SqlParam[]) {
  return params.map((param) => {
    const type = paramTypeOf(param);
    const value = clientValueOf(param);
    return type === 0 || value === null ? value : sql.typed(value, type);
  }) as postgres.ParameterOrJSON<never>[];
}

function executor(sql: postgres.Sql, client: postgres.Sql = sql): SqlExecutor {
  return {
    async query<T = SqlRow>(text: string, params: readonly SqlParam[] = []): Promise<T[]> {
      try {
        const result = await client.unsafe(text, toClientParams(sql, params), QUERY_OPTIONS);
        // A plain array of plain rows, like PGlite's.
        return Array.from(result) as T[];
      } catch (error) {
        throw toSqlError(error);
      }
    },
    async execute(script: string): Promise<void> {
      try {
        // No parameters: the simple protocol, which runs several statements.
        await client.unsafe(script);
      } catch (error) {
        throw toSqlError(error);
      }
    },
  };
}

/**
 * A database on a ready `postgres` client, which it takes over: it sets the
 * client's serializers and parsers for the types the port pins (bool, bytea,
 * int8, json, jsonb, date and timestamps) so values match PGlite's, and
 * `close` ends the client.
 */
export class PostgresDatabase implements SqlDatabase {
  readonly #sql: postgres.Sql;
  readonly #executor: SqlExecutor;
  #closed = false;

  constructor(sql: postgres.Sql) {
    this.#sql = sql;
    Object.assign(sql.options.serializers, SERIALIZERS);
    Object.assign(sql.options.parsers, PARSERS);
    this.#executor = executor(sql);
  }

  async query<T = SqlRow>(sql: string, params: readonly SqlParam[] = []): Promise<T[]> {
    this.#checkOpen();
    return await this.#executor.query<T>(sql, params);
  }

  async execute(script: string): Promise<void> {
    this.#checkOpen();
    await this.#executor.execute(script);
  }

  async transaction<T>(fn: (tx: SqlTransaction) => Promise<T>): Promise<T> {
    this.#checkOpen();
    try {
      // Boxed: `begin` would await an array the function returns as queries.
      const box = await this.#sql.begin(async (client) => ({
        value: await runGuarded(executor(this.#sql, client as unknown as postgres.Sql), fn),
      }));
      return (box as { value: T }).value;
    } catch (error) {
      throw toSqlError(error);
    }
  }

  /**
   * On the client's one listening connection (opened on first use, ended
   * with the client), which re-listens by itself after it was lost.
   */
  async listen(
    channel: string,
    onNotification: (payload: string) => void,
    onListening?: () => void,
  ): Promise<() => Promise<void>> {
    this.#checkOpen();
    checkChannel(channel);
    const { unlisten } = await this.#sql.listen(channel, onNotification, onListening);
    return async () => {
      if (!this.#closed) await unlisten();
    };
  }

  async ping(): Promise<void> {
    await this.query("SELECT 1");
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#sql.end({ timeout: 5 });
  }

  #checkOpen(): void {
    if (this.#closed) throw new DatabaseClosedError();
  }
}
