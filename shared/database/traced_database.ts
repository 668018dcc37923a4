/**
 * Every statement of a `SqlDatabase` as a CLIENT span of the calling
 * service, named by its operation and table (`SELECT query.grants`), with
 * `db.system.name` `postgresql` (PGlite is PostgreSQL too). Neither the
 * statement's text nor its parameters go into the span: a summary is enough
 * to find a slow call, and values may be personal.
 */
import { SpanKind, trace } from "@opentelemetry/api";
import { inSpan, type Tracer } from "../trace/tracing.ts";
import type { SqlDatabase, SqlExecutor, SqlParam, SqlRow, SqlTransaction } from "./database.ts";

export interface TracedSqlDatabaseOptions {
  /**
   * The calling service's tracer.
   * @default the API's global tracer (a no-op unless one is registered)
   */
  readonly tracer?: Tracer;
  /** The server's host, for `server.address`; absent for an embedded database. */
  readonly serverAddress?: string;
  readonly serverPort?: number;
}

const OPERATIONS = new Set(["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"]);
const TABLE_AFTER = new Set(["FROM", "INTO", "UPDATE", "TABLE"]);

/**
 * The operation and table of a statement: the first DML keyword (looking
 * inside a `WITH` clause) and the name after its FROM, INTO or UPDATE; for
 * other statements (DDL, scripts) the first keyword alone.
 */
export function summarizeSql(sql: string): { operation: string; collection?: string } {
  const words = sql.replace(/--[^\n]*|\/\*[\s\S]*?\*\//g, " ").match(/[A-Za-z_][\w."]*|\(/g) ??
    [];
  const first = words[0]?.toUpperCase();
  if (first === undefined) return { operation: "EXECUTE" };
  const index = words.findIndex((word) => OPERATIONS.has(word.toUpperCase()));
  if (index < 0 || (first !== "WITH" && index !== 0)) return { operation: first };
  const operation = words[index]!.toUpperCase();
  for (let i = index; i < words.length - 1; i++) {
    const word = words[i]!.toUpperCase();
    if (!TABLE_AFTER.has(word) || (word === "UPDATE" && i !== index)) continue;
    const name = words[i + 1]!;
    if (name === "(" || OPERATIONS.has(name.toUpperCase())) continue;
    return { operation, collection: name.replaceAll('"', "") };
  }
  return { operation };
}

export class TracedSqlDatabase implements SqlDatabase {
  readonly #inner: SqlDatabase;
  readonly #tracer: Tracer;
  readonly #server: Record<string, string | number>;

  constructor(inner: SqlDatabase, options: TracedSqlDatabaseOptions = {}) {
    this.#inner = inner;
    this.#tracer = options.tracer ?? trace.getTracer("twitterapi");
    this.#server = {
      ...(options.serverAddress === undefined ? {} : { "server.address": options.serverAddress }),
      ...(options.serverPort === undefined ? {} : { "server.port": options.serverPort }),
    };
  }

  query<T = SqlRow>(sql: string, params?: readonly SqlParam[]): Promise<T[]> {
    return this.#traced(sql, (span) => span.query<T>(sql, params), this.#inner);
  }

  execute(script: string): Promise<void> {
    return this.#traced(script, (span) => span.execute(script), this.#inner);
  }

  transaction<T>(fn: (tx: SqlTransaction) => Promise<T>): Promise<T> {
    return inSpan(this.#tracer, "transaction", {
      kind: SpanKind.CLIENT,
      attributes: {
        "db.system.name": "postgresql",
        "db.operation.name": "transaction",
        ...this.#server,
      },
    }, () =>
      this.#inner.transaction((tx) =>
        fn({
          query: (sql, params) => this.#traced(sql, (on) => on.query(sql, params), tx),
          execute: (script) => this.#traced(script, (on) => on.execute(script), tx),
        })
      ));
  }

  listen(
    channel: string,
    onNotification: (payload: string) => void,
    onListening?: () => void,
  ): Promise<() => Promise<void>> {
    return this.#inner.listen(channel, onNotification, onListening);
  }

  /** Untraced: readiness probes call it all the time. */
  ping(): Promise<void> {
    return this.#inner.ping();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  #traced<R>(sql: string, run: (on: SqlExecutor) => Promise<R>, on: SqlExecutor): Promise<R> {
    const { operation, collection } = summarizeSql(sql);
    const name = collection === undefined ? operation : `${operation} ${collection}`;
    return inSpan(this.#tracer, name, {
      kind: SpanKind.CLIENT,
      attributes: {
        "db.system.name": "postgresql",
        "db.operation.name": operation,
        ...(collection === undefined ? {} : { "db.collection.name": collection }),
        "db.query.summary": name,
        ...this.#server,
      },
    }, () => run(on));
  }
}
