/**
 * The one entry point: `main.ts <service...>|all` runs any set of services in
 * one process. It is also what `deno compile` turns into the single binary.
 */
import type { RefreshableConfig } from "../shared/config/refreshable_config.ts";
import { ConfigServiceError, loadRemoteConfig } from "../shared/config/remote_config.ts";
import { ConfigError, listSettings } from "../shared/config/setting.ts";
import { serveApp } from "../shared/http/serve.ts";
import {
  configureLogging,
  type LogFormat,
  serviceLogger,
  setServiceLogLevel,
  shutdownLogging,
} from "../shared/log/log.ts";
import { MetricsRegistry } from "../shared/metrics/metrics.ts";
import type { Service, ServiceContext } from "../shared/service/service.ts";
import { configureTracing, serviceTracer, shutdownTracing } from "../shared/trace/tracing.ts";
import { createAnalyticsService } from "./analytics/main.ts";
import {
  type AppConfig,
  ENVIRONMENT_ONLY,
  isRegisteringService,
  loadConfig,
  REFRESHABLE,
  SETTING_NAMES,
  settings,
} from "./config.ts";
import { createConfigService } from "./config/main.ts";
import { createConsoleService } from "./console/main.ts";
import { createGatewayService } from "./gateway/main.ts";
import { createIdentityService } from "./identity/main.ts";
import { createIndexerService } from "./indexer/main.ts";
import { Infrastructure } from "./infrastructure.ts";
import { createQueryService } from "./query/main.ts";
import { createRegistryService } from "./registry/main.ts";
import { followInstanceCount } from "../shared/discovery/instance_count.ts";
import { createStreamService } from "./stream/main.ts";
import { createWordCountService } from "./wordcount/main.ts";
import { VERSION } from "./version.ts";

type ServiceFactory = (
  config: AppConfig,
  context: ServiceContext,
  infrastructure: Infrastructure,
  /** The live configuration, when it comes from the config service. */
  configuration: RefreshableConfig<AppConfig> | undefined,
) => Promise<Service>;

interface ServiceEntry {
  readonly port: (config: AppConfig) => number;
  readonly create: ServiceFactory;
  /**
   * Platform services (registry, identity, config) stop last: the others
   * depend on them. They read the environment only, never the config service.
   */
  readonly platform?: boolean;
  /**
   * The public entry (the gateway): it starts last, once every other service
   * of the process is registered, so that its first request finds them; and
   * it stops first, so that no new traffic arrives while the others stop.
   */
  readonly publicEntry?: boolean;
}

/**
 * Every service, in start order. The gateway stops first; the other
 * application services stop in start order, so producers stop before
 * consumers and readers; platform services stop after them.
 */
