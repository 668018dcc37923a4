/**
 * `deno task bench:startup [--rounds=N] [--settle=SECONDS]`: numbers, never a
 * pass/fail. Launches what `deno task dev` runs (`services/main.ts all` on the
 * embedded engines, with the same permissions) on free ports, and measures
 * from the launch:
 *  - the first access token from identity (what `deno task token` does);
 *  - the first non-empty search through the gateway (the README's quick-start
 *    request, as app_super_user so that any tweet counts);
 *  - the process's resident memory (VmRSS) after `--settle` seconds;
 * and counts the warnings and errors it logged and the instances the registry
 * evicted. One warm-up round first (not counted), then `--rounds` rounds;
 * the last line takes the medians. Every process started is stopped again,
 * also on failure and Ctrl-C.
 */
import { fetchToken, tokenOptions } from "../token.ts";
import { SERVICE_PERMISSIONS } from "../dev.ts";
import { write } from "../engines/engines.ts";

const MAIN = new URL("../../services/main.ts", import.meta.url).pathname;
const USER = "app_super_user";
const TIMEOUT_MS = 60_000;
const POLL_MS = 50;
const USAGE = "Usage: deno task bench:startup [--rounds=N] [--settle=SECONDS]\n";

const PORT_SETTINGS = [
  "REGISTRY_PORT",
  "IDENTITY_PORT",
  "GATEWAY_PORT",
  "STREAM_PORT",
  "INDEXER_PORT",
  "WORDCOUNT_PORT",
  "QUERY_PORT",
  "ANALYTICS_PORT",
] as const;

interface Round {
  readonly tokenMs: number;
  readonly searchMs: number;
  readonly rssMb: number;
  readonly warnings: number;
  readonly evictions: number;
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

/** Counts lines of the child's output as they arrive. */
async function countLines(stream: ReadableStream<Uint8Array>, counts: Map<string, number>) {
  let buffered = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    buffered += text;
    const lines = buffered.split("\n");
    buffered = lines.pop()!;
    for (const line of lines) {
      if (/"level":"(WARN|WARNING|ERROR|FATAL)"/.test(line)) {
        counts.set("warnings", (counts.get("warnings") ?? 0) + 1);
      }
      if (/"message":"Evicted /.test(line)) {
        counts.set("evictions", (counts.get("evictions") ?? 0) + 1);
      }
    }
  }
}

async function round(settleMs: number, children: Set<Deno.ChildProcess>): Promise<Round> {
  const ports = freePorts(PORT_SETTINGS.length);
  const env: Record<string, string> = Object.fromEntries(
    PORT_SETTINGS.map((name, index) => [name, String(ports[index])]),
  );
  env.REGISTRY_URLS = `http://127.0.0.1:${env.REGISTRY_PORT}`;
  env.OIDC_ISSUER = `http://127.0.0.1:${env.IDENTITY_PORT}/realms/twitterapi`;
  const options = await tokenOptions([USER], env);
  const started = Date.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...SERVICE_PERMISSIONS, MAIN, "all"],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  children.add(child);
  const counts = new Map<string, number>();
  const reading = Promise.all([countLines(child.stdout, counts), countLines(child.stderr, counts)]);
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
    await new Promise((resolve) =>
      setTimeout(resolve, Math.max(0, started + settleMs - Date.now()))
    );
    const rssMb = residentMb(child.pid);
    return {
      tokenMs,
      searchMs,
      rssMb,
      warnings: counts.get("warnings") ?? 0,
      evictions: counts.get("evictions") ?? 0,
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

function line(label: string, result: Round): string {
  return `${label.padEnd(8)} token ${String(result.tokenMs).padStart(6)} ms   search ${
    String(result.searchMs).padStart(6)
  } ms   rss ${
    String(result.rssMb).padStart(5)
  } MB   warnings ${result.warnings}   evictions ${result.evictions}\n`;
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
      `services/main.ts all, embedded engines; times from launch; rss after ${settleSeconds} s\n`,
    );
    write(line("warm-up", await round(settleSeconds * 1000, children)));
    const results: Round[] = [];
    for (let i = 1; i <= rounds; i++) {
      const result = await round(settleSeconds * 1000, children);
      results.push(result);
      write(line(`round ${i}`, result));
    }
    write(line("median", {
      tokenMs: median(results.map((result) => result.tokenMs)),
      searchMs: median(results.map((result) => result.searchMs)),
      rssMb: median(results.map((result) => result.rssMb)),
      warnings: median(results.map((result) => result.warnings)),
      evictions: median(results.map((result) => result.evictions)),
    }));
    return 0;
  } finally {
    stop();
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
