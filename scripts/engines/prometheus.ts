/**
 * Prometheus from Debian's `prometheus` package, on loopback, with its
 * configuration and time-series data in the project's data folder: it
 * scrapes every instance the registry knows (see prometheus_config.ts).
 *
 * It reads the registries the services register with (`REGISTRY_URLS`) with
 * a client-credentials token of the client `PROMETHEUS_CLIENT_ID` (default
 * `prometheus`, secret `PROMETHEUS_CLIENT_SECRET`, the realm file's
 * development secret) from `OIDC_ISSUER`: the services' own settings, read
 * from the environment when the engine starts.
 *
 * Installing the package enables Debian's own `prometheus.service` (on every
 * interface, port 9090); where systemd runs, the one this provisioning just
 * installed is stopped and disabled, and one that was there before is
 * reported rather than touched. Health is `/-/ready`.
 */
import { loadConfig } from "../../services/config.ts";
import { aptInstall, type Engine, EngineError, type EngineProcess, run } from "./engine.ts";
import {
  DEV_CLIENT_SECRET,
  prometheusConfig,
  type PrometheusConfigOptions,
  tokenUrl,
} from "./prometheus_config.ts";

const PORT = 9090;
export const PROMETHEUS_BIN = "/usr/bin/prometheus";

/** Scrape targets and credentials from the services' settings in `env`. */
export function prometheusOptions(
  env: Readonly<Record<string, string | undefined>>,
): PrometheusConfigOptions {
  const config = loadConfig(env);
  return {
    registryUrls: config.discovery.registryUrls,
    oauth2: {
      clientId: env.PROMETHEUS_CLIENT_ID || "prometheus",
      clientSecret: env.PROMETHEUS_CLIENT_SECRET || DEV_CLIENT_SECRET,
      tokenUrl: tokenUrl(config.auth.oidcIssuer),
    },
  };
}

/**
 * Writes `prometheus.yml` into `dataDir` and says how to run Prometheus on
 * `listen` with its data there; the engine and tests' private instances
 * run the same way.
 */
export async function preparePrometheus(
  dataDir: string,
  options: { config: string; listen: string },
): Promise<EngineProcess> {
  await Deno.mkdir(`${dataDir}/tsdb`, { recursive: true });
  // The real path: a data folder reached through a symbolic link (a worktree's
  // .data) keeps working for a running Prometheus when the link goes away.
  const dir = await Deno.realPath(dataDir);
  const configFile = `${dir}/prometheus.yml`;
  await Deno.writeTextFile(configFile, options.config);
  return {
    command: PROMETHEUS_BIN,
    args: [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${dir}/tsdb`,
      "--storage.tsdb.retention.time=2d",
      `--web.listen-address=${options.listen}`,
    ],
  };
}

async function systemdRuns(): Promise<boolean> {
  try {
    return (await Deno.stat("/run/systemd/system")).isDirectory;
  } catch {
    return false;
  }
}

async function debianServiceActive(): Promise<boolean> {
  const status = await new Deno.Command("systemctl", {
    args: ["is-active", "--quiet", "prometheus.service"],
    stdout: "null",
    stderr: "null",
  }).output().catch(() => undefined);
  return status?.success ?? false;
}

export const prometheus: Engine = {
  name: "prometheus",
  port: PORT,
  startTimeoutMs: 30_000,

  async provision(): Promise<void> {
    const installed = await aptInstall("prometheus", ["prometheus"]);
    if (!(await systemdRuns()) || !(await debianServiceActive())) return;
    if (!installed.includes("prometheus")) {
      throw new EngineError(
        "prometheus",
        `Debian's prometheus.service is running (port ${PORT}): stop it with \`systemctl disable --now prometheus\``,
      );
    }
    await run("systemctl", ["disable", "--now", "prometheus.service"], {
      engine: "prometheus",
      what: "stop Debian's prometheus.service, which the package started",
    });
  },

  prepare(dataDir: string): Promise<EngineProcess> {
    return preparePrometheus(dataDir, {
      config: prometheusConfig(prometheusOptions(Deno.env.toObject())),
      listen: `127.0.0.1:${PORT}`,
    });
  },

  async health(): Promise<void> {
    const url = `http://127.0.0.1:${PORT}/-/ready`;
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await response.body?.cancel();
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  },
};