const SERVICES: Readonly<Record<string, ServiceEntry>> = {
  registry: {
    port: (config) => config.registry.port,
    create: (config, context, infrastructure) =>
      Promise.resolve(
        createRegistryService({
          config,
          context,
          verifier: infrastructure.tokenVerifier("registry"),
        }),
      ),
    platform: true,
  },
  identity: {
    port: (config) => config.identity.port,
    create: (config, context) => createIdentityService({ config, context }),
    platform: true,
  },
  config: {
    port: (config) => config.configServer.port,
    create: (config, context, infrastructure) =>
      createConfigService({ config, context, verifier: infrastructure.tokenVerifier("config") }),
    platform: true,
  },
  stream: {
    port: (config) => config.stream.port,
    create: async (config, context, infrastructure, configuration) =>
      createStreamService({
        config,
        context,
        ...(configuration === undefined ? {} : { configuration }),
        eventLog: await infrastructure.eventLog(),
        codec: await infrastructure.tweetCodec(),
        verifier: infrastructure.tokenVerifier("stream"),
      }),
  },
  indexer: {
    port: (config) => config.indexer.port,
    create: async (config, context, infrastructure) =>
      createIndexerService({
        config,
        context,
        eventLog: await infrastructure.eventLog(),
        index: await infrastructure.searchIndex(context.tracer),
        codec: await infrastructure.tweetCodec(),
      }),
  },
  wordcount: {
    port: (config) => config.wordcount.port,
    create: async (config, context, infrastructure) =>
      createWordCountService({
        config,
        context,
        eventLog: await infrastructure.eventLog(),
        tweetCodec: await infrastructure.tweetCodec(),
        wordCountCodec: await infrastructure.wordCountCodec(),
        discovery: infrastructure.registry("wordcount"),
        verifier: infrastructure.tokenVerifier("wordcount"),
      }),
  },
  analytics: {
    port: (config) => config.analytics.port,
    create: async (config, context, infrastructure) =>
      createAnalyticsService({
        config,
        context,
        eventLog: await infrastructure.eventLog(),
        database: await infrastructure.database(
          "analytics",
          config.analytics.databaseUrl,
          context.tracer,
        ),
        codec: await infrastructure.wordCountCodec(),
        verifier: infrastructure.tokenVerifier("analytics"),
      }),
  },
  query: {
    port: (config) => config.query.port,
    create: async (config, context, infrastructure, configuration) =>
      createQueryService({
        config,
        context,
        ...(configuration === undefined ? {} : { configuration }),
        index: await infrastructure.searchIndex(context.tracer),
        verifier: infrastructure.tokenVerifier("query"),
        database: await infrastructure.database("query", config.query.databaseUrl, context.tracer),
        discovery: infrastructure.registry("query"),
        tokens: infrastructure.serviceTokens("query"),
      }),
  },
  console: {
    port: (config) => config.console.port,
    create: async (config, context, infrastructure) =>
      createConsoleService({
        config,
        context,
        discovery: infrastructure.registry("console"),
        tokens: infrastructure.serviceTokens("console"),
        traces: await infrastructure.traceReader(),
        logs: (await infrastructure.logs()).reader,
      }),
  },
  gateway: {
    port: (config) => config.gateway.port,
    create: async (config, context, infrastructure, configuration) =>
      createGatewayService({
        config,
        context,
        discovery: infrastructure.registry("gateway"),
        // Its own service, read with its own credentials: the rate-limit share while Redis is down.
        gateways: followInstanceCount(infrastructure.registry("gateway"), "gateway"),
        rateLimitStore: await infrastructure.rateLimitStore(context.tracer),
        ...(configuration === undefined ? {} : { configuration }),
      }),
    publicEntry: true,
  },
};

const USAGE = `Usage: main.ts <service...>|all

Runs the named services in one process: ${Object.keys(SERVICES).join(", ")}, or all of them.
Settings come from environment variables (and an optional .env file); run with --help to list them.
`;

function writeError(text: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(text));
}

function helpText(): string {
  const rows = listSettings(settings).map((setting) =>
    `  ${setting.env.padEnd(36)} ${setting.format(setting.default).padEnd(24)} ${setting.doc}`
  );
  return `${USAGE}\nSettings (variable, default, meaning):\n${rows.join("\n")}\n`;
}

/** The host other services reach this process at, for its registrations. */
function advertisedHost(config: AppConfig): string {
  if (config.discovery.advertiseHost !== "") return config.discovery.advertiseHost;
  const host = config.process.host;
  if (host === "0.0.0.0" || host === "::") return Deno.hostname();
  return host.includes(":") ? `[${host}]` : host;
}

/** Readable coloured lines for a person at a terminal, JSON lines for everything else. */
function stdoutFormat(setting: AppConfig["logging"]["format"]): {
  format: LogFormat;
  colors: boolean;
} {
  const format = setting === "auto" ? (Deno.stdout.isTerminal() ? "pretty" : "json") : setting;
  return { format, colors: !Deno.noColor && Deno.stdout.isTerminal() };
}

/** The selected service names, or undefined when the arguments are wrong. */
export function selectServices(args: readonly string[]): string[] | undefined {
  if (args.length === 0) return undefined;
  if (args.includes("all")) return args.length === 1 ? Object.keys(SERVICES) : undefined;
  if (args.some((name) => !(name in SERVICES))) return undefined;
  const selected = new Set(args);
  return Object.keys(SERVICES).filter((name) => selected.has(name));
}

