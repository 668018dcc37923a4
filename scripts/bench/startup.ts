/**
 * `deno task bench:startup [--rounds=N] [--settle=SECONDS]`: numbers, never a
 * pass/fail. Launches what `deno task dev` runs (`services/main.ts all` on the
 * embedded engines, with the same permissions and V8 flags, its settings from
 * the config service of the same process) on free ports, and measures from
 * the launch:
 *  - module load: the process's first log line (written once every module is
 *    loaded and logging is configured);
 *  - each service listening, and registered with the registry (its client's
 *    first "Registered" line);
 *  - the first access token from identity (what `deno task token` does);
 *  - the first non-empty search through the gateway (the README's quick-start
 *    request, as app_super_user so that any tweet counts);
 *  - the first search as app_user answered 200 (its grants are read from the
 *    embedded database: the time PGlite and query's schema are ready);
 *  - the process's resident memory (VmRSS) after `--settle` seconds;
 * and counts the warnings and errors it logged (and shows the first of them)
 * and the instances the registry evicted. One warm-up round first (not
 * counted), then `--rounds` rounds; the last lines take the medians. Every
 * process started is stopped again, also on failure and Ctrl-C.
 */
import { fetchToken, tokenOptions } from "../token.ts";
import { serviceRunArgs } from "../service_command.ts";
import { write } from "../engines/engines.ts";

const USER = "app_super_user";
/** A user whose search reads its grants from query's database. */
const GRANTED_USER = "app_user";
const TIMEOUT_MS = 60_000;
const POLL_MS = 50;
const SHOWN_WARNINGS = 3;
const USAGE = "Usage: deno task bench:startup [--rounds=N] [--settle=SECONDS]\n";

const PORT_SETTINGS = [
  "REGISTRY_PORT",
  "IDENTITY_PORT",
  "CONFIG_PORT",
  "GATEWAY_PORT",
  "GATEWAY_MANAGEMENT_PORT",
  "STREAM_PORT",
  "INDEXER_PORT",
  "WORDCOUNT_PORT",
  "QUERY_PORT",
  "ANALYTICS_PORT",
  "CONSOLE_PORT",
] as const;

/** What one start showed, in milliseconds from the launch (and megabytes). */
interface Round {
  readonly loadMs: number;
  /** When each service logged "listening", in start order. */
  readonly listeningMs: ReadonlyMap<string, number>;
  /** When each service's first registration was accepted. */
  readonly registeredMs: ReadonlyMap<string, number>;
  readonly tokenMs: number;
  readonly searchMs: number;
  readonly grantedSearchMs: number;
  readonly rssMb: number;
  readonly warnings: number;
  readonly evictions: number;
  /** The first warnings and errors, for a person to read. */
  readonly warningLines: readonly string[];
}

/** What the child logged, as it arrives, with its time from the launch. */
class StartLog {
  firstLineMs: number | undefined;
  readonly listeningMs = new Map<string, number>();
  readonly registeredMs = new Map<string, number>();
  warnings = 0;
  evictions = 0;
  readonly warningLines: string[] = [];

  constructor(readonly started: number) {}

  line(text: string): void {
    const at = Date.now() - this.started;
    this.firstLineMs ??= at;
    if (/"level":"(WARN|WARNING|ERROR|FATAL)"/.test(text)) {
      this.warnings += 1;
      const message = /"message":"((?:[^"\\]|\\.)*)"/.exec(text)?.[1] ?? text;
      if (this.warningLines.length < SHOWN_WARNINGS) {
        this.warningLines.push(`${at} ms: ${message.slice(0, 160)}`);
      }
    }
    if (/"message":"Evicted /.test(text)) this.evictions += 1;
    const listening = /"message":"(\w+) listening on /.exec(text)?.[1];
    if (listening !== undefined && !this.listeningMs.has(listening)) {
      this.listeningMs.set(listening, at);
    }
    // The registry client's line (logger twitterapi.main), not the registry's own.
    const registered = /"message":"Registered (\w+) instance \S+ with /.exec(text)?.[1];
    if (registered !== undefined && !this.registeredMs.has(registered)) {
      this.registeredMs.set(registered, at);
    }
  }
}

