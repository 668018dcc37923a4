/**
 * The process's adapters, chosen by configuration and shared by every service
 * the process runs (so that `all` wires stream -> indexer -> query through one
 * log and index). Created on first use, closed once at shutdown. A configured
 * real engine that is down is never replaced by an embedded one: the services
 * retry it and report it on `/ready`.
 *
 * A real engine's client is loaded (a dynamic `import()` of its module in
 * `services/real_engines/`) when a service of the process first asks for its
 * adapter: a process running the gateway alone loads ioredis, not the Kafka
 * clients, even when every process of a deployment gets the same settings.
 * The specifiers are static, so `deno compile` still embeds every module.
 */
import type { EventLog } from "../shared/event_log/event_log.ts";
import { MemoryEventLog } from "../shared/event_log/memory_event_log.ts";
import { loadTweetCodec, type TweetCodec } from "../shared/events/tweet_event.ts";
import type { Logger, Sink } from "../shared/log/log.ts";
import type { LogReader } from "../shared/log/log_reader.ts";
import { MemoryLogStore } from "../shared/log/memory_log_store.ts";
import type { MetricsRegistry } from "../shared/metrics/metrics.ts";
import { MemorySearchIndex } from "../shared/search_index/memory_search_index.ts";
import type { SearchIndex } from "../shared/search_index/search_index.ts";
import { RegistryClient } from "../shared/discovery/registry_client.ts";
import { MemoryRateLimitStore } from "../shared/rate_limit/memory_rate_limit_store.ts";
import type { RateLimitStore } from "../shared/rate_limit/rate_limit_store.ts";
import {
  type AppConfig,
  isRegisteringService,
  type RegisteringService,
  serviceCredentials,
} from "./config.ts";
import { loadWordCountCodec, type WordCountCodec } from "../shared/events/word_count_event.ts";
import type { SqlDatabase } from "../shared/database/database.ts";
import { PgliteDatabase } from "../shared/database/pglite_database.ts";
import { startPglite } from "../shared/database/pglite_thread.ts";
import type { PGliteWorker } from "@electric-sql/pglite/worker";
import { TracedSqlDatabase } from "../shared/database/traced_database.ts";
import { createJwtVerifier, type JwtVerifier } from "../shared/auth/jwt_verifier.ts";
import type { SpanExporter } from "@opentelemetry/sdk-trace";
import { MemorySpanStore } from "../shared/trace/memory_span_store.ts";
import { MemoryTraceReader } from "../shared/trace/memory_trace_reader.ts";
import type { TraceReader } from "../shared/trace/trace_reader.ts";
import type { Tracer, TracingOptions } from "../shared/trace/tracing.ts";
import { withoutCredentials } from "./real_engines/without_credentials.ts";
import {
  ClientCredentialsTokenSource,
  type TokenSource,
} from "../shared/auth/client_credentials.ts";

/** Loads each real engine's adapters, the first time one of them is made. */
export const REAL_ENGINES = {
  platformatic: () => import("./real_engines/platformatic.ts"),
  kafkajs: () => import("./real_engines/kafkajs.ts"),
  elasticsearch: () => import("./real_engines/elasticsearch.ts"),
  redis: () => import("./real_engines/redis.ts"),
  postgres: () => import("./real_engines/postgres.ts"),
  zipkin: () => import("./real_engines/zipkin.ts"),
};

export type RealEngines = typeof REAL_ENGINES;

/**
 * Where every log line goes besides stdout, and how to search them: the
 * configured log aggregation (Elasticsearch, or the in-memory store).
 */
export interface LogAggregation {
  /** Gets every line; disposing it ships what is left and stops (at logging shutdown). */
  readonly sink: Sink & AsyncDisposable;
  readonly reader: LogReader;
  /** Where lines go, for the start-up log (made before logging is configured). */
  readonly description: string;
  /** Starts shipping (puts the index template first); call once logging is configured. */
  start(): void;
  /** Counts shipped and dropped lines on a service's metrics (none in memory). */
  registerMetrics(metrics: MetricsRegistry): void;
}