/**
 * A service's configuration from the config service (under the environment),
 * followed while it runs; undefined without CONFIG_URL. Exits with a clear
 * message when neither the service nor a cached copy answers.
 */
async function remoteConfiguration(
  name: string,
  config: AppConfig,
  environment: Readonly<Record<string, string>>,
  logger: ServiceContext["logger"],
  infrastructure: Infrastructure,
) {
  const { url, applications } = config.configClient;
  if (url === "" || SERVICES[name]!.platform === true || !isRegisteringService(name)) {
    return undefined;
  }
  if (applications.length > 0 && !applications.includes(name)) return undefined;
  try {
    const remote = await loadRemoteConfig({
      url: config.configClient.url,
      application: name,
      profile: config.configClient.profile,
      // The service's own client (realm role service:<name>): see services/config/app.ts mayRead.
      tokens: infrastructure.serviceTokens(name),
      environment,
      load: loadConfig,
      names: SETTING_NAMES,
      refreshable: REFRESHABLE,
      environmentOnly: ENVIRONMENT_ONLY,
      cacheDir: config.configClient.cacheDir,
      startTimeoutMs: config.configClient.startTimeoutMs,
      pollMs: config.configClient.pollMs,
      logger,
    });
    const configuration = remote.config;
    setServiceLogLevel(name, configuration.current.process.logLevel);
    configuration.subscribe({
      apply: (next) => setServiceLogLevel(name, next.process.logLevel),
    });
    return remote;
  } catch (error) {
    if (!(error instanceof ConfigError || error instanceof ConfigServiceError)) throw error;
    writeError(`${name}: ${error.message}\n`);
    Deno.exit(1);
  }
}

