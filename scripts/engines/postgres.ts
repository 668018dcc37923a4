/**
 * PostgreSQL 15 from Debian's `postgresql`, initialised once into the
 * project's data folder and run as the Debian `postgres` user (PostgreSQL
 * refuses to run as root). Health is a real `SELECT 1` over TCP.
 */
import postgresClient from "postgres";
import {
  aptInstall,
  chown,
  type Engine,
  EngineError,
  type EngineProcess,
  exists,
  run,
} from "./engine.ts";

const PORT = 5432;
const BIN = "/usr/lib/postgresql/15/bin";
const OS_USER = "postgres";
/**
 * The superuser and its password: a development secret for a loopback-only
 * engine, the same as the default DATABASE_URL of the tests. Never use it
 * anywhere reachable.
 */
const SUPERUSER = "postgres";
const PASSWORD = "postgres";

export const postgres: Engine = {
  name: "postgres",
  port: PORT,
  startTimeoutMs: 30_000,
  // SIGTERM is a "smart" shutdown that waits for every client to leave.
  stopSignal: "SIGINT",

  async provision(): Promise<void> {
    await aptInstall("postgres", ["postgresql"]);
    // Outside containers, installing the package also starts Debian's own
    // cluster on the same port; say so rather than fail to bind.
    const clusters = await run("pg_lsclusters", ["--no-header"], {
      engine: "postgres",
      what: "list Debian's PostgreSQL clusters",
    });
    for (const line of clusters.split("\n")) {
      const [version, cluster, port, status] = line.trim().split(/\s+/);
      if (port === String(PORT) && status?.startsWith("online")) {
        throw new EngineError(
          "postgres",
          `Debian's cluster ${version}/${cluster} is running on port ${PORT}: stop it with \`pg_ctlcluster ${version} ${cluster} stop\` (and write "manual" into /etc/postgresql/${version}/${cluster}/start.conf)`,
        );
      }
    }
  },

  async prepare(dataDir: string): Promise<EngineProcess> {
    const pgdata = `${dataDir}/pgdata`;
    await Deno.mkdir(dataDir, { recursive: true });
    if (!await exists(`${pgdata}/PG_VERSION`)) {
      await Deno.remove(pgdata, { recursive: true }).catch(() => {});
      await Deno.mkdir(pgdata, { recursive: true });
      const passwordFile = `${dataDir}/initdb-password`;
      await Deno.writeTextFile(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
      await chown("postgres", OS_USER, dataDir);
      try {
        await run("setpriv", [
          `--reuid=${OS_USER}`,
          `--regid=${OS_USER}`,
          "--init-groups",
          `${BIN}/initdb`,
          `--pgdata=${pgdata}`,
          `--username=${SUPERUSER}`,
          `--pwfile=${passwordFile}`,
          "--auth-local=trust",
          "--auth-host=scram-sha-256",
          "--encoding=UTF8",
          "--locale=C.UTF-8",
        ], { engine: "postgres", what: "initialise the database cluster", cwd: dataDir });
      } finally {
        await Deno.remove(passwordFile).catch(() => {});
      }
    }
    // The socket directory and the log must be the postgres user's too.
    await chown("postgres", OS_USER, dataDir);
    return {
      command: `${BIN}/postgres`,
      args: [
        "-D",
        pgdata,
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        `port=${PORT}`,
        "-c",
        `unix_socket_directories=${dataDir}`,
      ],
      user: OS_USER,
    };
  },

  async health(): Promise<void> {
    const sql = postgresClient({
      host: "127.0.0.1",
      port: PORT,
      username: SUPERUSER,
      password: PASSWORD,
      database: "postgres",
      max: 1,
      connect_timeout: 2,
      onnotice: () => {},
    });
    try {
      const rows = await sql<{ one: number }[]>`SELECT 1 AS one`;
      if (rows[0]?.one !== 1) throw new Error(`SELECT 1 answered ${JSON.stringify(rows)}`);
    } finally {
      await sql.end({ timeout: 1 });
    }
  },
};
