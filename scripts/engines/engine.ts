/**
 * The mechanism behind `deno task engines`: every real engine runs on
 * loopback from the project's own folders. Downloads are cached in
 * `.data/cache/`, data and logs live in `.data/engines/<name>/`, and each
 * started process is remembered by pid so `down` stops exactly what `up`
 * started.
 */

export const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
export const CACHE_DIR = `${ROOT}/.data/cache`;
export const ENGINES_DIR = `${ROOT}/.data/engines`;

/** A process as the engine wants it run, in the foreground. */
export interface EngineProcess {
  readonly command: string;
  readonly args: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** Run as this system user (engines that refuse to run as root). */
  readonly user?: string;
}

export interface Engine {
  readonly name: string;
  /** The loopback port the engine answers on. */
  readonly port: number;
  /** How long `up` waits for the first healthy answer. */
  readonly startTimeoutMs: number;
  /**
   * The signal that stops the engine promptly and cleanly.
   * @default "SIGTERM"
   */
  readonly stopSignal?: Deno.Signal;
  /**
   * Installs or downloads what the engine needs, into the cache; idempotent
   * and quick when everything is there already.
   */
  provision(): Promise<void>;
  /** Prepares the data folder (idempotent) and says how to run the engine. */
  prepare(dataDir: string): Promise<EngineProcess>;
  /** Resolves when the engine answers a real request; rejects with the reason. */
  health(): Promise<void>;
}

export class EngineError extends Error {
  readonly code = "engine";
  constructor(readonly engine: string, message: string, options?: ErrorOptions) {
    super(`${engine}: ${message}`, options);
    this.name = "EngineError";
  }
}

export function dataDir(engine: string): string {
  return `${ENGINES_DIR}/${engine}`;
}

export function logFile(engine: string): string {
  return `${dataDir(engine)}/engine.log`;
}

function pidFile(engine: string): string {
  return `${dataDir(engine)}/engine.pid`;
}

export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Runs a command to completion; throws with its output when it fails. */
export async function run(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: Record<string, string>; what: string; engine: string },
): Promise<string> {
  const output = await new Deno.Command(command, {
    args: [...args],
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    ...(options.env === undefined ? {} : { env: options.env }),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output().catch((cause) => {
    throw new EngineError(options.engine, `cannot ${options.what}: ${command} did not run`, {
      cause,
    });
  });
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (!output.success) {
    throw new EngineError(
      options.engine,
      `cannot ${options.what}: ${command} exited with ${output.code}\n${text.slice(-4000)}`,
    );
  }
  return text;
}

/**
 * Installs Debian packages that are missing (needs root, as CI and dev
 * machines have); resolves to the ones it installed.
 */
export async function aptInstall(engine: string, packages: readonly string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const name of packages) {
    const status = await new Deno.Command("dpkg-query", {
      args: ["-W", "-f=${Status}", name],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!new TextDecoder().decode(status.stdout).includes("install ok installed")) {
      missing.push(name);
    }
  }
  if (missing.length === 0) return missing;
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  await run("apt-get", ["update", "-qq"], { engine, env, what: "update Debian's package lists" });
  await run("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing], {
    engine,
    env,
    what: `install ${missing.join(", ")}`,
  });
  return missing;
}

/** The system user engines that refuse root run as; created when missing. */
export const ENGINE_USER = "twitterapi-engines";

export async function ensureEngineUser(engine: string): Promise<void> {
  const known = await new Deno.Command("id", {
    args: ["-u", ENGINE_USER],
    stdout: "null",
    stderr: "null",
  })
    .output();
  if (known.success) return;
  await run("useradd", [
    "--system",
    "--no-create-home",
    "--shell",
    "/usr/sbin/nologin",
    ENGINE_USER,
  ], {
    engine,
    what: `create the system user ${ENGINE_USER}`,
  });
}

/** Gives `user` the folder (recursively), so an engine running as it can write there. */
export async function chown(engine: string, user: string, path: string): Promise<void> {
  await run("chown", ["-R", `${user}:`, path], { engine, what: `give ${path} to ${user}` });
}

/**
 * Fetches a Maven artifact with Maven (which knows the registry) into the
 * cache: `dependency:copy` for a file, `dependency:unpack` for an archive.
 * Returns the target path; skips the work when it is already there.
 */
export async function mavenArtifact(
  engine: string,
  artifact: string,
  options: { unpack: boolean; target: string },
): Promise<string> {
  if (await exists(options.target)) return options.target;
  const staging = `${options.target}.partial`;
  await Deno.remove(staging, { recursive: true }).catch(() => {});
  await Deno.mkdir(staging, { recursive: true });
  await run("mvn", [
    "-q",
    "-B",
    `org.apache.maven.plugins:maven-dependency-plugin:3.8.1:${options.unpack ? "unpack" : "copy"}`,
    `-Dartifact=${artifact}`,
    `-DoutputDirectory=${staging}`,
    // Without it, the plugin's markers (kept under the working folder) make a
    // second unpack of the same artifact a silent no-op.
    "-Dmdep.overWriteReleases=true",
  ], { engine, cwd: staging, what: `download ${artifact} with Maven` });
  await Deno.rename(staging, options.target);
  return options.target;
}

/** The process's start time since boot, in clock ticks (field 22 of stat); kept across exec. */
async function startTime(pid: number): Promise<string | undefined> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
}

