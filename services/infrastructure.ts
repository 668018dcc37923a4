/**
 * The process's adapters, chosen by configuration and shared by every service
 * the process runs (so that `all` wires stream -> indexer -> query through one
 * log and index). Created on first use, closed once at shutdown. A configured
 * real engine that is down is never replaced by an embedded one: the services
 * retry it and report it on `/ready`.
 */
import { Client } from "@elastic/elasticsearch";
import type { EventLog } from "../shared/event_log/event_log.ts";
import { createKafkaClient, KafkaEventLog } from "../shared/event_log/kafka_event_log.ts";
import { MemoryEventLog } from "../shared/event_log/memory_event_log.ts";
import { loadTweetCodec, type TweetCodec } from "../shared/events/tweet_event.ts";
import type { Logger } from "../shared/log/log.ts";
import { ElasticsearchSearchIndex } from "../shared/search_index/elasticsearch_search_index.ts";
import { MemorySearchIndex } from "../shared/search_index/memory_search_index.ts";
import type { SearchIndex } from "../shared/search_index/search_index.ts";
import type { AppConfig } from "./config.ts";

export class Infrastructure {
  #eventLog: EventLog | undefined;
  #searchIndex: SearchIndex | undefined;
  #tweetCodec: Promise<TweetCodec> | undefined;

  constructor(readonly config: AppConfig, readonly logger: Logger) {}

  eventLog(): EventLog {
    this.#eventLog ??= this.#createEventLog();
    return this.#eventLog;
  }

  searchIndex(): SearchIndex {
    this.#searchIndex ??= this.#createSearchIndex();
    return this.#searchIndex;
  }

  tweetCodec(): Promise<TweetCodec> {
    this.#tweetCodec ??= loadTweetCodec();
    return this.#tweetCodec;
  }

  async close(): Promise<void> {
    await this.#eventLog?.close();
    await this.#searchIndex?.close();
  }

  #createEventLog(): EventLog {
    const settings = this.config.eventLog;
    if (settings.adapter === "kafka") {
      this.logger.info("Event log: Kafka at {brokers} (EVENT_LOG=kafka)", {
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

  #createSearchIndex(): SearchIndex {
    const settings = this.config.searchIndex;
    if (settings.adapter === "elasticsearch") {
      this.logger.info(
        "Search index: Elasticsearch at {url}, index {index} (SEARCH_INDEX=elasticsearch)",
        {
          url: settings.elasticsearchUrl,
          index: settings.elasticsearchIndex,
        },
      );
      return new ElasticsearchSearchIndex(new Client({ node: settings.elasticsearchUrl }), {
        index: settings.elasticsearchIndex,
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