/** Ports free right now (the kernel's picks), one per service. */
function freePorts(count: number): number[] {
  const listeners = Array.from(
    { length: count },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = listeners.map((listener) => (listener.addr as Deno.NetAddr).port);
  for (const listener of listeners) listener.close();
  return ports;
}

function residentMb(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  if (kb === undefined) throw new Error(`Cannot read the memory of process ${pid}: no VmRSS`);
  return Math.round(Number(kb) / 1024);
}

async function poll<T>(what: string, deadline: number, attempt: () => Promise<T | undefined>) {
  for (;;) {
    const value = await attempt().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`Cannot measure the start-up: no ${what} in time`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** Feeds the child's output to `log`, line by line, as it arrives. */
async function readLines(stream: ReadableStream<Uint8Array>, log: StartLog) {
  let buffered = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    buffered += text;
    const lines = buffered.split("\n");
    buffered = lines.pop()!;
    for (const line of lines) log.line(line);
  }
}

async function round(settleMs: number, children: Set<Deno.ChildProcess>): Promise<Round> {
  const ports = freePorts(PORT_SETTINGS.length);
  const env: Record<string, string> = Object.fromEntries(
    PORT_SETTINGS.map((name, index) => [name, String(ports[index])]),
  );
  env.REGISTRY_URLS = `http://127.0.0.1:${env.REGISTRY_PORT}`;
  env.OIDC_ISSUER = `http://127.0.0.1:${env.IDENTITY_PORT}/realms/twitterapi`;
  // As scripts/dev.ts: the services read their settings from the config service.
  env.CONFIG_URL = `http://127.0.0.1:${env.CONFIG_PORT}`;
  const options = await tokenOptions([USER], env);
  const grantedOptions = await tokenOptions([GRANTED_USER], env);
  const started = Date.now();
  const child = new Deno.Command(Deno.execPath(), {
    // Not the developer's `.env`: the same start on every machine.
    args: serviceRunArgs(["all"], { envFile: false }),
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  children.add(child);
  const log = new StartLog(started);
  const reading = Promise.all([readLines(child.stdout, log), readLines(child.stderr, log)]);
  try {
    const deadline = started + TIMEOUT_MS;
    const token = await poll("token", deadline, () => fetchToken(options));
    const tokenMs = Date.now() - started;
    const search = `http://127.0.0.1:${env.GATEWAY_PORT}/api/v1/tweets?text=kafka`;
    await poll("searchable tweet", deadline, async () => {
      const response = await fetch(search, { headers: { authorization: `Bearer ${token}` } });
      const body = await response.json();
      return response.ok && Array.isArray(body) && body.length > 0 ? true : undefined;
    });
    const searchMs = Date.now() - started;
    const grantedToken = await poll("token", deadline, () => fetchToken(grantedOptions));
    await poll("search as app_user", deadline, async () => {
      const response = await fetch(search, {
        headers: { authorization: `Bearer ${grantedToken}` },
      });
      await response.body?.cancel();
      return response.ok ? true : undefined;
    });
    const grantedSearchMs = Date.now() - started;
    await new Promise((resolve) =>
      setTimeout(resolve, Math.max(0, started + settleMs - Date.now()))
    );
    return {
      loadMs: log.firstLineMs ?? NaN,
      listeningMs: new Map(log.listeningMs),
      registeredMs: new Map(log.registeredMs),
      tokenMs,
      searchMs,
      grantedSearchMs,
      rssMb: residentMb(child.pid),
      warnings: log.warnings,
      evictions: log.evictions,
      warningLines: [...log.warningLines],
    };
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await reading;
    children.delete(child);
  }
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Per service, the median of its times over the rounds that saw it. */
function medianTimes(maps: readonly ReadonlyMap<string, number>[]): Map<string, number> {
  const services = [...new Set(maps.flatMap((map) => [...map.keys()]))];
  return new Map(services.map((service) => [
    service,
    median(maps.flatMap((map) => map.has(service) ? [map.get(service)!] : [])),
  ]));
}

function times(map: ReadonlyMap<string, number>): string {
  return [...map].map(([service, ms]) => `${service} ${Math.round(ms)}`).join(", ");
}

function report(label: string, result: Round): string {
  const ms = (value: number) => `${String(Math.round(value)).padStart(6)} ms`;
  const lines = [
    `${label.padEnd(8)} load ${ms(result.loadMs)}   token ${ms(result.tokenMs)}   search ${
      ms(result.searchMs)
    }   app_user ${ms(result.grantedSearchMs)}   rss ${
      String(result.rssMb).padStart(5)
    } MB   warnings ${result.warnings}   evictions ${result.evictions}`,
    `${"".padEnd(8)} listening (ms): ${times(result.listeningMs)}`,
    `${"".padEnd(8)} registered (ms): ${times(result.registeredMs)}`,
    ...result.warningLines.map((warning) => `${"".padEnd(8)} warning at ${warning}`),
  ];
  return lines.join("\n") + "\n";
}

async function main(args: readonly string[]): Promise<number> {
  let rounds = 3;
  let settleSeconds = 30;
  for (const arg of args) {
    const match = /^--(rounds|settle)=(\d+)$/.exec(arg);
    if (match === null || Number(match[2]) < 1) {
      write(USAGE);
      return 2;
    }
    if (match[1] === "rounds") rounds = Number(match[2]);
    else settleSeconds = Number(match[2]);
  }
  const children = new Set<Deno.ChildProcess>();
  const stop = () => {
    for (const child of children) child.kill("SIGTERM");
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  try {
    write(
      `services/main.ts all, embedded engines; times from launch; rss after ${settleSeconds} s; ` +
        `load average ${Deno.loadavg().map((load) => load.toFixed(1)).join(" ")}\n`,
    );
    write(report("warm-up", await round(settleSeconds * 1000, children)));
    const results: Round[] = [];
    for (let i = 1; i <= rounds; i++) {
      const result = await round(settleSeconds * 1000, children);
      results.push(result);
      write(report(`round ${i}`, result));
    }
    const of = (pick: (result: Round) => number) => median(results.map(pick));
    write(report("median", {
      loadMs: of((result) => result.loadMs),
      listeningMs: medianTimes(results.map((result) => result.listeningMs)),
      registeredMs: medianTimes(results.map((result) => result.registeredMs)),
      tokenMs: of((result) => result.tokenMs),
      searchMs: of((result) => result.searchMs),
      grantedSearchMs: of((result) => result.grantedSearchMs),
      rssMb: of((result) => result.rssMb),
      warnings: of((result) => result.warnings),
      evictions: of((result) => result.evictions),
      warningLines: [],
    }));
    write(`load average ${Deno.loadavg().map((load) => load.toFixed(1)).join(" ")}\n`);
    return 0;
  } finally {
    stop();
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