export class Infrastructure {
  #logs: Promise<LogAggregation> | undefined;
  #eventLog: Promise<EventLog> | undefined;
  #searchIndex: Promise<SearchIndex> | undefined;
  readonly #tracedSearchIndexes = new Map<Tracer, Promise<SearchIndex>>();
  #tweetCodec: Promise<TweetCodec> | undefined;
  #wordCountCodec: Promise<WordCountCodec> | undefined;
  readonly #registries = new Map<string, RegistryClient>();
  readonly #tokens = new Map<string, TokenSource>();
  #rateLimitStore: Promise<RateLimitStore> | undefined;
  readonly #databases = new Map<string, Promise<SqlDatabase>>();
  #embeddedServer?: PGliteWorker;
  #spanExporter: Promise<SpanExporter> | undefined;
  #spanStore: MemorySpanStore | undefined;
  #traceReader: Promise<TraceReader> | undefined;

  readonly #engines: RealEngines;

  /** `engines` loads the real engines' adapters (the tests count what a process loads). */
  constructor(
    readonly config: AppConfig,
    readonly logger: Logger,
    engines: RealEngines = REAL_ENGINES,
  ) {
    this.#engines = engines;
  }

  /**
   * Where every service's spans go and how many are sampled: Zipkin's
   * exporter with ZIPKIN_URL, else the process's bounded memory span store.
   */
  async tracingOptions(): Promise<TracingOptions> {
    const settings = this.config.tracing;
    return {
      sampleRatio: settings.sampleRatio,
      maxNewTracesPerSecond: settings.maxNewTracesPerSecond || Infinity,
      export: {
        exporter: await this.#spanExporterOf(),
        maxQueueSize: settings.exportQueueSize,
        maxBatchSize: settings.exportBatchSize,
        scheduledDelayMs: settings.exportIntervalMs,
        exportTimeoutMs: settings.exportTimeoutMs,
      },
    };
  }

  /** Reads the recorded traces from where they are exported: Zipkin, or the memory store. */
  traceReader(): Promise<TraceReader> {
    this.#traceReader ??= this.#createTraceReader();
    return this.#traceReader;
  }

  /** The log aggregation: its sink goes to `configureLogging`, its reader to log search. */
  logs(): Promise<LogAggregation> {
    this.#logs ??= this.#createLogs();
    return this.#logs;
  }

  eventLog(): Promise<EventLog> {
    this.#eventLog ??= this.#createEventLog();
    return this.#eventLog;
  }

  /**
   * The search index. On Elasticsearch each calling service gets its own
   * adapter and client, so that its calls are spans of its own tracer; the
   * in-process index is one, shared, since it holds the documents.
   */
  searchIndex(tracer?: Tracer): Promise<SearchIndex> {
    if (this.config.searchIndex.adapter === "elasticsearch" && tracer !== undefined) {
      let index = this.#tracedSearchIndexes.get(tracer);
      if (index === undefined) {
        index = this.#createSearchIndex(tracer);
        this.#tracedSearchIndexes.set(tracer, index);
      }
      return index;
    }
    this.#searchIndex ??= this.#createSearchIndex(tracer);
    return this.#searchIndex;
  }

  tweetCodec(): Promise<TweetCodec> {
    this.#tweetCodec ??= loadTweetCodec();
    return this.#tweetCodec;
  }

  wordCountCodec(): Promise<WordCountCodec> {
    this.#wordCountCodec ??= loadWordCountCodec();
    return this.#wordCountCodec;
  }

  /**
   * The registry client of one service: it registers that service's
   * instances and reads the registry with that service's own credentials,
   * so each registration of a process running several services carries its
   * own service's identity.
   */
  registry(service: string): RegistryClient {
    if (!isRegisteringService(service)) {
      throw new TypeError(`Cannot make a registry client for ${service}: it has no OAuth client`);
    }
    let client = this.#registries.get(service);
    if (client === undefined) {
      client = new RegistryClient({
        urls: this.config.discovery.registryUrls,
        heartbeatMs: this.config.discovery.heartbeatMs,
        logger: this.logger,
        tokens: this.serviceTokens(service),
      });
      this.#registries.set(service, client);
    }
    return client;
  }

