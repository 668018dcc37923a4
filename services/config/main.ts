/**
 * The config service (seed: Spring Cloud Config server): serves a folder of
 * YAML and JSON files per application and profile, decrypts `{cipher}`
 * secrets for the callers allowed to read them, and pushes a change of the
 * folder to watchers at once.
 */
import type { JwtVerifier } from "../../shared/auth/jwt_verifier.ts";
import { createServiceApp } from "../../shared/http/service_app.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { AppConfig } from "../config.ts";
import { addConfigRoutes } from "./app.ts";
import { parseKeyItems, SecretCipher } from "./cipher.ts";
import { watchFolder } from "./repository.ts";

export interface ConfigServiceDependencies {
  readonly config: AppConfig;
  readonly context: ServiceContext;
  /** Verifies tokens for the audience `config`. */
  readonly verifier: JwtVerifier;
  /** Comment interval of watch streams. @default 15_000 */
  readonly pingMs?: number;
}

/** The repository folder: `CONFIG_REPOSITORY`, else the one beside this file. */
export function repositoryFolder(config: AppConfig): string {
  return config.configServer.repository === ""
    ? new URL("./repository", import.meta.url).pathname
    : config.configServer.repository;
}

export async function createConfigService(deps: ConfigServiceDependencies): Promise<Service> {
  const { config, context } = deps;
  const { logger, metrics } = context;
  const folder = repositoryFolder(config);
  const stat = await Deno.stat(folder).catch(() => undefined);
  if (stat?.isDirectory !== true) {
    throw new Error(`Cannot serve configuration: the repository ${folder} is not a folder`);
  }
  const cipher = await SecretCipher.create({
    keys: parseKeyItems(config.configServer.encryptKeys),
    activeKeyId: config.configServer.encryptActiveKey === ""
      ? parseKeyItems(config.configServer.encryptKeys)[0]!.id
      : config.configServer.encryptActiveKey,
  });
  const changes = metrics.counter(
    "config_repository_changes_total",
    "Changes of the repository folder seen (each one pushed to the watchers).",
  );
  const listeners = new Set<() => void>();
  metrics.gauge("config_watchers", "Open watch streams.", () => [
    { labels: {}, value: listeners.size },
  ]);
  const closing = new AbortController();
  const app = createServiceApp({
    context,
    bodyLimitBytes: config.process.bodyLimitBytes,
    readiness: [{
      name: "repository",
      async check() {
        const found = await Deno.stat(folder);
        if (!found.isDirectory) throw new Error(`${folder} is not a folder`);
      },
    }],
  });
  addConfigRoutes(app, {
    folder,
    cipher,
    verifier: deps.verifier,
    logger,
    closing: closing.signal,
    onRepositoryChange: (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    ...(deps.pingMs === undefined ? {} : { pingMs: deps.pingMs }),
  });
  let unwatch = () => {};

  return {
    name: context.name,
    app,
    start() {
      unwatch = watchFolder(folder, () => {
        changes.inc();
        logger.info("Repository {folder} changed; telling {watchers} watchers", {
          folder,
          watchers: listeners.size,
        });
        for (const listener of listeners) listener();
      }, {
        onError: (error) => logger.error("Cannot watch {folder}", { folder, error }),
      });
      logger.info("Serving configuration from {folder}, keys {keys} (active {active})", {
        folder,
        keys: cipher.keyIds,
        active: cipher.activeKeyId,
      });
      return Promise.resolve();
    },
    stop() {
      closing.abort();
      unwatch();
      return Promise.resolve();
    },
  };
}
