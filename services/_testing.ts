/** `services/main.ts` as a child process for tests: started with settings, its URLs read from its log. */
import { waitFor } from "../shared/testing/wait.ts";
import { selectServices } from "./main.ts";

const MAIN = new URL("./main.ts", import.meta.url).pathname;
const PERMISSIONS = [
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--allow-sys=hostname,osRelease,homedir",
];

/** A port that was free a moment ago, for a service others must find before it runs. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

export interface MainProcess {
  /** Each service's base URL, by name. */
  readonly urls: Readonly<Record<string, string>>;
  /** Where each service answers `/ready` and `/metrics`: its management URL, else its base URL. */
  readonly managementUrls: Readonly<Record<string, string>>;
  /**
   * How the process ended, when it ended before `stop`: its exit code or
   * signal and the end of its stderr (an uncaught error's stack); undefined
   * while it runs.
   */
  exited(): string | undefined;
  /** Stops the process with SIGTERM and waits for it. */
  stop(): Promise<void>;
}

/** How long a stopped child may drain before it is killed. */
const STOP_DEADLINE_MS = 30_000;

/**
 * Runs `main.ts <services...>` on free ports with `env` on top, and resolves
 * once every service answers `/ready` with 200. A child that is not ready
 * within `deadlineMs`, or that does not exit within `STOP_DEADLINE_MS` of
 * `stop`, is killed; one that is ready runs as long as the test needs it.
 */
export async function startMain(
  services: readonly string[],
  env: Record<string, string>,
  deadlineMs = 120_000,
): Promise<MainProcess> {
  const registryPort = freePort();
  const identityPort = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN, ...services],
    env: {
      NO_COLOR: "1",
      REGISTRY_PORT: String(registryPort),
      REGISTRY_URLS: `http://127.0.0.1:${registryPort}`,
      IDENTITY_PORT: String(identityPort),
      OIDC_ISSUER: `http://127.0.0.1:${identityPort}/realms/twitterapi`,
      GATEWAY_PORT: "0",
      GATEWAY_MANAGEMENT_PORT: "0",
      STREAM_PORT: "0",
      INDEXER_PORT: "0",
      WORDCOUNT_PORT: "0",
      QUERY_PORT: "0",
      ANALYTICS_PORT: "0",
      CONFIG_PORT: "0",
      CONSOLE_PORT: "0",
      ...env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const kill = () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
  };
  let watchdog = setTimeout(kill, deadlineMs);
  const stderr = new Response(child.stderr).text();
  let stopping = false;
  let exit: string | undefined;
  void Promise.all([child.status, stderr]).then(([status, text]) => {
    if (stopping) return;
    const how = status.signal === null ? `code ${status.code}` : `signal ${status.signal}`;
    exit = `main.ts exited with ${how}; the end of its stderr:\n${text.slice(-4000)}`;
  });
  const urls: Record<string, string> = {};
  const managementUrls: Record<string, string> = {};
  const expected = selectServices(services)?.length ?? 0;
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const stop = async () => {
    stopping = true;
    clearTimeout(watchdog);
    watchdog = setTimeout(kill, STOP_DEADLINE_MS);
    try {
      child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    await child.status;
    clearTimeout(watchdog);
    await stderr;
    await lines.cancel().catch(() => {});
  };
  try {
    while (Object.keys(urls).length < expected) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`main.ts exited before listening: ${await stderr}`);
      const parts = (buffer + value).split("\n");
      buffer = parts.pop()!;
      for (const part of parts) {
        const message = String(JSON.parse(part).message);
        const match = /^(\w+) listening on (http:\/\/\S+)$/.exec(message);
        if (match) urls[match[1]!] = match[2]!;
        const management = /^(\w+) management listening on (http:\/\/\S+)$/.exec(message);
        if (management) managementUrls[management[1]!] = management[2]!;
      }
    }
    // The rest of the output is drained, so the child never blocks on a full pipe.
    void (async () => {
      while (!(await lines.read().catch(() => ({ done: true }))).done) { /* drain */ }
    })();
    // The gateway answers /ready on its management port only.
    for (const url of Object.values({ ...urls, ...managementUrls })) {
      await waitFor(`${url}/ready`, async () => {
        const ready = await fetch(`${url}/ready`);
        await ready.body?.cancel();
        return ready.status === 200;
      }, deadlineMs);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  // Started: the child now runs until the test stops it (a deadline here killed it mid-test).
  clearTimeout(watchdog);
  return { urls, managementUrls: { ...urls, ...managementUrls }, exited: () => exit, stop };
}
