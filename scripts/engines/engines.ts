/**
 * `deno task engines up|down|status|logs [engine...]`: the real engines on
 * loopback, from package registries (Debian's packages, Maven Central).
 */
import {
  dataDir,
  type Engine,
  EngineError,
  logFile,
  runningPid,
  start,
  stop,
  waitHealthy,
} from "./engine.ts";
import { elasticsearch } from "./elasticsearch.ts";
import { kafka } from "./kafka.ts";
import { keycloak } from "./keycloak.ts";
import { postgres } from "./postgres.ts";
import { prometheus } from "./prometheus.ts";
import { redis } from "./redis.ts";
import { zipkin } from "./zipkin.ts";

export const ENGINES: readonly Engine[] = [
  redis,
  postgres,
  kafka,
  elasticsearch,
  zipkin,
  keycloak,
  prometheus,
];

const USAGE = `Usage: deno task engines up|down|status|logs [engine...]

Engines: ${ENGINES.map((engine) => `${engine.name} (127.0.0.1:${engine.port})`).join(", ")}.
Without names, every engine. Downloads are cached in .data/cache, data and logs are in
.data/engines/<engine>/.
`;

export function write(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(text));
}

async function isHealthy(engine: Engine): Promise<boolean> {
  try {
    await engine.health();
    return true;
  } catch {
    return false;
  }
}

/**
 * Provisioning runs one engine at a time: concurrent Maven runs share the
 * local repository and fail on each other's partial downloads.
 */
let provisioning = Promise.resolve();

function provisionInTurn(engine: Engine): Promise<void> {
  const turn = provisioning.then(() => engine.provision());
  provisioning = turn.catch(() => {});
  return turn;
}

/** Provisions, starts and waits for one engine; resolves to a status line. */
async function up(engine: Engine, started: Engine[]): Promise<string> {
  if (await runningPid(engine.name) !== undefined && await isHealthy(engine)) {
    return `${engine.name}: already running on 127.0.0.1:${engine.port}`;
  }
  started.push(engine);
  await stop(engine);
  const startedAt = Date.now();
  await provisionInTurn(engine);
  const process = await engine.prepare(dataDir(engine.name));
  await start(engine.name, process);
  await waitHealthy(engine);
  return `${engine.name}: up on 127.0.0.1:${engine.port} in ${
    ((Date.now() - startedAt) / 1000).toFixed(1)
  } s`;
}

/**
 * Brings engines up concurrently and returns the ones it started (not those
 * already running); throws one error naming every failed engine, after
 * stopping every engine it started, so that a failed run leaves none behind.
 */
export async function engineUp(engines: readonly Engine[]): Promise<Engine[]> {
  const started: Engine[] = [];
  const results = await Promise.allSettled(engines.map(async (engine) => {
    const line = await up(engine, started);
    write(`${line}\n`);
  }));
  const failures = results.flatMap((result) => result.status === "rejected" ? [result.reason] : []);
  if (failures.length > 0) {
    for (const engine of started) await stop(engine);
    throw new EngineError(
      "engines",
      `cannot start ${failures.length} engine(s):\n${
        failures.map((failure) =>
          `  ${failure instanceof Error ? failure.message : String(failure)}`
        ).join("\n")
      }`,
    );
  }
  return started;
}

async function main(args: string[]): Promise<number> {
  const [command, ...names] = args;
  const unknown = names.filter((name) => !ENGINES.some((engine) => engine.name === name));
  if (command === undefined || unknown.length > 0) {
    write(USAGE);
    return 2;
  }
  const selected = names.length === 0
    ? ENGINES
    : ENGINES.filter((engine) => names.includes(engine.name));
  switch (command) {
    case "up":
      try {
        await engineUp(selected);
        return 0;
      } catch (error) {
        write(`${error instanceof Error ? error.message : String(error)}\n`);
        return 1;
      }
    case "down":
      for (const engine of selected) {
        write(`${engine.name}: ${await stop(engine) ? "stopped" : "was not running"}\n`);
      }
      return 0;
    case "status": {
      let allUp = true;
      for (const engine of selected) {
        const pid = await runningPid(engine.name);
        const healthy = pid !== undefined && await isHealthy(engine);
        allUp &&= healthy;
        write(
          `${engine.name}: ${
            pid === undefined
              ? "not running"
              : healthy
              ? `up (pid ${pid})`
              : `starting or unhealthy (pid ${pid})`
          } on 127.0.0.1:${engine.port}; log ${logFile(engine.name)}\n`,
        );
      }
      return allUp ? 0 : 1;
    }
    case "logs":
      for (const engine of selected) {
        const text = await Deno.readTextFile(logFile(engine.name)).catch(() => "(no log yet)\n");
        write(`==> ${logFile(engine.name)} <==\n${text.split("\n").slice(-100).join("\n")}\n`);
      }
      return 0;
    default:
      write(USAGE);
      return 2;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
