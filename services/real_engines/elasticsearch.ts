/**
 * Elasticsearch: the search index (SEARCH_INDEX=elasticsearch) and log
 * shipping and search (LOG_SHIPPING=elasticsearch).
 */
import { Client } from "@elastic/elasticsearch";
import { ElasticsearchLogReader } from "../../shared/log/elasticsearch_log_reader.ts";
import { ElasticsearchLogSink } from "../../shared/log/elasticsearch_log_sink.ts";
import { logShippingLogger } from "../../shared/log/log.ts";
import { LogIndexRetention } from "../../shared/log/log_index_retention.ts";
import { ElasticsearchSearchIndex } from "../../shared/search_index/elasticsearch_search_index.ts";
import type { SearchIndex } from "../../shared/search_index/search_index.ts";
import type { Tracer } from "../../shared/trace/tracing.ts";
import type { AppConfig } from "../config.ts";
import type { LogAggregation } from "../infrastructure.ts";
import { withoutCredentials } from "./without_credentials.ts";

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