/**
 * The pid of the engine's process if it is running and is the one `up`
 * started: the pid file holds its pid and start time, which no recycled pid
 * shares and which, unlike its command line and environment, reads the same
 * while it execs from launcher to engine and changes user.
 */
export async function runningPid(engine: string): Promise<number | undefined> {
  const recorded = await Deno.readTextFile(pidFile(engine)).catch(() => "");
  const [pid, started] = recorded.trim().split(" ");
  if (pid === undefined || started === undefined) return undefined;
  if (await isZombie(Number(pid))) return undefined;
  return await startTime(Number(pid)) === started ? Number(pid) : undefined;
}

/**
 * Starts the engine detached from this process (its own session), with
 * output appended to its log file, and records its pid.
 */
export async function start(engine: string, process: EngineProcess): Promise<number> {
  const dir = dataDir(engine);
  await Deno.mkdir(dir, { recursive: true });
  const log = await Deno.open(logFile(engine), { create: true, append: true });
  log.close();
  const user = process.user === undefined
    ? []
    : ["setpriv", `--reuid=${process.user}`, `--regid=${process.user}`, "--init-groups"];
  // setsid gives the engine its own session, so it outlives `deno task engines`
  // and a terminal's Ctrl-C; exec keeps the recorded pid the engine's own.
  const script = 'log="$1"; shift; exec "$@" >>"$log" 2>&1 </dev/null';
  const child = new Deno.Command("setsid", {
    args: ["sh", "-c", script, "sh", logFile(engine), ...user, process.command, ...process.args],
    cwd: process.cwd ?? dir,
    env: { ...process.env },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  child.unref();
  await Deno.writeTextFile(pidFile(engine), `${child.pid} ${await startTime(child.pid)}`);
  return child.pid;
}

/** Stops the engine `up` started: its stop signal, then SIGKILL after `graceMs`. */
export async function stop(engine: Engine, graceMs = 20_000): Promise<boolean> {
  const pid = await runningPid(engine.name);
  await Deno.remove(pidFile(engine.name)).catch(() => {});
  if (pid === undefined) return false;
  Deno.kill(pid, engine.stopSignal ?? "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!(await exists(`/proc/${pid}`)) || await isZombie(pid)) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  Deno.kill(pid, "SIGKILL");
  return true;
}

async function isZombie(pid: number): Promise<boolean> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
  return / Z /.test(stat.slice(stat.lastIndexOf(")")));
}

/** Polls `engine.health()` until it answers or the start timeout passes. */
export async function waitHealthy(engine: Engine): Promise<void> {
  const deadline = Date.now() + engine.startTimeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    if (await runningPid(engine.name) === undefined) {
      throw new EngineError(
        engine.name,
        `the process exited during start-up; see ${logFile(engine.name)}`,
      );
    }
    try {
      await engine.health();
      return;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new EngineError(
    engine.name,
    `no healthy answer on 127.0.0.1:${engine.port} within ${engine.startTimeoutMs} ms (${
      last instanceof Error ? last.message : String(last)
    }); see ${logFile(engine.name)}`,
  );
}

/** A health check over HTTP: resolves on a 2xx answer. */
export async function httpHealth(url: string, init?: RequestInit): Promise<void> {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(2000) });
  await response.body?.cancel();
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
}