async function run(
  names: readonly string[],
  config: AppConfig,
  environment: Readonly<Record<string, string>>,
): Promise<void> {
  const processLogger = serviceLogger("main", config.process.instanceId || `main-${Deno.pid}`);
  const infrastructure = new Infrastructure(config, processLogger);
  const logs = await infrastructure.logs();
  await configureLogging({
    level: config.process.logLevel,
    ...stdoutFormat(config.logging.format),
    sinks: [logs.sink],
  });
  processLogger.info("Logs: stdout ({format}) and {where}", {
    format: stdoutFormat(config.logging.format).format,
    where: logs.description,
  });
  logs.start();
  configureTracing(await infrastructure.tracingOptions());

  const followed: { close(): void }[] = [];
  const running: {
    service: Service;
    url: string;
    /** The management listener's URL, when the service has one. */
    managementUrl?: string;
    platform: boolean;
    publicEntry: boolean;
    shutdown: () => Promise<void>;
  }[] = [];
  // A registration needs the registry and a token from the issuer: when this
  // process runs them, it waits until they listen rather than fail and retry.
  const listening = new Map(
    ["registry", "identity"].filter((name) => names.includes(name))
      .map((name) => [name, Promise.withResolvers<void>()]),
  );
  const platformListening = Promise.all([...listening.values()].map(({ promise }) => promise));
  /** The first registration of every service started so far (settled once accepted or failed). */
  const registrations: Promise<void>[] = [];
  for (const name of names) {
    const entry = SERVICES[name]!;
    if (entry.publicEntry === true) await Promise.all(registrations);
    const instanceId = config.process.instanceId || `${name}-${Deno.hostname()}-${Deno.pid}`;
    const logger = serviceLogger(name, instanceId);
    const remote = await remoteConfiguration(name, config, environment, logger, infrastructure);
    if (remote !== undefined) followed.push(remote);
    const configuration = remote?.config;
    const metrics = new MetricsRegistry();
    const context: ServiceContext = {
      name,
      instanceId,
      version: VERSION,
      logger,
      metrics,
      tracer: serviceTracer(name, metrics),
      ...(configuration === undefined ? {} : { configStatus: () => configuration.status }),
    };
    logs.registerMetrics(context.metrics);
    const serviceConfig = configuration?.current ?? config;
    const service = await entry.create(serviceConfig, context, infrastructure, configuration);
    const server = serveApp(service.app, {
      hostname: config.process.host,
      port: entry.port(serviceConfig),
    });
    const managementServer = service.management === undefined ? undefined : serveApp(
      service.management.app,
      { hostname: config.process.host, port: service.management.port },
    );
    // Logged before "listening on", so whoever waits for that line knows both.
    if (managementServer !== undefined) {
      context.logger.info("{service} management listening on {url}", {
        service: name,
        url: managementServer.url,
      });
    }
    context.logger.info("{service} listening on {url}", { service: name, url: server.url });
    listening.get(name)?.resolve();
    running.push({
      service,
      url: server.url,
      ...(managementServer === undefined ? {} : { managementUrl: managementServer.url }),
      platform: entry.platform ?? false,
      publicEntry: entry.publicEntry ?? false,
      shutdown: async () => {
        await server.shutdown();
        await managementServer?.shutdown();
      },
    });
    if (name !== "registry") {
      const baseUrl = `http://${advertisedHost(config)}:${server.port}`;
      // Where Prometheus scrapes the instance: the management port when it has one.
      const managementUrl = managementServer === undefined
        ? baseUrl
        : `http://${advertisedHost(config)}:${managementServer.port}`;
      const scrape = { managementUrl, metricsUrl: `${managementUrl}/metrics` };
      // Registrations of one service run one after another, the latest metadata last.
      let registered = platformListening.then(() => {});
      const register = (metadata: Readonly<Record<string, string>>) => {
        registered = registered
          .then(() =>
            infrastructure.registry(name).register({
              service: name,
              instanceId,
              baseUrl,
              version: VERSION,
              metadata: { ...scrape, ...metadata },
            })
          )
          .catch((error) =>
            context.logger.error("Cannot register {service} with the registry", {
              service: name,
              error,
            })
          );
      };
      if (service.publishMetadata === undefined) register({});
      else service.publishMetadata(register);
      registrations.push(registered);
    }
  }
  writeError(
    running.map(({ service, url, managementUrl }) =>
      `${service.name.padEnd(8)} ${url}${
        managementUrl === undefined ? "" : ` (/ready, /metrics: ${managementUrl})`
      }`
    ).join("\n") + "\n",
  );

  let shuttingDown = false;
  const stopped = Promise.withResolvers<void>();
  const shutdown = async (signal: string) => {
    if (shuttingDown) {
      processLogger.warn("Received {signal} again; exiting without a clean shutdown", { signal });
      Deno.exit(130);
    }
    shuttingDown = true;
    processLogger.info("Received {signal}; shutting down", { signal });
    for (const remote of followed) remote.close();
    // Leave the registry first, so that no new traffic arrives while stopping.
    await infrastructure.closeRegistries();
    const stopOrder = [
      ...running.filter((entry) => entry.publicEntry),
      ...running.filter((entry) => !entry.publicEntry && !entry.platform),
      ...running.filter((entry) => entry.platform),
    ];
    for (const { service } of stopOrder) {
      try {
        await service.stop();
      } catch (error) {
        processLogger.error("Cannot stop {service} cleanly", { service: service.name, error });
      }
    }
    await Promise.all(running.map(({ shutdown }) => shutdown()));
    await infrastructure.close();
    processLogger.info("Shut down cleanly");
    stopped.resolve();
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => void shutdown(signal));
  }

  const started = Promise.all(running.map(async ({ service }) => {
    try {
      await service.start();
    } catch (error) {
      if (!shuttingDown) throw error;
    }
  }));
  // A start still retrying an engine when the signal comes must not keep the process alive.
  await Promise.race([started, stopped.promise]);
  await stopped.promise;
  await shutdownTracing();
  await shutdownLogging();
}

if (import.meta.main) {
  const args = Deno.args;
  if (args.includes("--help") || args.includes("-h")) {
    writeError(helpText());
    Deno.exit(0);
  }
  const names = selectServices(args);
  if (names === undefined) {
    writeError(USAGE);
    Deno.exit(2);
  }
  const environment = Deno.env.toObject();
  let config: AppConfig;
  try {
    config = loadConfig(environment);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    writeError(`${error.message}\n`);
    Deno.exit(1);
  }
  await run(names, config, environment);
  Deno.exit(0);
}
