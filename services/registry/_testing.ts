/** Test helper of the registry service: a real registry on loopback. */
import { type HttpServer, serveApp } from "../../shared/http/serve.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { loadConfig } from "../config.ts";
import { createRegistryService } from "./main.ts";

export interface TestRegistry {
  readonly service: Service;
  /** Its metrics tell evictions from deregistrations. */
  readonly context: ServiceContext;
  readonly server: HttpServer;
  readonly url: string;
  readonly port: number;
  /** Stops the service, then its server; safe to call twice. */
  stop(): Promise<void>;
}

/**
 * A registry service on 127.0.0.1; `port` 0 (the default) picks a free one.
 * `ttlMs` defaults to 3000, as REGISTRY_TTL_MS does.
 */
export async function startTestRegistry(
  options: { port?: number; ttlMs?: number; pingMs?: number } = {},
): Promise<TestRegistry> {
  const context = testContext("registry");
  const service = createRegistryService({
    config: loadConfig({ REGISTRY_TTL_MS: String(options.ttlMs ?? 3000) }),
    context,
    ...(options.pingMs === undefined ? {} : { pingMs: options.pingMs }),
  });
  await service.start();
  const server = serveApp(service.app, { hostname: "127.0.0.1", port: options.port ?? 0 });
  let stopped: Promise<void> | undefined;
  return {
    service,
    context,
    server,
    url: server.url,
    port: server.port,
    stop: () =>
      stopped ??= (async () => {
        await service.stop();
        await server.shutdown();
      })(),
  };
}
