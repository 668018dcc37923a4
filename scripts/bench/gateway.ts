/**
 * `deno task bench:gateway [options]`: numbers, never a pass/fail. wrk measures
 * requests/s and latency percentiles of one tweet search, with the same bearer
 * token, called
 *  1. directly on the query service;
 *  2. through nginx `proxy_pass` with upstream keepalive;
 *  3. through a bare `Deno.serve` + `fetch` pass-through (bare_proxy.ts: no
 *     auth, no limit, no breaker, no logging), the physical limit of a proxy
 *     on this runtime;
 *  4. through our gateway: JWT check, rate limit in Redis (a limit never
 *     reached), circuit breaker, discovery-routed proxying, with the embedded
 *     observability defaults (spans and log lines kept in memory);
 *  5. unless `--cost=off`, through the same gateway with trace export to
 *     Zipkin and log shipping to Elasticsearch on, at 10 % and at 100 %
 *     sampling (`gw-obs10`, `gw-obs100`): their cost is printed against 4;
 * and, with `--breakdown`, through the gateway with parts left out.
 * The services run as deployed: `registry identity query stream indexer` in
 * one process (embedded engines; `stream` fills the query's index), each
 * gateway in its own. nginx and wrk are Debian's packages, installed when
 * missing; nginx runs in the foreground with a generated configuration in a
 * temporary directory. Everything started is stopped again, also on failure
 * and Ctrl-C.
 *
 * Options: --threads=2 --connections=32 (wrk), --duration=10 --warmup=3
 * (seconds per target), --rounds=2 (turns of every target; the final line
 * takes the medians), --tweets=2000 (in the index), --log-level=info (of the
 * services: info logs every request, as deployed), --gateway-cpu-prof=DIR (a
 * V8 CPU profile of the gateway process), --services-cpu-prof=DIR (of the
 * services' process: query's own cost per search), --cost=on|off, --breakdown.
 * Every row shows the proxy's CPU per request (ms of CPU time), and the load
 * average of the machine is printed before and after (other users' load
 * makes every number noisy).
 */
import builtInRealm from "../../shared/auth/twitterapi-realm.json" with { type: "json" };
import { DEFAULT_ROUTES, type GatewayRoute } from "../../services/gateway/routes.ts";
import { fetchToken, tokenOptions } from "../token.ts";
import { SERVICE_PERMISSIONS } from "../service_command.ts";
import { aptInstall } from "../engines/engine.ts";
import { write } from "../engines/engines.ts";

const MAIN = new URL("../../services/main.ts", import.meta.url).pathname;
const BARE_PROXY = new URL("./bare_proxy.ts", import.meta.url).pathname;
const REALM = builtInRealm.realm;
// The super user reads every tweet, so the wait for all of them and every target see the same data.
const USER = "app_super_user";
const KEYWORD = "Kafka";
const PAGE_SIZE = 20;
const READY_TIMEOUT_MS = 60_000;

const USAGE = `Usage: deno task bench:gateway [--threads=N] [--connections=N] [--duration=SECONDS]
  [--warmup=SECONDS] [--rounds=N] [--tweets=N] [--log-level=LEVEL] [--gateway-cpu-prof=DIR]
  [--services-cpu-prof=DIR] [--cost=on|off] [--breakdown]
`;

interface Options {
  /** wrk threads. */
  readonly threads: number;
  /** wrk connections, shared by the threads. */
  readonly connections: number;
  /** Seconds measured per target. */
  readonly duration: number;
  /** Seconds of load per target before the measurement, not counted. */
  readonly warmup: number;
  /**
   * Measurements per target, taking turns (direct, nginx, gateway, direct, ...)
   * so that load from outside the benchmark spreads over every target; the
   * medians make the final line.
   */
  readonly rounds: number;
  /** Tweets in the query service's index. */
  readonly tweets: number;
  /** LOG_LEVEL of the services (info logs every request, as deployed). */
  readonly logLevel: string;
  /** A directory for a CPU profile of the gateway process; empty: no profile. */
  readonly gatewayCpuProf: string;
  /** A directory for a CPU profile of the services' process (query); empty: no profile. */
  readonly servicesCpuProf: string;
  /** Also measures the gateway without JWT, without rate limit, and with it in memory. */
  readonly breakdown: boolean;
  /** Also measures the gateway with trace export and log shipping on (10 % and 100 %). */
  readonly cost: boolean;
}

