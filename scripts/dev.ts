/**
 * `deno task dev [--engines=embedded|real]`: every service in one process.
 * Embedded (the default) needs nothing installed; `--engines=real` first
 * brings up Kafka, Elasticsearch, Redis, Zipkin, Prometheus and PostgreSQL on
 * loopback and runs the services on them, shipping every log line to
 * Elasticsearch and exporting their traces to Zipkin, and prints where to look.
 */
import { loadConfig } from "../services/config.ts";
import { ENGINES, engineUp, write } from "./engines/engines.ts";
import { runDeno, serviceRunArgs } from "./service_command.ts";

/** The engines `--engines=real` needs, and how the services select them. */
const REAL = {
  engines: ["kafka", "elasticsearch", "redis", "zipkin", "prometheus", "postgres"],
  env: {
    // query-real.yml and analytics-real.yml of the config repository: their
    // PostgreSQL URLs, `{cipher}` secrets under the development key.
    CONFIG_PROFILE: "real",
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
  return await runDeno(serviceRunArgs(["all"]), env);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
