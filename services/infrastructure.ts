/**
 * The process's adapters, chosen by configuration and shared by every service
 * the process runs (so that `all` wires stream -> indexer -> query through one
 * log and index). Created on first use, closed once at shutdown. A configured
 * real engine that is down is never replaced by an embedded one: the services
 * retry it and report it on `/ready`.
 */
import { Client } from "@elastic/elasticsearch";
import type { EventLog } from "../shared/event_log/event_log.ts";
import { createKafkaClient } from "../shared/event_log/kafka_client.ts";
import { KafkaEventLog } from "../shared/event_log/kafka_event_log.ts";
import { createPlatformaticClient } from "../shared/event_log/platformatic_client.ts";
import { PlatformaticEventLog } from "../shared/event_log/platformatic_event_log.ts";
import { MemoryEventLog } from "../shared/event_log/memory_event_log.ts";
import { loadTweetCodec, type TweetCodec } from "../shared/events/tweet_event.ts";
import { type Logger, logShippingLogger, type Sink } from "../shared/log/log.ts";
import { ElasticsearchLogReader } from "../shared/log/elasticsearch_log_reader.ts";
import { ElasticsearchLogSink } from "../shared/log/elasticsearch_log_sink.ts";
import { LogIndexRetention } from "../shared/log/log_index_retention.ts";
import type { LogReader } from "../shared/log/log_reader.ts";
import { MemoryLogStore } from "../shared/log/memory_log_store.ts";
import type { MetricsRegistry } from "../shared/metrics/metrics.ts";
import { ElasticsearchSearchIndex } from "../shared/search_index/elasticsearch_search_index.ts";
import { MemorySearchIndex } from "../shared/search_index/memory_search_index.ts";
import type { SearchIndex } from "../shared/search_index/search_index.ts";
import { Redis } from "ioredis";
import { RegistryClient } from "../shared/discovery/registry_client.ts";
import { MemoryRateLimitStore } from "../shared/rate_limit/memory_rate_limit_store.ts";
import type { RateLimitStore } from "../shared/rate_limit/rate_limit_store.ts";
import { RedisRateLimitStore } from "../shared/rate_limit/redis_rate_limit_store.ts";
import {
  type AppConfig,
  isRegisteringService,
  type RegisteringService,
  serviceCredentials,
} from "./config.ts";
import { loadWordCountCodec, type WordCountCodec } from "../shared/events/word_count_event.ts";
import postgres from "postgres";
import type { SqlDatabase } from "../shared/database/database.ts";
import { PgliteDatabase } from "../shared/database/pglite_database.ts";
import { startPglite } from "../shared/database/pglite_thread.ts";
import type { PGliteWorker } from "@electric-sql/pglite/worker";
import { PostgresDatabase } from "../shared/database/postgres_database.ts";
import { TracedSqlDatabase } from "../shared/database/traced_database.ts";
import { createJwtVerifier, type JwtVerifier } from "../shared/auth/jwt_verifier.ts";
import { ZipkinExporter } from "@opentelemetry/exporter-zipkin";
import type { SpanExporter } from "@opentelemetry/sdk-trace";
import { MemorySpanStore } from "../shared/trace/memory_span_store.ts";
import { MemoryTraceReader } from "../shared/trace/memory_trace_reader.ts";
import type { TraceReader } from "../shared/trace/trace_reader.ts";
import type { Tracer, TracingOptions } from "../shared/trace/tracing.ts";
import { ZipkinTraceReader } from "../shared/trace/zipkin_trace_reader.ts";
import {
  ClientCredentialsTokenSource,
  type TokenSource,
} from "../shared/auth/client_credentials.ts";