function parseOptions(args: readonly string[]): Options {
  const values: Record<string, string> = {
    threads: "2",
    connections: "32",
    duration: "10",
    warmup: "3",
    rounds: "2",
    tweets: "2000",
    "log-level": "info",
    "gateway-cpu-prof": "",
    "services-cpu-prof": "",
    cost: "on",
  };
  const flags = new Set<string>();
  for (const arg of args) {
    if (arg === "--breakdown") {
      flags.add("breakdown");
      continue;
    }
    const match = /^--([a-z-]+)=(.+)$/.exec(arg);
    if (match === null || !(match[1]! in values)) throw new RangeError(`Unknown option ${arg}`);
    values[match[1]!] = match[2]!;
  }
  const positive = (name: string): number => {
    const value = Number(values[name]);
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(`--${name} must be a positive integer: got ${values[name]}`);
    }
    return value;
  };
  const options = {
    threads: positive("threads"),
    connections: positive("connections"),
    duration: positive("duration"),
    warmup: positive("warmup"),
    rounds: positive("rounds"),
    tweets: positive("tweets"),
    logLevel: values["log-level"]!,
    gatewayCpuProf: values["gateway-cpu-prof"]!,
    servicesCpuProf: values["services-cpu-prof"]!,
    breakdown: flags.has("breakdown"),
    cost: values.cost === "on",
  };
  if (values.cost !== "on" && values.cost !== "off") {
    throw new RangeError(`--cost must be on or off: got ${values.cost}`);
  }
  if (options.connections < options.threads) {
    throw new RangeError("--connections must be at least --threads (wrk needs one per thread)");
  }
  return options;
}

/** What wrk reported for one run. */
interface WrkResult {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly requests: number;
  readonly non2xx: number;
  readonly socketErrors: number;
}

/** wrk prints durations as `812.00us`, `1.23ms`, `2.01s` or `1.00m`. */
function milliseconds(value: string): number {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(value);
  if (match === null) throw new Error(`Cannot read the wrk duration '${value}'`);
  const scale = { us: 0.001, ms: 1, s: 1000, m: 60_000 }[match[2] as "us" | "ms" | "s" | "m"];
  return Number(match[1]) * scale;
}

/** Reads the output of `wrk --latency`. */
export function parseWrk(output: string): WrkResult {
  const field = (pattern: RegExp): string => {
    const match = pattern.exec(output);
    if (match === null) throw new Error(`Cannot read ${pattern} in the wrk output:\n${output}`);
    return match[1]!;
  };
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(
    output,
  );
  return {
    requestsPerSecond: Number(field(/Requests\/sec:\s+([\d.]+)/)),
    p50Ms: milliseconds(field(/^\s+50%\s+(\S+)/m)),
    p99Ms: milliseconds(field(/^\s+99%\s+(\S+)/m)),
    requests: Number(field(/(\d+) requests in /)),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0),
    socketErrors: socket === null ? 0 : socket.slice(1).reduce((sum, n) => sum + Number(n), 0),
  };
}

/** Stops what the benchmark started, newest first; runs once, then the process exits. */
class Cleanup {
  readonly #steps: { what: string; run: () => Promise<void> }[] = [];
  #done: Promise<void> | undefined;

  add(what: string, run: () => Promise<void>): void {
    // A process started while stopping (after Ctrl-C the benchmark goes on until it exits) is
    // stopped by the loop in `run`, which takes steps until none is left.
    this.#steps.push({ what, run });
  }

