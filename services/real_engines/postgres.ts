/** A service's database in PostgreSQL (its *_DATABASE_URL set). */
import postgres from "postgres";
import type { SqlDatabase } from "../../shared/database/database.ts";
import { PostgresDatabase } from "../../shared/database/postgres_database.ts";
import { TracedSqlDatabase } from "../../shared/database/traced_database.ts";
import type { Tracer } from "../../shared/trace/tracing.ts";

/** The database at `url`; it connects on first use. */
export function postgresDatabase(url: string, tracer: Tracer | undefined): SqlDatabase {
  const { hostname, port } = new URL(url);
  // The service retries its migrations until the server answers.
  return new TracedSqlDatabase(
    new PostgresDatabase(postgres(url, { max: 10, connect_timeout: 5, onnotice: () => {} })),
    {
      ...(tracer === undefined ? {} : { tracer }),
      serverAddress: hostname,
      serverPort: port === "" ? 5432 : Number(port),
    },
  );
}
