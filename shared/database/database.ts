/**
 * The SQL database port: PostgreSQL's SQL with positional parameters, so a
 * service's queries and migrations run unchanged on the embedded PGlite and
 * on a real PostgreSQL server.
 *
 * Adapters: `PgliteDatabase` and `PostgresDatabase`. Every adapter must pass
 * `database_contract.ts`, which pins the values below on both.
 *
 * Parameters (`$1`, `$2`, ...) and what they become:
 * - `string`, `number`: untyped, so PostgreSQL infers the type from the
 *   context (a column, an operator, a cast); alone (`SELECT $1`) it is text.
 * - `bigint`: untyped text of the number, so ids of any size stay exact in
 *   `int8`, `numeric` and `text` contexts.
 * - `boolean`: `bool`; `Date`: `timestamptz`; `Uint8Array`: `bytea`.
 * - a plain object or an array: `jsonb` (arrays are JSON, not SQL arrays).
 * - `null`: NULL of the inferred type.
 *
 * Results, per column type:
 * - `int2`, `int4`, `oid`, `float4`, `float8`: `number`.
 * - `int8` and `numeric`: `string`, so no precision is lost (cast a count to
 *   `int` to get a number).
 * - `bool`: `boolean`; `timestamptz`, `timestamp`, `date`: `Date`;
 *   `json`, `jsonb`: the parsed value; `bytea`: `Uint8Array`.
 * - arrays of numbers, `int8`, `bool` and text: JS arrays; anything else
 *   (`text`, `uuid`, `interval`...): PostgreSQL's text.
 */

/** A JSON value, as `jsonb` parameters take and `json`/`jsonb` columns give. */
export type JsonValue =
  | string
  | number
  | boolean
  | null
  | readonly JsonValue[]
  | { readonly [key: string]: JsonValue };

export type SqlParam =
  | string
  | number
  | bigint
  | boolean
  | Date
  | Uint8Array
  | null
  | readonly JsonValue[]
  | { readonly [key: string]: JsonValue };

/** A result row: column name to value. */
export type SqlRow = Record<string, unknown>;

/** What can run statements: the database itself or one of its transactions. */
export interface SqlExecutor {
  /**
   * Runs one statement with positional parameters and returns its rows
   * (none for a statement that returns none). `T` only describes the rows;
   * nothing checks it.
   */
  query<T = SqlRow>(sql: string, params?: readonly SqlParam[]): Promise<T[]>;
  /**
   * Runs a script of one or more statements without parameters (as a
   * migration is), discarding any rows.
   */
  execute(script: string): Promise<void>;
}

/** A transaction in progress; valid only until its function settles. */
export type SqlTransaction = SqlExecutor;

export interface SqlDatabase extends SqlExecutor {
  /**
   * Runs `fn` in a transaction on one connection: committed when the
   * returned promise resolves, rolled back when it rejects (the rejection is
   * rethrown). A statement that fails fails the whole transaction: it is
   * rolled back and rejects with that statement's error even if `fn` caught
   * it (there are no savepoints). Statements of a transaction must go
   * through `tx`: on PGlite, one connection, a statement on the database
   * itself would wait for the transaction forever.
   */
  transaction<T>(fn: (tx: SqlTransaction) => Promise<T>): Promise<T>;
  /**
   * Calls `onNotification` with the payload of every notification on
   * `channel`, sent by any session of the database with
   * `SELECT pg_notify('<channel>', '<payload>')` (delivered when the sending
   * transaction commits; never for one rolled back), until the returned
   * function is called. `onListening` runs each time the listen is
   * established: first, and again after a lost connection was restored, when
   * notifications sent meanwhile may have been missed. `channel` must be a
   * lower-case identifier; throws `RangeError` otherwise.
   */
  listen(
    channel: string,
    onNotification: (payload: string) => void,
    onListening?: () => void,
  ): Promise<() => Promise<void>>;
  /** Resolves when the database answers a query; rejects with the reason otherwise. */
  ping(): Promise<void>;
  /** Closes the client the adapter was given; later calls reject with `DatabaseClosedError`. */
  close(): Promise<void>;
}

/**
 * PostgreSQL refused a statement. `code` is the SQLSTATE (`23505` for a
 * unique violation, `42P01` for an unknown table...), `message` PostgreSQL's
 * own message.
 */
export class SqlError extends Error {
  readonly code: string;
  readonly severity: string | undefined;
  readonly detail: string | undefined;
  readonly hint: string | undefined;
  readonly schema: string | undefined;
  readonly table: string | undefined;
  readonly column: string | undefined;
  readonly constraint: string | undefined;

  constructor(
    message: string,
    fields: {
      code: string;
      severity?: string | undefined;
      detail?: string | undefined;
      hint?: string | undefined;
      schema?: string | undefined;
      table?: string | undefined;
      column?: string | undefined;
      constraint?: string | undefined;
    },
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "SqlError";
    this.code = fields.code;
    this.severity = fields.severity;
    this.detail = fields.detail;
    this.hint = fields.hint;
    this.schema = fields.schema;
    this.table = fields.table;
    this.column = fields.column;
    this.constraint = fields.constraint;
  }
}

export class DatabaseClosedError extends Error {
  readonly code = "database-closed";
  constructor() {
    super("Cannot use the database: it is closed");
    this.name = "DatabaseClosedError";
  }
}

/**
 * Turns an error that PostgreSQL reported (both clients give it a SQLSTATE
 * `code` and a `severity`) into a `SqlError`; other errors (a lost
 * connection...) are returned unchanged.
 */