/** A URL fit for logs: its user and password masked. */
function withoutCredentials(url: string): string {
  return url.replace(/\/\/[^@/]*@/, "//***@");
}

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
  #logs: LogAggregation | undefined;
  #eventLog: EventLog | undefined;
  #searchIndex: SearchIndex | undefined;
  readonly #tracedSearchIndexes = new Map<Tracer, SearchIndex>();
  #tweetCodec: Promise<TweetCodec> | undefined;
  #wordCountCodec: Promise<WordCountCodec> | undefined;
  readonly #registries = new Map<string, RegistryClient>();
  readonly #tokens = new Map<string, TokenSource>();
  #rateLimitStore: RateLimitStore | undefined;
  readonly #databases = new Map<string, SqlDatabase>();
  #embeddedServer?: PGliteWorker;
  #spanExporter: SpanExporter | undefined;
  #spanStore: MemorySpanStore | undefined;
  #traceReader: TraceReader | undefined;

  constructor(readonly config: AppConfig, readonly logger: Logger) {}

  /**
   * Where every service's spans go and how many are sampled: Zipkin's
   * exporter with ZIPKIN_URL, else the process's bounded memory span store.
   */
  tracingOptions(): TracingOptions {
    const settings = this.config.tracing;
    return {
      sampleRatio: settings.sampleRatio,
      export: {
        exporter: this.#spanExporterOf(),
        maxQueueSize: settings.exportQueueSize,
        maxBatchSize: settings.exportBatchSize,
        scheduledDelayMs: settings.exportIntervalMs,
        exportTimeoutMs: settings.exportTimeoutMs,
      },
    };
  }

  /** Reads the recorded traces from where they are exported: Zipkin, or the memory store. */
  traceReader(): TraceReader {
    this.#spanExporterOf();
    this.#traceReader ??= this.#spanStore === undefined
      ? new ZipkinTraceReader({ url: this.config.tracing.zipkinUrl })
      : new MemoryTraceReader(this.#spanStore);
    return this.#traceReader;
  }

  /** The log aggregation: its sink goes to `configureLogging`, its reader to log search. */
  logs(): LogAggregation {
    this.#logs ??= this.#createLogs();
    return this.#logs;
  }

  eventLog(): EventLog {
    this.#eventLog ??= this.#createEventLog();
    return this.#eventLog;
  }

  /**
   * The search index. On Elasticsearch each calling service gets its own
   * adapter and client, so that its calls are spans of its own tracer; the
   * in-process index is one, shared, since it holds the documents.
   */
  searchIndex(tracer?: Tracer): SearchIndex {
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
  rateLimitStore(tracer?: Tracer): RateLimitStore {
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
  database(service: string, url: string, tracer?: Tracer): SqlDatabase {
    let database = this.#databases.get(service);
    if (database === undefined) {
      database = this.#createDatabase(service, url, tracer);
      this.#databases.set(service, database);
    }
    return database;
  }

  async close(): Promise<void> {
    await this.closeRegistries();
    await this.#eventLog?.close();
    await this.#searchIndex?.close();
    await Promise.all([...this.#tracedSearchIndexes.values()].map((index) => index.close()));
    await this.#rateLimitStore?.close();
    await Promise.all([...this.#databases.values()].map((database) => database.close()));
    await this.#embeddedServer?.close();
  }

  #spanExporterOf(): SpanExporter {
    if (this.#spanExporter !== undefined) return this.#spanExporter;
    const settings = this.config.tracing;
    if (settings.zipkinUrl !== "") {
      const url = `${settings.zipkinUrl.replace(/\/$/, "")}/api/v2/spans`;
      this.logger.info(
        "Traces: exported to Zipkin at {url}, {ratio} of new traces sampled (ZIPKIN_URL)",
        { url, ratio: settings.sampleRatio },
      );
      this.#spanExporter = new ZipkinExporter({ url });
    } else {
      this.logger.info(
        "Traces: the last {spans} spans kept in memory, {ratio} of new traces sampled " +
          "(ZIPKIN_URL is empty)",
        { spans: settings.memoryMaxSpans, ratio: settings.sampleRatio },
      );
      this.#spanStore = new MemorySpanStore({ maxSpans: settings.memoryMaxSpans });
      this.#spanExporter = this.#spanStore;
    }
    return this.#spanExporter;
  }

  #createLogs(): LogAggregation {
    const settings = this.config.logging;
    if (settings.shipping === "elasticsearch") {
      const url = settings.elasticsearchUrl || this.config.searchIndex.elasticsearchUrl;
      // The sink retries on its own, with back-off and one line per outage.
      const client = new Client({ node: url, maxRetries: 0, requestTimeout: 10_000 });
      const shippingLogger = logShippingLogger(
        "main",
        this.config.process.instanceId || `main-${Deno.pid}`,
      );
      const shipping = new ElasticsearchLogSink(client, {
        // Lines about shipping go to stdout only, never back into the queue.
        logger: shippingLogger,
        indexPrefix: settings.indexPrefix,
        batchSize: settings.batchSize,
        flushIntervalMs: settings.flushIntervalMs,
        maxQueueSize: settings.queueSize,
        target: `Elasticsearch at ${withoutCredentials(url)}`,
      });
      const retention = new LogIndexRetention(client, {
        logger: shippingLogger,
        indexPrefix: settings.indexPrefix,
        retentionDays: settings.retentionDays,
      });
      return {
        sink: Object.assign(shipping.sink, {
          [Symbol.asyncDispose]: async () => {
            await Promise.all([shipping.close(), retention.close()]);
            await client.close();
          },
        }),
        reader: new ElasticsearchLogReader(client, { indexPrefix: settings.indexPrefix }),
        description: `shipped to Elasticsearch at ${withoutCredentials(url)}, indices ` +
          `${settings.indexPrefix}-YYYY.MM.DD kept ${settings.retentionDays} days ` +
          "(LOG_SHIPPING=elasticsearch)",
        start: () => {
          shipping.start();
          retention.start();
        },
        registerMetrics: (metrics) => shipping.registerMetrics(metrics),
      };
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

  #createDatabase(service: string, url: string, tracer: Tracer | undefined): SqlDatabase {
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
    this.logger.info("{service} database: PostgreSQL at {url}", {
      service,
      url: withoutCredentials(url),
    });
    const { hostname, port } = new URL(url);
    // Connects on first use; the service retries its migrations until the server answers.
    return new TracedSqlDatabase(
      new PostgresDatabase(postgres(url, { max: 10, connect_timeout: 5, onnotice: () => {} })),
      { ...traced, serverAddress: hostname, serverPort: port === "" ? 5432 : Number(port) },
    );
  }

  #createRateLimitStore(tracer: Tracer | undefined): RateLimitStore {
    const settings = this.config.rateLimit;
    if (settings.store === "redis") {
      this.logger.info("Rate limits: Redis at {url} (RATE_LIMIT_STORE=redis)", {
        url: withoutCredentials(settings.redisUrl),
      });
      // Connected at once, so the first request finds it ready. Commands fail
      // fast while Redis is down (no offline queue): the gateway then counts
      // in process and its rate limiter logs the outage; ioredis's own error
      // events would only repeat that on every reconnect.
      // No auto-pipelining: the store sends the hits made meanwhile as one command itself.
      const client = new Redis(settings.redisUrl, {
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
      });
      client.on("error", () => {});
      return new RedisRateLimitStore(client, tracer === undefined ? {} : { tracer });
    }
    this.logger.info("Rate limits: in process (RATE_LIMIT_STORE=memory)");
    return new MemoryRateLimitStore();
  }

  #createEventLog(): EventLog {
    const settings = this.config.eventLog;
    if (settings.adapter === "kafka" && settings.kafkaClient === "platformatic") {
      const instanceId = this.config.process.instanceId;
      this.logger.info(
        "Event log: Kafka at {brokers} (EVENT_LOG=kafka, KAFKA_CLIENT=platformatic), {membership}",
        {
          brokers: settings.kafkaBrokers.join(","),
          membership: instanceId === ""
            ? "dynamic group membership (no INSTANCE_ID)"
            : `static group membership as <group>-${instanceId}`,
        },
      );
      const logger = this.logger;
      return new PlatformaticEventLog(
        createPlatformaticClient({
          clientId: settings.kafkaClientId,
          brokers: settings.kafkaBrokers,
        }),
        {
          // A restarted process with the same INSTANCE_ID rejoins as the same
          // static member and takes its partitions back without a rebalance.
          ...(instanceId === "" ? {} : { instanceIdFor: (groupId) => `${groupId}-${instanceId}` }),
          onError: (error, context) =>
            logger.warn("Kafka: {context}: {error}", { context, error: String(error) }),
        },
      );
    }
    if (settings.adapter === "kafka") {
      this.logger.info("Event log: Kafka at {brokers} (EVENT_LOG=kafka, KAFKA_CLIENT=kafkajs)", {
        brokers: settings.kafkaBrokers.join(","),
      });
      const logger = this.logger;
      const kafka = createKafkaClient({
        clientId: settings.kafkaClientId,
        brokers: settings.kafkaBrokers,
        logLevel: "warn",
        // kafkajs repeats every connection failure it retries; the services
        // report an unreachable Kafka once per retry of their own, loudly.
        onLog: (entry) =>
          logger.debug("kafkajs {namespace}: {message}", {
            namespace: entry.namespace,
            message: entry.message,
            level: entry.level,
          }),
      });
      return new KafkaEventLog(kafka);
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

  #createSearchIndex(tracer: Tracer | undefined): SearchIndex {
    const settings = this.config.searchIndex;
    if (settings.adapter === "elasticsearch") {
      if (this.#tracedSearchIndexes.size === 0 && this.#searchIndex === undefined) {
        this.logger.info(
          "Search index: Elasticsearch at {url}, index {index} (SEARCH_INDEX=elasticsearch)",
          { url: settings.elasticsearchUrl, index: settings.elasticsearchIndex },
        );
      }
      return new ElasticsearchSearchIndex(new Client({ node: settings.elasticsearchUrl }), {
        index: settings.elasticsearchIndex,
        serverUrl: settings.elasticsearchUrl,
        ...(tracer === undefined ? {} : { tracer }),
      });
    }
    this.logger.info(
      "Search index: in-process (SEARCH_INDEX=memory); documents live in this process only, " +
        "at most {documents}",
      { documents: settings.memoryMaxDocuments },
    );
    return new MemorySearchIndex({ maxDocuments: settings.memoryMaxDocuments });
  }
}
