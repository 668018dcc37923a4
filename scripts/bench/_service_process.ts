/** One service of services/main.ts in its own process, as deployed, for the benchmarks. */

import { SERVICE_PERMISSIONS } from "../service_command.ts";

const MAIN = new URL("../../services/main.ts", import.meta.url).pathname;

export interface ServiceProcess {
  /** Ends the process with SIGTERM (a graceful stop) and waits for it. */
  stop(): Promise<void>;
  /** Ends the process with SIGKILL (a crash: nothing is closed) and waits for it. */
  kill(): Promise<void>;
}

/** Starts `name` with `env` and resolves once its log matches `ready`. */
export async function spawnService(
  name: string,
  env: Record<string, string>,
  ready: RegExp,
): Promise<ServiceProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...SERVICE_PERMISSIONS, MAIN, name],
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  while (!ready.test(buffer)) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`The ${name} process ended before it was ready`);
    buffer = (buffer + value).slice(-10_000);
  }
  // Keep draining the log so the process never blocks on a full pipe.
  void (async () => {
    while (!(await lines.read().catch(() => ({ done: true }))).done);
  })();
  const end = async (signal: Deno.Signal) => {
    try {
      child.kill(signal);
    } catch {
      // Ended already.
    }
    await child.status;
  };
  return { stop: () => end("SIGTERM"), kill: () => end("SIGKILL") };
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** The machine's load averages (1, 5, 15 minutes), as /proc/loadavg has them. */
export function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "unknown";
  }
}