  /** Deregisters every service of the process and stops following the registry. */
  async closeRegistries(): Promise<void> {
    await Promise.all([...this.#registries.values()].map((client) => client.close()));
  }

  /** A service's own access tokens, by client credentials at the configured issuer. */
  serviceTokens(service: RegisteringService): TokenSource {
    let tokens = this.#tokens.get(service);
    if (tokens === undefined) {
      tokens = new ClientCredentialsTokenSource({
        issuer: this.config.auth.oidcIssuer,
        ...serviceCredentials(this.config, service),
      });
      this.#tokens.set(service, tokens);
    }
    return tokens;
  }

  /** Verifies the configured issuer's access tokens for one service's audience. */
  tokenVerifier(audience: string): JwtVerifier {
    return createJwtVerifier({ issuer: this.config.auth.oidcIssuer, audience });
  }

  /** The rate-limit store; Redis calls are spans of `tracer` (the gateway's). */
  rateLimitStore(tracer?: Tracer): Promise<RateLimitStore> {
    this.#rateLimitStore ??= this.#createRateLimitStore(tracer);
    return this.#rateLimitStore;
  }

  /**
   * A service's own database: PostgreSQL at `url`, or with `url` empty an
   * embedded PGlite in memory (its data lives in this process only), on a
   * worker thread so that its start never stalls the services. One database
   * per service; the services of a process share one embedded server (a
   * schema each, as they share one PostgreSQL server in compose), since each
   * PGlite costs ~200 MB resident.
   */
  database(service: string, url: string, tracer?: Tracer): Promise<SqlDatabase> {
    let database = this.#databases.get(service);
    if (database === undefined) {
      database = this.#createDatabase(service, url, tracer);
      this.#databases.set(service, database);
    }
    return database;
  }

  async close(): Promise<void> {
    await this.closeRegistries();
    await closeMade(this.#eventLog);
    await closeMade(this.#searchIndex);
    await Promise.all([...this.#tracedSearchIndexes.values()].map(closeMade));
    await closeMade(this.#rateLimitStore);
    await Promise.all([...this.#databases.values()].map(closeMade));
    await this.#embeddedServer?.close();
  }

  #spanExporterOf(): Promise<SpanExporter> {
    this.#spanExporter ??= this.#createSpanExporter();
    return this.#spanExporter;
  }

  async #createSpanExporter(): Promise<SpanExporter> {
    const settings = this.config.tracing;
    if (settings.zipkinUrl !== "") {
      const url = `${settings.zipkinUrl.replace(/\/$/, "")}/api/v2/spans`;
      this.logger.info(
        "Traces: exported to Zipkin at {url}, {ratio} of new traces sampled, {limit} " +
          "(ZIPKIN_URL)",
        { url, ratio: settings.sampleRatio, limit: traceLimit(settings.maxNewTracesPerSecond) },
      );
      return (await this.#engines.zipkin()).zipkinExporter(url);
    }
    this.logger.info(
      "Traces: the last {spans} spans kept in memory, {ratio} of new traces sampled, " +
        "{limit} (ZIPKIN_URL is empty)",
      {
        spans: settings.memoryMaxSpans,
        ratio: settings.sampleRatio,
        limit: traceLimit(settings.maxNewTracesPerSecond),
      },
    );
    this.#spanStore = new MemorySpanStore({ maxSpans: settings.memoryMaxSpans });
    return this.#spanStore;
  }

  async #createTraceReader(): Promise<TraceReader> {
    await this.#spanExporterOf();
    return this.#spanStore === undefined
      ? (await this.#engines.zipkin()).zipkinTraceReader(this.config.tracing.zipkinUrl)
      : new MemoryTraceReader(this.#spanStore);
  }

  async #createLogs(): Promise<LogAggregation> {
    const settings = this.config.logging;
    if (settings.shipping === "elasticsearch") {
      return (await this.#engines.elasticsearch()).elasticsearchLogs(this.config);
    }
    const store = new MemoryLogStore({ maxEntries: settings.memoryMaxLines });
    return {
      sink: Object.assign(store.sink, { [Symbol.asyncDispose]: () => Promise.resolve() }),
      reader: store,
      description: `the last ${settings.memoryMaxLines} lines kept in process for log search ` +
        "(LOG_SHIPPING=memory)",
      start: () => {},
      registerMetrics: () => {},
    };
  }

  async #createDatabase(
    service: string,
    url: string,
    tracer: Tracer | undefined,
  ): Promise<SqlDatabase> {
    const traced = tracer === undefined ? {} : { tracer };
    if (url === "") {
      const templateFile = this.config.process.pgliteTemplateFile;
      this.logger.info(
        "{service} database: embedded PGlite in memory on a worker thread, shared by this " +
          "process's services (a schema each); its data lives in this process only (empty " +
          "cluster from {template})",
        { service, template: templateFile || "initdb" },
      );
      this.#embeddedServer ??= startPglite({ templateFile });
      return new TracedSqlDatabase(
        new PgliteDatabase(this.#embeddedServer, { ownsInstance: false }),
        traced,
      );
    }
    const { postgresDatabase } = await this.#engines.postgres();
    this.logger.info("{service} database: PostgreSQL at {url}", {
      service,
      url: withoutCredentials(url),
    });
    return postgresDatabase(url, tracer);
  }

  async #createRateLimitStore(tracer: Tracer | undefined): Promise<RateLimitStore> {
    const settings = this.config.rateLimit;
    if (settings.store === "redis") {
      const { redisRateLimitStore } = await this.#engines.redis();
      this.logger.info("Rate limits: Redis at {url} (RATE_LIMIT_STORE=redis)", {
        url: withoutCredentials(settings.redisUrl),
      });
      return redisRateLimitStore(settings.redisUrl, tracer);
    }
    this.logger.info("Rate limits: in process (RATE_LIMIT_STORE=memory)");
    return new MemoryRateLimitStore();
  }

  async #createEventLog(): Promise<EventLog> {
    const settings = this.config.eventLog;
    if (settings.adapter === "kafka" && settings.kafkaClient === "platformatic") {
      const instanceId = this.config.process.instanceId;
      this.logger.info(
        "Event log: Kafka at {brokers} (EVENT_LOG=kafka, KAFKA_CLIENT=platformatic), " +
          "{membership}, compression {compression} (KAFKA_COMPRESSION)",
        {
          brokers: settings.kafkaBrokers.join(","),
          compression: settings.kafkaCompression,
          membership: instanceId === ""
            ? "dynamic group membership (no INSTANCE_ID)"
            : `static group membership as <group>-${instanceId}`,
        },
      );
      return (await this.#engines.platformatic()).platformaticEventLog(
        settings,
        instanceId,
        this.logger,
      );
    }
    if (settings.adapter === "kafka") {
      this.logger.info(
        "Event log: Kafka at {brokers} (EVENT_LOG=kafka, KAFKA_CLIENT=kafkajs), compression " +
          "{compression} (KAFKA_COMPRESSION)",
        { brokers: settings.kafkaBrokers.join(","), compression: settings.kafkaCompression },
      );
      return (await this.#engines.kafkajs()).kafkajsEventLog(settings, this.logger);
    }
    const { memoryRetentionRecords, memoryRetentionMs } = settings;
    this.logger.info(
      "Event log: in-process (EVENT_LOG=memory); events live in this process only, " +
        "{records} records per partition for at most {ms} ms",
      { records: memoryRetentionRecords, ms: memoryRetentionMs },
    );
    return new MemoryEventLog({
      retentionRecords: memoryRetentionRecords,
      retentionMs: memoryRetentionMs === 0 ? Infinity : memoryRetentionMs,
    });
  }

  async #createSearchIndex(tracer: Tracer | undefined): Promise<SearchIndex> {
    const settings = this.config.searchIndex;
    if (settings.adapter === "elasticsearch") {
      if (this.#tracedSearchIndexes.size === 0 && this.#searchIndex === undefined) {
        this.logger.info(
          "Search index: Elasticsearch at {url}, index {index} (SEARCH_INDEX=elasticsearch)",
          { url: settings.elasticsearchUrl, index: settings.elasticsearchIndex },
        );
      }
      return (await this.#engines.elasticsearch()).elasticsearchSearchIndex(settings, tracer);
    }
    this.logger.info(
      "Search index: in-process (SEARCH_INDEX=memory); documents live in this process only, " +
        "at most {documents}",
      { documents: settings.memoryMaxDocuments },
    );
    return new MemorySearchIndex({ maxDocuments: settings.memoryMaxDocuments });
  }
}

/** Closes what was made, if it was; one that could not be made has nothing to close. */
async function closeMade(made: Promise<{ close(): Promise<void> }> | undefined): Promise<void> {
  const adapter = await made?.catch(() => undefined);
  await adapter?.close();
}

/** TRACE_MAX_NEW_TRACES_PER_SECOND as logged: 0 is no limit. */
function traceLimit(perSecond: number): string {
  return perSecond === 0 ? "without a limit" : `at most ${perSecond} a second per service`;
}