  async #stop(step: { what: string; run: () => Promise<void> }): Promise<void> {
    try {
      await step.run();
    } catch (error) {
      write(`Cannot stop ${step.what}: ${error instanceof Error ? error.message : error}\n`);
    }
  }

  run(): Promise<void> {
    this.#done ??= (async () => {
      while (this.#steps.length > 0) await this.#stop(this.#steps.pop()!);
    })();
    return this.#done;
  }
}

/** A free loopback port (free when asked; nothing else on this machine races for it). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

interface Child {
  readonly name: string;
  readonly pid: number;
  readonly log: string;
  /** Resolves with the exit code once the process ended. */
  readonly exited: Promise<number>;
}

/**
 * Starts a process whose stdout and stderr go straight to `<dir>/<name>.log`
 * (through the shell's redirection, so this process does not copy the
 * services' logs while measuring), and registers its stop (`signal`, then
 * SIGKILL after 10 s) with `cleanup`.
 */
function spawn(
  cleanup: Cleanup,
  dir: string,
  name: string,
  command: string,
  args: readonly string[],
  env: Record<string, string>,
  signal: Deno.Signal = "SIGTERM",
): Child {
  const log = `${dir}/${name}.log`;
  // `exec` replaces the shell: the signals reach the command itself.
  const child = new Deno.Command("sh", {
    args: ["-c", 'log=$1; shift; exec "$@" >"$log" 2>&1', "sh", log, command, ...args],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const exited = child.status.then((status) => status.code);
  cleanup.add(name, async () => {
    try {
      child.kill(signal);
    } catch {
      // Already ended.
    }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // Ended meanwhile.
      }
    }, 10_000);
    await exited;
    clearTimeout(timer);
  });
  return { name, pid: child.pid, log, exited };
}

/** CPU seconds (user and system) `pid` and its children (nginx's workers) have used so far. */
async function cpuSeconds(pid: number): Promise<number> {
  const ticksPerSecond = 100;
  const own = async (id: number): Promise<number> => {
    const stat = await Deno.readTextFile(`/proc/${id}/stat`).catch(() => "");
    // Fields after the parenthesized command name: utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11] ?? 0) + Number(fields[12] ?? 0)) / ticksPerSecond;
  };
  const children = await Deno.readTextFile(`/proc/${pid}/task/${pid}/children`).catch(() => "");
  const ids = children.split(" ").filter((id) => id !== "").map(Number);
  const times = await Promise.all([pid, ...ids].map(own));
  return times.reduce((sum, time) => sum + time, 0);
}

async function logTail(child: Child): Promise<string> {
  const text = await Deno.readTextFile(child.log).catch(() => "");
  return text.split("\n").slice(-30).join("\n");
}

