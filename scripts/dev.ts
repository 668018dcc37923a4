/**
 * `deno task dev [--engines=embedded|real]`: every service in one process.
 * Embedded (the default) needs nothing installed; `--engines=real` first
 * brings up Kafka, Elasticsearch, Redis, Zipkin and Prometheus on loopback and
 * runs the services on them, shipping every log line to Elasticsearch and
 * exporting their traces to Zipkin, and prints where to look.
 */
import { loadConfig } from "../services/config.ts";
import { ENGINES, engineUp, write } from "./engines/engines.ts";

const MAIN = new URL("../services/main.ts", import.meta.url).pathname;
export const SERVICE_PERMISSIONS = [
  "--allow-net",
  "--allow-env",
  "--allow-read",
  // The last good configuration each service read from the config service, and the
  // embedded PGlite's cluster template (PGLITE_TEMPLATE_FILE's default folder).
  "--allow-write=.data/config-cache,.data/pglite",
  "--allow-sys=hostname,osRelease,homedir",
] as const;
/** The engines `--engines=real` needs, and how the services select them. */
const REAL = {
  engines: ["kafka", "elasticsearch", "redis", "zipkin", "prometheus"],
  env: {
    EVENT_LOG: "kafka",
    SEARCH_INDEX: "elasticsearch",
    RATE_LIMIT_STORE: "redis",
    ZIPKIN_URL: "http://127.0.0.1:9411",
    LOG_SHIPPING: "elasticsearch",
  },
} as const;

/** The addresses a person opens first, from the settings the services will read. */
function whereToLook(env: Readonly<Record<string, string | undefined>>): string {
  const config = loadConfig(env);
  const host = config.process.host === "0.0.0.0" ? "127.0.0.1" : config.process.host;
  const rows = [
    ["Zipkin UI", `${REAL.env.ZIPKIN_URL}/zipkin/`],
    ["Prometheus UI", "http://127.0.0.1:9090 (targets: /classic/targets)"],
    ["registry", `http://${host}:${config.registry.port}/api/v1/registry/services`],
    ["gateway", `http://${host}:${config.gateway.port}`],
  ];
  return `Where to look:\n${
    rows.map(([what, url]) => `  ${what!.padEnd(14)} ${url}`).join("\n")
  }\n`;
}

/**
 * The services read their settings from the config service of the same
 * process (services/config/repository), so editing its files changes them
 * live. A variable set in the shell wins.
 */
function configEnv(): Record<string, string> {
  return { CONFIG_URL: Deno.env.get("CONFIG_URL") ?? "http://127.0.0.1:8888" };
}

async function main(args: string[]): Promise<number> {
  const engines = args.length === 0
    ? "embedded"
    : /^--engines=(embedded|real)$/.exec(args[0]!)?.[1];
  if (engines === undefined || args.length > 1) {
    write("Usage: deno task dev [--engines=embedded|real]\n");
    return 2;
  }
  let env: Record<string, string> = configEnv();
  if (engines === "real") {
    await engineUp(
      ENGINES.filter((engine) => (REAL.engines as readonly string[]).includes(engine.name)),
    );
    env = { ...env, ...REAL.env };
    write(whereToLook({ ...Deno.env.toObject(), ...env }));
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...SERVICE_PERMISSIONS, "--env-file=.env", MAIN, "all"],
    env,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // Ctrl-C reaches the services through the terminal's process group; a
  // SIGTERM sent to this launcher alone is passed on.
  Deno.addSignalListener("SIGINT", () => {});
  Deno.addSignalListener("SIGTERM", () => child.kill("SIGTERM"));
  return (await child.status).code;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