export function toSqlError(error: unknown): unknown {
  if (!(error instanceof Error) || error instanceof SqlError) return error;
  const fields = error as Error & Record<string, unknown>;
  const text = (name: string) => typeof fields[name] === "string" ? fields[name] : undefined;
  const code = text("code");
  if (code === undefined || !/^[0-9A-Z]{5}$/.test(code) || text("severity") === undefined) {
    return error;
  }
  return new SqlError(error.message, {
    code,
    severity: text("severity"),
    detail: text("detail"),
    hint: text("hint"),
    schema: text("schema_name") ?? text("schema"),
    table: text("table_name") ?? text("table"),
    column: text("column_name") ?? text("column"),
    constraint: text("constraint_name") ?? text("constraint"),
  }, { cause: error });
}

const CHANNEL = /^[a-z_][a-z0-9_]{0,62}$/;

/** Throws `RangeError` unless `channel` can be listened to alike on every adapter. */
export function checkChannel(channel: string): void {
  if (!CHANNEL.test(channel)) {
    throw new RangeError(
      `Cannot listen on channel '${channel}': its name must be lower-case letters, digits and underscores`,
    );
  }
}

/** Whether a parameter is a JSON object or array (sent as `jsonb`). */
export function isJsonParam(value: SqlParam): value is readonly JsonValue[] | {
  readonly [key: string]: JsonValue;
} {
  return typeof value === "object" && value !== null && !(value instanceof Date) &&
    !(value instanceof Uint8Array);
}

// Shared by the adapters: both clients are made to send and read values the
// same way, as the contract pins.

/** OIDs of the PostgreSQL types whose values the adapters convert themselves. */
export const OID = {
  bool: 16,
  bytea: 17,
  int8: 20,
  json: 114,
  int8Array: 1016,
  date: 1082,
  timestamp: 1114,
  timestamptz: 1184,
  jsonb: 3802,
} as const;

/** The type a parameter is sent with, or 0 to let PostgreSQL infer it. */
export function paramTypeOf(value: SqlParam): number {
  if (typeof value === "boolean") return OID.bool;
  if (value instanceof Date) return OID.timestamptz;
  if (value instanceof Uint8Array) return OID.bytea;
  if (value !== null && isJsonParam(value)) return OID.jsonb;
  return 0;
}

/** The value handed to a client, which then serializes it with `SERIALIZERS`. */
export function clientValueOf(
  value: SqlParam,
): string | number | boolean | Date | Uint8Array | null {
  if (typeof value === "bigint") return value.toString();
  if (value !== null && isJsonParam(value)) return JSON.stringify(value);
  return value as string | number | boolean | Date | Uint8Array | null;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * Text for a parameter of the given type. Text stays text, so PostgreSQL
 * itself parses it (`'yes'` as a bool, `'2024-01-01 10:00+02'` with its
 * microseconds as a timestamptz) and both clients report the same errors.
 */
export const SERIALIZERS: Record<number, (value: unknown) => string> = {
  [OID.bool]: (value) => typeof value === "boolean" ? (value ? "t" : "f") : String(value),
  [OID.bytea]: (value) => value instanceof Uint8Array ? `\\x${hex(value)}` : String(value),
  [OID.json]: (value) => typeof value === "string" ? value : JSON.stringify(value),
  [OID.jsonb]: (value) => typeof value === "string" ? value : JSON.stringify(value),
  [OID.date]: (value) => value instanceof Date ? value.toISOString() : String(value),
  [OID.timestamp]: (value) => value instanceof Date ? value.toISOString() : String(value),
  [OID.timestamptz]: (value) => value instanceof Date ? value.toISOString() : String(value),
};

/** `bytea` in PostgreSQL's hex output format to bytes. */
export function parseBytea(text: string): Uint8Array {
  const digits = text.startsWith("\\x") ? text.slice(2) : text;
  const bytes = new Uint8Array(digits.length / 2);
  for (let i = 0; i < bytes.length; i++) {
    bytes[i] = parseInt(digits.slice(i * 2, i * 2 + 2), 16);
  }
  return bytes;
}

/** Parsers both clients use, on top of their own for the other types. */
export const PARSERS: Record<number, (text: string) => unknown> = {
  [OID.bytea]: parseBytea,
  // int8 stays text: a JS number would lose precision above 2^53.
  [OID.int8]: (text) => text,
};

/**
 * Runs `fn` with a view of `tx` that remembers the first statement that
 * failed. Such a transaction cannot commit (PostgreSQL refuses every later
 * statement and turns COMMIT into a rollback), so it fails with that
 * statement's error even when `fn` caught it, and the adapter rolls back.
 * This is what the `postgres` client does; PGlite is made to do the same.
 */
export async function runGuarded<T>(
  tx: SqlExecutor,
  fn: (tx: SqlTransaction) => Promise<T>,
): Promise<T> {
  let failure: SqlError | undefined;
  async function track<R>(statement: Promise<R>): Promise<R> {
    try {
      return await statement;
    } catch (error) {
      if (error instanceof SqlError) failure ??= error;
      throw error;
    }
  }
  let value: T;
  try {
    value = await fn({
      query: (sql, params) => track(tx.query(sql, params)),
      execute: (script) => track(tx.execute(script)),
    });
  } catch (error) {
    // "current transaction is aborted" says less than the error that aborted it.
    throw error instanceof SqlError && error.code === "25P02" && failure !== undefined
      ? failure
      : error;
  }
  if (failure !== undefined) throw failure;
  return value;
}