/** Polls `probe` until it answers true; fails when `child` ends or the time is up. */
async function until(child: Child, what: string, probe: () => Promise<boolean>): Promise<void> {
  let ended = false;
  void child.exited.then(() => ended = true);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (true) {
    if (ended) {
      throw new Error(`${child.name} ended before ${what}; its log:\n${await logTail(child)}`);
    }
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${child.name}: no ${what} after ${READY_TIMEOUT_MS / 1000} s; its log:\n${await logTail(
          child,
        )}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** GET `url` with the token; the response's status and `X-Total-Count`. */
async function search(url: string, token: string): Promise<{ status: number; total: number }> {
  const response = await fetch(url, {
    headers: { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(5000),
  });
  await response.body?.cancel();
  return { status: response.status, total: Number(response.headers.get("x-total-count") ?? 0) };
}

/** Fails, naming the command that starts Redis, unless Redis answers PING at `url`. */
async function checkRedis(url: string): Promise<void> {
  const { hostname, port } = new URL(url);
  try {
    const connection = await Deno.connect({ hostname, port: Number(port || 6379) });
    try {
      await connection.write(new TextEncoder().encode("PING\r\n"));
      const reply = new Uint8Array(64);
      const read = await connection.read(reply);
      const text = new TextDecoder().decode(reply.subarray(0, read ?? 0));
      if (!text.startsWith("+PONG")) throw new Error(`it answered ${JSON.stringify(text)}`);
    } finally {
      connection.close();
    }
  } catch (error) {
    throw new Error(
      `Redis (RATE_LIMIT_STORE=redis) is not usable at ${url}: ${
        error instanceof Error ? error.message : error
      }; start it with: deno task engines up redis`,
    );
  }
}

/**
 * The gateway's `/ready` status (on its management port): `ready`, or
 * `degraded` while the rate limit falls back.
 */
async function readiness(managementUrl: string): Promise<string> {
  const response = await fetch(`${managementUrl}/ready`, { signal: AbortSignal.timeout(5000) });
  const body = await response.json() as { status?: unknown };
  return String(body.status);
}

/** A gateway configuration to measure. */
interface GatewayVariant {
  readonly name: string;
  /** What its requests go through, for the legend. */
  readonly what: string;
  readonly auth: boolean;
  /** Where the rate limit counts; undefined: no rate limit. */
  readonly rateLimitStore?: "redis" | "memory";
  /** Trace export to Zipkin and log shipping to Elasticsearch, at this sampling ratio. */
  readonly exportRatio?: number;
}

/** The one in the final line: everything on, as deployed. */
const FULL_GATEWAY: GatewayVariant = {
  name: "gateway",
  what: "JWT + rate limit in Redis + breaker",
  auth: true,
  rateLimitStore: "redis",
};

/** `--cost=on`: the full gateway with trace export and log shipping on. */
const EXPORTING: readonly GatewayVariant[] = [0.1, 1].map((ratio) => ({
  ...FULL_GATEWAY,
  name: `gw-obs${ratio * 100}`,
  what: `as gateway, with trace export to Zipkin at ${
    ratio * 100
  } % sampling and log shipping to Elasticsearch`,
  exportRatio: ratio,
}));

/** `--breakdown`: the same gateway with parts left out, to see what each costs. */
const BREAKDOWN: readonly GatewayVariant[] = [
  { name: "gw-bare", what: "breaker only: no JWT, no rate limit", auth: false },
  { name: "gw-jwt", what: "JWT + breaker, no rate limit", auth: true },
  {
    name: "gw-mem",
    what: "JWT + rate limit in process memory + breaker",
    auth: true,
    rateLimitStore: "memory",
  },
];

/**
 * The default routes for a variant: with the rate limit, under a policy name
 * of this run's own and a limit no benchmark reaches.
 */
function variantRoutes(run: string, variant: GatewayVariant): { routes: GatewayRoute[] } {
  return {
    routes: DEFAULT_ROUTES.map((route) => {
      const { rateLimit, ...rest } = route;
      return {
        ...rest,
        ...(variant.auth ? {} : { auth: { mode: "none" } }),
        ...(rateLimit === undefined || variant.rateLimitStore === undefined ? {} : {
          rateLimit: { ...rateLimit, policy: `bench-${run}-${rateLimit.policy}`, limit: 1e9 },
        }),
      };
    }),
  };
}

/** nginx as a reverse proxy of the query service, one worker, everything in `dir`. */
function nginxConfig(dir: string, port: number, queryPort: number): string {
  return `daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream query {
    server 127.0.0.1:${queryPort};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://query;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
  }
}
`;
}

/** Runs wrk once against `url` with the token; the benchmark's load shape comes from `options`. */
async function wrk(
  cleanup: Cleanup,
  dir: string,
  name: string,
  url: string,
  token: string,
  options: Options,
  seconds: number,
): Promise<WrkResult> {
  const child = spawn(cleanup, dir, name, "wrk", [
    `-t${options.threads}`,
    `-c${options.connections}`,
    `-d${seconds}s`,
    "--latency",
    "-H",
    `Authorization: Bearer ${token}`,
    url,
  ], {});
  const code = await child.exited;
  const output = await Deno.readTextFile(child.log);
  if (code !== 0) throw new Error(`wrk exited with ${code}:\n${output}`);
  return parseWrk(output);
}

/** Busy and total CPU seconds of the whole machine, every core, so far. */
async function machineCpuSeconds(): Promise<{ busy: number; total: number }> {
  const line = (await Deno.readTextFile("/proc/stat")).split("\n")[0]!;
  const ticks = line.split(/\s+/).slice(1).map(Number);
  const total = ticks.reduce((sum, tick) => sum + tick, 0);
  // idle and iowait
  const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  return { busy: (total - idle) / 100, total: total / 100 };
}

/** CPU use during one measurement, in % of one core. */
interface CpuUse {
  /** The process of registry, identity and query (and the idle stream and indexer). */
  readonly services: number;
  /** nginx (master and worker) or the gateway; 0 for the direct calls. */
  readonly proxy: number;
  /** Every process on the machine, wrk and other users included. */
  readonly machine: number;
  /** CPU milliseconds the proxy used per request (0 for the direct calls). */
  readonly proxyMsPerRequest: number;
}

const COLUMNS = [
  ["target", 8],
  ["req/s", 8],
  ["p50 ms", 8],
  ["p99 ms", 8],
  ["requests", 9],
  ["non-2xx", 8],
  ["sock err", 8],
  ["query cpu", 10],
  ["proxy cpu", 10],
  ["all cpu", 8],
  ["proxy ms/req", 13],
] as const;

function row(values: readonly string[]): string {
  return values.map((value, i) =>
    i === 0 ? value.padEnd(COLUMNS[i]![1]) : value.padStart(COLUMNS[i]![1])
  )
    .join(" ");
}

function format(name: string, result: WrkResult, cpu: CpuUse): string {
  const percent = (value: number) => `${value.toFixed(0)}%`;
  return row([
    name,
    result.requestsPerSecond.toFixed(0),
    result.p50Ms.toFixed(2),
    result.p99Ms.toFixed(2),
    String(result.requests),
    String(result.non2xx),
    String(result.socketErrors),
    percent(cpu.services),
    percent(cpu.proxy),
    percent(cpu.machine),
    cpu.proxyMsPerRequest.toFixed(3),
  ]);
}

async function bench(options: Options, cleanup: Cleanup, dir: string): Promise<void> {
  const run = crypto.randomUUID().slice(0, 8);
  const [registryPort, identityPort, queryPort, nginxPort] = [
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ];
  const issuer = `http://127.0.0.1:${identityPort}/realms/${REALM}`;
  const common = {
    NO_COLOR: "1",
    LOG_LEVEL: options.logLevel,
    REGISTRY_URLS: `http://127.0.0.1:${registryPort}`,
    OIDC_ISSUER: issuer,
  };

  const redisUrl = Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379";
  await checkRedis(redisUrl);
  write(
    `Services: registry identity query stream indexer (one process, ${options.tweets} tweets); ` +
      `each gateway in a process of its own; rate limits in Redis at ${redisUrl}\n`,
  );
  const backend = spawn(cleanup, dir, "services", Deno.execPath(), [
    "run",
    ...SERVICE_PERMISSIONS,
    ...(options.servicesCpuProf === ""
      ? []
      : ["--cpu-prof", `--cpu-prof-dir=${options.servicesCpuProf}`]),
    MAIN,
    "registry",
    "identity",
    "query",
    "stream",
    "indexer",
  ], {
    ...common,
    EVENT_LOG: "memory",
    SEARCH_INDEX: "memory",
    REGISTRY_PORT: String(registryPort),
    IDENTITY_PORT: String(identityPort),
    QUERY_PORT: String(queryPort),
    STREAM_PORT: "0",
    INDEXER_PORT: "0",
    STREAM_COUNT: String(options.tweets),
    STREAM_RATE_PER_SECOND: "100000",
    STREAM_KEYWORDS: "Java,Microservices,Spring,Kafka,Elasticsearch",
  });
  let token = "";
  const tokenFor = await tokenOptions([USER, `--issuer=${issuer}`], Deno.env.toObject());
  await until(backend, "access token", async () => {
    token = await fetchToken(tokenFor);
    return true;
  });
  const path = `/api/v1/tweets?text=${KEYWORD}&size=${PAGE_SIZE}`;
  const direct = `http://127.0.0.1:${queryPort}${path}`;
  await until(backend, `${options.tweets} indexed tweets`, async () => {
    const { status, total } = await search(`http://127.0.0.1:${queryPort}/api/v1/tweets`, token);
    return status === 200 && total >= options.tweets;
  });

  const zipkinUrl = Deno.env.get("ZIPKIN_URL") || "http://127.0.0.1:9411";
  const elasticsearchUrl = Deno.env.get("ELASTICSEARCH_URL") ?? "http://127.0.0.1:9200";
  if (options.cost) {
    await checkHttp("Zipkin", `${zipkinUrl.replace(/\/$/, "")}/health`, "zipkin");
    await checkHttp(
      "Elasticsearch",
      `${elasticsearchUrl.replace(/\/$/, "")}/_cluster/health`,
      "elasticsearch",
    );
  }
  const variants = [
    FULL_GATEWAY,
    ...(options.cost ? EXPORTING : []),
    ...(options.breakdown ? BREAKDOWN : []),
  ];
  const gateways = new Map<string, { child: Child; baseUrl: string; managementUrl: string }>();
  for (const variant of variants) {
    const routesFile = `${dir}/${variant.name}-routes.json`;
    await Deno.writeTextFile(routesFile, JSON.stringify(variantRoutes(run, variant), null, 2));
    const port = freePort();
    const managementPort = freePort();
    const profile = variant === FULL_GATEWAY && options.gatewayCpuProf !== "";
    const child = spawn(cleanup, dir, variant.name, Deno.execPath(), [
      "run",
      ...SERVICE_PERMISSIONS,
      ...(profile ? ["--cpu-prof", `--cpu-prof-dir=${options.gatewayCpuProf}`] : []),
      MAIN,
      "gateway",
    ], {
      ...common,
      GATEWAY_PORT: String(port),
      GATEWAY_MANAGEMENT_PORT: String(managementPort),
      GATEWAY_ROUTES_FILE: routesFile,
      RATE_LIMIT_STORE: variant.rateLimitStore ?? "memory",
      REDIS_URL: redisUrl,
      ...(variant.exportRatio === undefined ? {} : {
        ZIPKIN_URL: zipkinUrl,
        TRACE_SAMPLE_RATIO: String(variant.exportRatio),
        LOG_SHIPPING: "elasticsearch",
        LOG_SHIPPING_ELASTICSEARCH_URL: elasticsearchUrl,
        LOG_SHIPPING_INDEX_PREFIX: `logs-bench-${run}`,
      }),
    });
    const baseUrl = `http://127.0.0.1:${port}`;
    const managementUrl = `http://127.0.0.1:${managementPort}`;
    await until(
      child,
      "route to query",
      async () =>
        (await search(`${baseUrl}${path}`, token)).status === 200 &&
        await readiness(managementUrl) === "ready",
    );
    gateways.set(variant.name, { child, baseUrl, managementUrl });
  }

  await Deno.writeTextFile(`${dir}/nginx.conf`, nginxConfig(dir, nginxPort, queryPort));
  // SIGQUIT: graceful shutdown, the workers finish and exit with the master.
  const nginx = spawn(
    cleanup,
    dir,
    "nginx",
    "nginx",
    [
      "-p",
      dir,
      "-c",
      `${dir}/nginx.conf`,
      "-e",
      `${dir}/nginx-error.log`,
    ],
    {},
    "SIGQUIT",
  );
  const viaNginx = `http://127.0.0.1:${nginxPort}${path}`;
  await until(
    nginx,
    "proxying to query",
    async () => (await search(viaNginx, token)).status === 200,
  );

  const barePort = freePort();
  const bare = spawn(cleanup, dir, "bare", Deno.execPath(), [
    "run",
    "--allow-net",
    BARE_PROXY,
    String(barePort),
    `http://127.0.0.1:${queryPort}`,
  ], {});
  const viaBare = `http://127.0.0.1:${barePort}${path}`;
  await until(bare, "proxying to query", async () => (await search(viaBare, token)).status === 200);

  const targets: { name: string; url: string; proxy?: Child; gatewayUrl?: string }[] = [
    { name: "direct", url: direct },
    { name: "nginx", url: viaNginx, proxy: nginx },
    { name: "bare", url: viaBare, proxy: bare },
    ...variants.map((variant) => {
      const { child, baseUrl, managementUrl } = gateways.get(variant.name)!;
      return {
        name: variant.name,
        url: `${baseUrl}${path}`,
        proxy: child,
        gatewayUrl: managementUrl,
      };
    }),
  ];
  write(
    `wrk -t${options.threads} -c${options.connections} -d${options.duration}s --latency ` +
      `(after ${options.warmup} s of warm-up each): GET ${path}, Authorization: Bearer <${USER}>\n`,
  );
  write(`  bare: Deno.serve + fetch pass-through, nothing else\n`);
  for (const variant of variants) write(`  ${variant.name}: ${variant.what}\n`);
  write(`load average before: ${await loadAverage()}\n`);
  write(`${row(COLUMNS.map(([title]) => title))}\n`);
  const measured = new Map<string, { result: WrkResult; cpu: CpuUse }[]>();
  for (let round = 1; round <= options.rounds; round++) {
    for (const { name, url, proxy, gatewayUrl } of targets) {
      if (round === 1) {
        await wrk(cleanup, dir, `wrk-${name}-warmup`, url, token, options, options.warmup);
      }
      const before = {
        services: await cpuSeconds(backend.pid),
        proxy: proxy === undefined ? 0 : await cpuSeconds(proxy.pid),
        machine: await machineCpuSeconds(),
      };
      const started = performance.now();
      const result = await wrk(
        cleanup,
        dir,
        `wrk-${name}-${round}`,
        url,
        token,
        options,
        options.duration,
      );
      const seconds = (performance.now() - started) / 1000;
      const machine = await machineCpuSeconds();
      const proxySeconds = proxy === undefined ? 0 : await cpuSeconds(proxy.pid) - before.proxy;
      const cpu: CpuUse = {
        services: (await cpuSeconds(backend.pid) - before.services) / seconds * 100,
        proxy: proxySeconds / seconds * 100,
        machine: (machine.busy - before.machine.busy) / seconds * 100,
        proxyMsPerRequest: result.requests === 0 ? 0 : proxySeconds * 1000 / result.requests,
      };
      measured.set(name, [...measured.get(name) ?? [], { result, cpu }]);
      write(`${format(options.rounds === 1 ? name : `${name}#${round}`, result, cpu)}\n`);
      const status = gatewayUrl === undefined ? "ready" : await readiness(gatewayUrl);
      if (status !== "ready") {
        write(
          `!!! ${name}: /ready says ${status} after the run: the rate limit did not use its ` +
            `store throughout, its numbers are INVALID !!!\n`,
        );
      }
      if (result.non2xx > 0 || result.socketErrors > 0) {
        write(
          `!!! ${name}: ${result.non2xx} non-2xx responses and ${result.socketErrors} socket ` +
            `errors: its numbers are INVALID !!!\n`,
        );
      }
    }
  }
  const results = new Map<string, WrkResult>();
  if (options.rounds > 1) write(`median of ${options.rounds} rounds (counts summed):\n`);
  for (const [name, runs] of measured) {
    const result: WrkResult = {
      requestsPerSecond: median(runs.map((run) => run.result.requestsPerSecond)),
      p50Ms: median(runs.map((run) => run.result.p50Ms)),
      p99Ms: median(runs.map((run) => run.result.p99Ms)),
      requests: runs.reduce((sum, run) => sum + run.result.requests, 0),
      non2xx: runs.reduce((sum, run) => sum + run.result.non2xx, 0),
      socketErrors: runs.reduce((sum, run) => sum + run.result.socketErrors, 0),
    };
    results.set(name, result);
    if (options.rounds > 1) {
      write(`${
        format(name, result, {
          services: median(runs.map((run) => run.cpu.services)),
          proxy: median(runs.map((run) => run.cpu.proxy)),
          machine: median(runs.map((run) => run.cpu.machine)),
          proxyMsPerRequest: median(runs.map((run) => run.cpu.proxyMsPerRequest)),
        })
      }\n`);
    }
  }
  const d = results.get("direct")!;
  const n = results.get("nginx")!;
  const b = results.get("bare")!;
  const g = results.get("gateway")!;
  if ([d, n, b, g].some((result) => result.non2xx + result.socketErrors > 0)) {
    write("!!! non-2xx responses or socket errors above: the line below is INVALID !!!\n");
  }
  write(`load average after: ${await loadAverage()}\n`);
  const cpuPerRequest = (name: string) =>
    median(measured.get(name)!.map(({ cpu }) => cpu.proxyMsPerRequest));
  write(
    `gateway/direct: ${(g.requestsPerSecond / d.requestsPerSecond).toFixed(2)}; gateway/nginx: ${
      (g.requestsPerSecond / n.requestsPerSecond).toFixed(2)
    }; gateway/bare: ${(g.requestsPerSecond / b.requestsPerSecond).toFixed(2)}; added p50: ${
      (g.p50Ms - d.p50Ms).toFixed(2)
    } ms; added p99: ${(g.p99Ms - d.p99Ms).toFixed(2)} ms; cpu/request: gateway ${
      cpuPerRequest("gateway").toFixed(3)
    } ms, bare ${cpuPerRequest("bare").toFixed(3)} ms (${
      (cpuPerRequest("gateway") / cpuPerRequest("bare")).toFixed(2)
    }x)\n`,
  );
  if (options.cost) {
    const costs = EXPORTING.map((variant) => {
      const on = results.get(variant.name)!;
      return `${variant.exportRatio! * 100} % sampling: throughput ${
        signedPercent(on.requestsPerSecond / g.requestsPerSecond - 1)
      }, p99 ${signedPercent(on.p99Ms / g.p99Ms - 1)}, cpu/request ${
        signedPercent(cpuPerRequest(variant.name) / cpuPerRequest("gateway") - 1)
      }`;
    });
    write(`export+shipping cost (against gateway, both off): ${costs.join("; ")}\n`);
  }
}

function signedPercent(fraction: number): string {
  const percent = fraction * 100;
  return `${percent >= 0 ? "+" : ""}${percent.toFixed(1)} %`;
}

/** The 1, 5 and 15 minute load averages of the machine. */
async function loadAverage(): Promise<string> {
  return (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
}

/** Fails, naming the command that starts `engine`, unless `url` answers 2xx. */
async function checkHttp(name: string, url: string, engine: string): Promise<void> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
    await response.body?.cancel();
    if (!response.ok) throw new Error(`it answered ${response.status}`);
  } catch (error) {
    throw new Error(
      `${name} is not usable at ${url} (needed by --cost=on): ${
        error instanceof Error ? error.message : error
      }; start it with: deno task engines up ${engine} (or pass --cost=off)`,
    );
  }
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    write(USAGE);
    Deno.exit(0);
  }
  let options: Options;
  try {
    options = parseOptions(Deno.args);
  } catch (error) {
    write(`${error instanceof Error ? error.message : error}\n${USAGE}`);
    Deno.exit(2);
  }
  const cleanup = new Cleanup();
  const dir = await Deno.makeTempDir({ prefix: "bench-gateway-" });
  cleanup.add("the temporary directory", () => Deno.remove(dir, { recursive: true }));
  let interrupted = false;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      interrupted = true;
      write(`\n${signal}: stopping what the benchmark started\n`);
      void cleanup.run().then(() => Deno.exit(130));
    });
  }
  let code = 0;
  try {
    await aptInstall("bench", ["nginx", "wrk"]);
    await bench(options, cleanup, dir);
  } catch (error) {
    // After a signal, the failures are those of the processes being stopped.
    if (!interrupted) write(`${error instanceof Error ? error.message : String(error)}\n`);
    code = 1;
  } finally {
    await cleanup.run();
  }
  Deno.exit(code);
}
