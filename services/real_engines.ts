/**
 * The adapters of the real engines (Kafka with either client, Elasticsearch,
 * Redis, PostgreSQL, Zipkin), made from their settings. Loaded by
 * `Infrastructure` with a dynamic `import()` only when the configuration
 * selects one of them: their clients are most of the services' code, and an
 * embedded start need not load them (a static specifier, so `deno compile`
 * still embeds this module and everything it imports).
 */
import { Client } from "@elastic/elasticsearch";
import { ZipkinExporter } from "@opentelemetry/exporter-zipkin";
import type { SpanExporter } from "@opentelemetry/sdk-trace";
import { Redis } from "ioredis";
import postgres from "postgres";
import type { SqlDatabase } from "../shared/database/database.ts";
import { PostgresDatabase } from "../shared/database/postgres_database.ts";
import { TracedSqlDatabase } from "../shared/database/traced_database.ts";
import type { EventLog } from "../shared/event_log/event_log.ts";
import { createKafkaClient } from "../shared/event_log/kafka_client.ts";
import { KafkaEventLog } from "../shared/event_log/kafka_event_log.ts";
import { createPlatformaticClient } from "../shared/event_log/platformatic_client.ts";
import { PlatformaticEventLog } from "../shared/event_log/platformatic_event_log.ts";
import { ElasticsearchLogReader } from "../shared/log/elasticsearch_log_reader.ts";
import { ElasticsearchLogSink } from "../shared/log/elasticsearch_log_sink.ts";
import { type Logger, logShippingLogger } from "../shared/log/log.ts";
import { LogIndexRetention } from "../shared/log/log_index_retention.ts";
import type { RateLimitStore } from "../shared/rate_limit/rate_limit_store.ts";
import { RedisRateLimitStore } from "../shared/rate_limit/redis_rate_limit_store.ts";
import { ElasticsearchSearchIndex } from "../shared/search_index/elasticsearch_search_index.ts";
import type { SearchIndex } from "../shared/search_index/search_index.ts";
import type { TraceReader } from "../shared/trace/trace_reader.ts";
import type { Tracer } from "../shared/trace/tracing.ts";
import { ZipkinTraceReader } from "../shared/trace/zipkin_trace_reader.ts";
import type { AppConfig } from "./config.ts";
import type { LogAggregation } from "./infrastructure.ts";

/** A URL fit for logs: its user and password masked. */
export function withoutCredentials(url: string): string {
  return url.replace(/\/\/[^@/]*@/, "//***@");
}

/** Kafka through @platformatic/kafka (KAFKA_CLIENT=platformatic). */
export function platformaticEventLog(
  settings: AppConfig["eventLog"],
  instanceId: string,
  logger: Logger,
): EventLog {
  return new PlatformaticEventLog(
    createPlatformaticClient({ clientId: settings.kafkaClientId, brokers: settings.kafkaBrokers }),
    {
      // A restarted process with the same INSTANCE_ID rejoins as the same
      // static member and takes its partitions back without a rebalance.
      ...(instanceId === "" ? {} : { instanceIdFor: (groupId) => `${groupId}-${instanceId}` }),
      onError: (error, context) =>
        logger.warn("Kafka: {context}: {error}", { context, error: String(error) }),
    },
  );
}

/** Kafka through kafkajs (KAFKA_CLIENT=kafkajs). */
export function kafkajsEventLog(settings: AppConfig["eventLog"], logger: Logger): EventLog {
  return new KafkaEventLog(createKafkaClient({
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
  }));
}

/** An Elasticsearch index with a client of its own; its calls are spans of `tracer`. */
export function elasticsearchSearchIndex(
  settings: AppConfig["searchIndex"],
  tracer: Tracer | undefined,
): SearchIndex {
  return new ElasticsearchSearchIndex(new Client({ node: settings.elasticsearchUrl }), {
    index: settings.elasticsearchIndex,
    refreshIntervalMs: settings.elasticsearchRefreshIntervalMs,
    serverUrl: settings.elasticsearchUrl,
    ...(tracer === undefined ? {} : { tracer }),
  });
}

/** Every log line shipped to Elasticsearch (LOG_SHIPPING=elasticsearch), and searched there. */
export function elasticsearchLogs(config: AppConfig): LogAggregation {
  const settings = config.logging;
  const url = settings.elasticsearchUrl || config.searchIndex.elasticsearchUrl;
  // The sink retries on its own, with back-off and one line per outage.
  const client = new Client({ node: url, maxRetries: 0, requestTimeout: 10_000 });
  const shippingLogger = logShippingLogger(
    "main",
    config.process.instanceId || `main-${Deno.pid}`,
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

/** Rate-limit counts in Redis; its calls are spans of `tracer` (the gateway's). */
export function redisRateLimitStore(redisUrl: string, tracer: Tracer | undefined): RateLimitStore {
  // Connected at once, so the first request finds it ready. Commands fail
  // fast while Redis is down (no offline queue): the gateway then counts
  // in process and its rate limiter logs the outage; ioredis's own error
  // events would only repeat that on every reconnect.
  // No auto-pipelining: the store sends the hits made meanwhile as one command itself.
  const client = new Redis(redisUrl, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
  });
  client.on("error", () => {});
  return new RedisRateLimitStore(client, tracer === undefined ? {} : { tracer });
}

/** A service's PostgreSQL database at `url`; it connects on first use. */
export function postgresDatabase(url: string, tracer: Tracer | undefined): SqlDatabase {
  const { hostname, port } = new URL(url);
  // The service retries its migrations until the server answers.
  return new TracedSqlDatabase(
    new PostgresDatabase(postgres(url, { max: 10, connect_timeout: 5, onnotice: () => {} })),
    {
      ...(tracer === undefined ? {} : { tracer }),
      serverAddress: hostname,
      serverPort: port === "" ? 5432 : Number(port),
    },
  );
}

/** Exports spans to Zipkin's v2 span intake at `spansUrl`. */
export function zipkinExporter(spansUrl: string): SpanExporter {
  return new ZipkinExporter({ url: spansUrl });
}

/** Reads recorded traces back from Zipkin. */
export function zipkinTraceReader(zipkinUrl: string): TraceReader {
  return new ZipkinTraceReader({ url: zipkinUrl });
}
