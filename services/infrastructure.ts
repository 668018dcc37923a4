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
import { Redis } from "ioredis";
import { RegistryClient } from "../shared/discovery/registry_client.ts";
import { MemoryRateLimitStore } from "../shared/rate_limit/memory_rate_limit_store.ts";
import type { RateLimitStore } from "../shared/rate_limit/rate_limit_store.ts";
import { RedisRateLimitStore } from "../shared/rate_limit/redis_rate_limit_store.ts";
import type { AppConfig } from "./config.ts";
import { loadWordCountCodec, type WordCountCodec } from "../shared/events/word_count_event.ts";
import postgres from "postgres";
import type { SqlDatabase } from "../shared/database/database.ts";
import { PgliteDatabase } from "../shared/database/pglite_database.ts";
import { startPglite } from "../shared/database/pglite_thread.ts";
import { PostgresDatabase } from "../shared/database/postgres_database.ts";
import { createJwtVerifier, type JwtVerifier } from "../shared/auth/jwt_verifier.ts";

/** A URL fit for logs: its user and password masked. */
function withoutCredentials(url: string): string {
  return url.replace(/\/\/[^@/]*@/, "//***@");
}

export class Infrastructure {
  #eventLog: EventLog | undefined;
  #searchIndex: SearchIndex | undefined;
  #tweetCodec: Promise<TweetCodec> | undefined;
  #wordCountCodec: Promise<WordCountCodec> | undefined;
  #registry: RegistryClient | undefined;
  #rateLimitStore: RateLimitStore | undefined;
  readonly #databases = new Map<string, SqlDatabase>();

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

  wordCountCodec(): Promise<WordCountCodec> {
    this.#wordCountCodec ??= loadWordCountCodec();
    return this.#wordCountCodec;
  }

  /** The process's registry client: registers its services and discovers others. */
  registry(): RegistryClient {
    this.#registry ??= new RegistryClient({
      urls: this.config.discovery.registryUrls,
      heartbeatMs: this.config.discovery.heartbeatMs,
      logger: this.logger,
    });
    return this.#registry;
  }

  /** Verifies the configured issuer's access tokens for one service's audience. */
  tokenVerifier(audience: string): JwtVerifier {
    return createJwtVerifier({ issuer: this.config.auth.oidcIssuer, audience });
  }

  rateLimitStore(): RateLimitStore {
    this.#rateLimitStore ??= this.#createRateLimitStore();
    return this.#rateLimitStore;
  }

  /**
   * A service's own database: PostgreSQL at `url`, or with `url` empty an
   * embedded PGlite in memory (its data lives in this process only), on a
   * worker thread of its own so that its start never stalls the services.
   * One per service, even when two services name the same server: each
   * embedded database is a cluster and a thread of its own.
   */
  database(service: string, url: string): SqlDatabase {
    let database = this.#databases.get(service);
    if (database === undefined) {
      database = this.#createDatabase(service, url);
      this.#databases.set(service, database);
    }
    return database;
  }

  async close(): Promise<void> {
    await this.#registry?.close();
    await this.#eventLog?.close();
    await this.#searchIndex?.close();
    await this.#rateLimitStore?.close();
    await Promise.all([...this.#databases.values()].map((database) => database.close()));
  }

  #createDatabase(service: string, url: string): SqlDatabase {
    if (url === "") {
      const templateFile = this.config.process.pgliteTemplateFile;
      this.logger.info(
        "{service} database: embedded PGlite in memory on a worker thread; its data lives in " +
          "this process only (empty cluster from {template})",
        { service, template: templateFile || "initdb" },
      );
      return new PgliteDatabase(startPglite({ templateFile }));
    }
    this.logger.info("{service} database: PostgreSQL at {url}", {
      service,
      url: withoutCredentials(url),
    });
    // Connects on first use; the service retries its migrations until the server answers.
    return new PostgresDatabase(postgres(url, { max: 10, connect_timeout: 5, onnotice: () => {} }));
  }

  #createRateLimitStore(): RateLimitStore {
    const settings = this.config.rateLimit;
    if (settings.store === "redis") {
      this.logger.info("Rate limits: Redis at {url} (RATE_LIMIT_STORE=redis)", {
        url: withoutCredentials(settings.redisUrl),
      });
      // Connected at once, so the first request finds it ready. Commands fail
      // fast while Redis is down (no offline queue): the gateway then counts
      // in process and its rate limiter logs the outage; ioredis's own error
      // events would only repeat that on every reconnect.
      const client = new Redis(settings.redisUrl, {
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
      });
      client.on("error", () => {});
      return new RedisRateLimitStore(client);
    }
    this.logger.info("Rate limits: in process (RATE_LIMIT_STORE=memory)");
    return new MemoryRateLimitStore();
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
