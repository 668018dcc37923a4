/**
 * How the services' process is run: the one source of its Deno permissions
 * and V8 flags, for `deno task dev` (scripts/dev.ts), `deno task start`
 * (scripts/start.ts), `deno task compile` (scripts/compile.ts), the
 * benchmarks and the tests.
 */

/** services/main.ts, the one entry of every service. */
export const SERVICES_MAIN = new URL("../services/main.ts", import.meta.url).pathname;

/** Where `deno task compile` writes the single binary. */
export const BINARY = "dist/twitterapi";

export const SERVICE_PERMISSIONS = [
  "--allow-net",
  "--allow-env",
  "--allow-read",
  // What a start keeps under .data/ (the settings' default folders): the last
  // good configuration each service read from the config service
  // (CONFIG_CACHE_DIR), the embedded PGlite's cluster template
  // (PGLITE_TEMPLATE_FILE) and identity's signing keys
  // (IDENTITY_SIGNING_KEYS_FILE).
  "--allow-write=.data/config-cache,.data/pglite,.data/identity",
  "--allow-sys=hostname,osRelease,homedir",
] as const;

/**
 * V8 flags of the services' process. The embedded PGlite's WebAssembly is
 * compiled by V8's baseline compiler only: its optimised tier would keep a
 * second copy of PostgreSQL's compiled code (~70 MB measured) for speed a
 * development database does not need. No other code of the services is
 * WebAssembly. And a young generation of 2 MB semi-spaces per isolate (the
 * main thread and PGlite's worker) instead of V8's 16 MB: more frequent,
 * shorter scavenges, ~55 MB less resident (measured with bench:startup:
 * 363 -> 305 MB after 20 s).
 */
export const SERVICE_V8_FLAGS = ["--v8-flags=--liftoff-only,--max-semi-space-size=2"] as const;

/** The files `deno compile` embeds beside the code: Avro schemas, the config repository, the console. */
const EMBEDDED_FILES = [
  "shared/events/schemas",
  "services/config/repository",
  "services/console/static",
] as const;

/**
 * `--env-file=<file>` when the file exists, else nothing: the settings may
 * come from a `.env` file, and without one Deno's `--env-file` would print a
 * warning on every start.
 */
export function envFileFlags(file = ".env"): string[] {
  try {
    return Deno.statSync(file).isFile ? [`--env-file=${file}`] : [];
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

export interface RunOptions {
  /**
   * Read a `.env` file of the working folder, when there is one.
   * @default true
   */
  readonly envFile?: boolean;
}

/** The `deno run` arguments that run `services/main.ts` with `serviceArgs`. */
export function serviceRunArgs(
  serviceArgs: readonly string[],
  options: RunOptions = {},
): string[] {
  const { envFile = true } = options;
  return [
    "run",
    ...SERVICE_PERMISSIONS,
    ...SERVICE_V8_FLAGS,
    ...(envFile ? envFileFlags() : []),
    SERVICES_MAIN,
    ...serviceArgs,
  ];
}

/**
 * The `deno compile` arguments that build the single binary with the same
 * permissions and V8 flags; `extra` (a `--target`, another `--output`) goes
 * before the entry.
 */
export function compileArgs(extra: readonly string[] = []): string[] {
  return [
    "compile",
    ...SERVICE_PERMISSIONS,
    ...SERVICE_V8_FLAGS,
    ...EMBEDDED_FILES.flatMap((path) => ["--include", path]),
    "--output",
    BINARY,
    ...extra,
    SERVICES_MAIN,
  ];
}

/**
 * Runs `deno <args>` with this process's terminal and returns its exit code.
 * Ctrl-C reaches the child through the terminal's process group; a SIGTERM
 * sent to this launcher alone is passed on.
 */
export async function runDeno(
  args: readonly string[],
  env?: Readonly<Record<string, string>>,
): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [...args],
    ...(env === undefined ? {} : { env: { ...env } }),
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const ignore = () => {};
  const passOn = () => child.kill("SIGTERM");
  Deno.addSignalListener("SIGINT", ignore);
  Deno.addSignalListener("SIGTERM", passOn);
  try {
    return (await child.status).code;
  } finally {
    Deno.removeSignalListener("SIGINT", ignore);
    Deno.removeSignalListener("SIGTERM", passOn);
  }
}
