/**
 * The console: the web UI an engineer opens first (seed: its web client).
 * Server-rendered pages; sign-in through the issuer's code flow with PKCE;
 * calls the system through the gateway with the user's own token.
 */
import type { TokenSource } from "../../shared/auth/client_credentials.ts";
import type { ServiceDiscovery } from "../../shared/discovery/service_discovery.ts";
import { BalancedClient } from "../../shared/http/balanced_client.ts";
import { createServiceApp } from "../../shared/http/service_app.ts";
import type { LogReader } from "../../shared/log/log_reader.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { TraceReader } from "../../shared/trace/trace_reader.ts";
import type { AppConfig } from "../config.ts";
import { addConsoleRoutes } from "./app.ts";
import { OidcClient } from "./oidc.ts";
import { SessionStore } from "./sessions.ts";
import { SystemView } from "./system.ts";

export interface ConsoleDeps {
  readonly config: AppConfig;
  readonly context: ServiceContext;
  /** Finds the gateway: the console's own registry client. */
  readonly discovery: ServiceDiscovery;
  /** The console's own client credentials (console-service), for reading the registry. */
  readonly tokens: TokenSource;
  readonly traces: TraceReader;
  readonly logs: LogReader;
}

const STATIC = new URL("./static/", import.meta.url);

export async function createConsoleService(deps: ConsoleDeps): Promise<Service> {
  const { config, context } = deps;
  const settings = config.console;
  const [script, style] = await Promise.all([
    Deno.readTextFile(new URL("console.js", STATIC)),
    Deno.readTextFile(new URL("console.css", STATIC)),
  ]);
  const app = createServiceApp({
    context,
    description: "The console: server-rendered pages for people (search, words, system, " +
      "traces, permissions, live tweets), signed in through the issuer; its forms carry a " +
      "CSRF token and every call into the system goes through the gateway as the user.",
    bodyLimitBytes: config.process.bodyLimitBytes,
    quietRoutes: ["/system/table", "/words/fragment", "/static/console.js", "/static/console.css"],
  });
  const client = new BalancedClient({
    discovery: deps.discovery,
    metrics: context.metrics,
    logger: context.logger,
    tracer: context.tracer,
    timeoutMs: 10_000,
  });
  addConsoleRoutes(app, {
    sessions: new SessionStore(settings.sessionIdleMs, settings.maxSessions),
    oidc: new OidcClient({ issuer: config.auth.oidcIssuer, clientId: settings.browserClientId }),
    gateway: (path, init) => client.fetch("gateway", path, init),
    system: new SystemView({ registryUrls: config.discovery.registryUrls, tokens: deps.tokens }),
    traces: deps.traces,
    logs: deps.logs,
    logger: context.logger,
    publicUrl: settings.publicUrl === "" ? undefined : settings.publicUrl,
    wordWindows: config.wordcount.windows,
    script,
    style,
  });
  return {
    name: context.name,
    app,
    start: () => Promise.resolve(),
    stop: () => Promise.resolve(),
  };
}
