/**
 * Zipkin from its executable jar on Maven Central, with in-memory storage, on
 * loopback only: the trace collector and UI. Zipkin 3 serves through
 * Armeria, so the listening address is Armeria's port list, given whole (a
 * command-line list replaces the packaged one rather than merging with it).
 * Health is Zipkin's own `GET /health` reporting `UP`.
 */
import { CACHE_DIR, type Engine, type EngineProcess, mavenArtifact } from "./engine.ts";
import { VERSIONS } from "./versions.ts";

const PORT = 9411;
const JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java";
const JAR = `zipkin-server-${VERSIONS.zipkin}-exec.jar`;
const TARGET = `${CACHE_DIR}/zipkin-${VERSIONS.zipkin}`;

export const zipkin: Engine = {
  name: "zipkin",
  port: PORT,
  startTimeoutMs: 90_000,

  async provision(): Promise<void> {
    await mavenArtifact("zipkin", `io.zipkin:zipkin-server:${VERSIONS.zipkin}:jar:exec`, {
      unpack: false,
      target: TARGET,
    });
  },

  async prepare(dataDir: string): Promise<EngineProcess> {
    await Deno.mkdir(dataDir, { recursive: true });
    return {
      command: JAVA,
      args: [
        "-Xms64m",
        "-Xmx256m",
        "-XX:+ExitOnOutOfMemoryError",
        // Names the data folder on the command line, so `runningPid` knows the process.
        `-Djava.io.tmpdir=${dataDir}`,
        "-jar",
        `${TARGET}/${JAR}`,
        `--armeria.ports[0].ip=127.0.0.1`,
        `--armeria.ports[0].port=${PORT}`,
        "--armeria.ports[0].protocols[0]=http",
      ],
      env: {
        STORAGE_TYPE: "mem",
        // Zipkin's default of 500,000 spans does not fit a 256 MB heap.
        MEM_MAX_SPANS: "100000",
        COLLECTOR_SCRIBE_ENABLED: "false",
      },
    };
  },

  async health(): Promise<void> {
    const url = `http://127.0.0.1:${PORT}/health`;
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    const body = await response.text();
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
    const status = (JSON.parse(body) as { status?: unknown }).status;
    if (status !== "UP") throw new Error(`${url} reports status ${String(status)}`);
  },
};
