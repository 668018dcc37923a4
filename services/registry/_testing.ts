/** Test helper of the registry service: a real registry on loopback. */
import { type HttpServer, serveApp } from "../../shared/http/serve.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { createTestIssuer, type TestIssuer } from "../../shared/testing/test_issuer.ts";
import { loadConfig } from "../config.ts";
import { createRegistryService } from "./main.ts";

export interface TestRegistry {
  readonly service: Service;
  /** Its metrics tell evictions from deregistrations. */
  readonly context: ServiceContext;
  readonly server: HttpServer;
  readonly url: string;
  readonly port: number;
  /** The issuer whose tokens (audience `registry`) the registry accepts. */
  readonly issuer: TestIssuer;
  /** Stops the service, then its server; safe to call twice. */
  stop(): Promise<void>;
}

/**
 * A registry service on 127.0.0.1; `port` 0 (the default) picks a free one.
 * `ttlMs` defaults to 3000, as REGISTRY_TTL_MS does. It trusts the tokens of
 * `issuer` (a new test issuer by default; give the same one to a registry
 * restarted on the same port).
 */
export async function startTestRegistry(
  options: { port?: number; ttlMs?: number; pingMs?: number; issuer?: TestIssuer } = {},
): Promise<TestRegistry> {
  const context = testContext("registry");
  const issuer = options.issuer ?? await createTestIssuer();
  const service = createRegistryService({
    config: loadConfig({ REGISTRY_TTL_MS: String(options.ttlMs ?? 3000) }),
    context,
    verifier: issuer.verifier("registry"),
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
    issuer,
    stop: () =>
      stopped ??= (async () => {
        await service.stop();
        await server.shutdown();
      })(),
  };
}
