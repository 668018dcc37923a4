/**
 * The analytics service: word-count topic -> its own database, and a read
 * API over it (seed: analytics-service).
 */
import { bearerAuth } from "../../shared/auth/bearer_auth.ts";
import type { JwtVerifier } from "../../shared/auth/jwt_verifier.ts";
import type { SqlDatabase } from "../../shared/database/database.ts";
import { migrate } from "../../shared/database/migrations.ts";
import { ConsumerService } from "../../shared/event_log/consumer_service.ts";
import type { EventLog } from "../../shared/event_log/event_log.ts";
import type { WordCountCodec } from "../../shared/events/word_count_event.ts";
import { ProblemError } from "../../shared/http/problem.ts";
import { createServiceApp } from "../../shared/http/service_app.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { AppConfig } from "../config.ts";
import { addAnalyticsRoutes } from "./app.ts";
import { ANALYTICS_MIGRATIONS, ANALYTICS_SCHEMA } from "./migrations.ts";
import { decodeWordCount, storeWordCounts } from "./word_count_consumer.ts";
import { WordCountStore } from "./word_count_store.ts";

export interface AnalyticsDependencies {
  readonly config: AppConfig;
  readonly context: ServiceContext;
  readonly eventLog: EventLog;
  /** The service's own database; the service applies its migrations. */
  readonly database: SqlDatabase;
  readonly codec: WordCountCodec;
  /** Verifies access tokens for the audience `analytics`. */
  readonly verifier: JwtVerifier;
}

export function createAnalyticsService(deps: AnalyticsDependencies): Service {
  const { config, context, eventLog, database, codec, verifier } = deps;
  const { logger } = context;
  const settings = config.analytics;
  const topic = config.wordCounts.topic;
  const consumer = new ConsumerService({
    context,
    eventLog,
    groupId: settings.groupId,
    topics: [topic, settings.deadLetterTopic].map((name) => ({
      name,
      partitions: config.wordCounts.partitions,
    })),
    metricPrefix: "analytics",
    lagTopics: [topic],
  });
  const store = new WordCountStore(database, {
    schema: ANALYTICS_SCHEMA,
    historyPerWord: settings.historyPerWord,
  });
  let migrated = false;

  const app = createServiceApp({
    context,
    description: "The analytics read API: the latest count of each word, its history and " +
      "the top words, stored from the word-count events.",
    bodyLimitBytes: config.process.bodyLimitBytes,
    readiness: [
      { name: "event-log", check: () => eventLog.ping() },
      {
        name: "database",
        async check() {
          await database.ping();
          if (!migrated) throw new Error("the analytics schema is not migrated yet");
        },
      },
    ],
  });
  // Any valid token for this audience: calls that bypass the gateway gain nothing.
  app.use("/api/*", bearerAuth({ verifier }));
  // Until the schema is migrated (the embedded database may still be starting),
  // 503 at once: a search asking for its word counts need not wait for its timeout.
  app.use("/api/*", async function whileMigrating(_c, next) {
    if (!migrated) {
      throw new ProblemError({
        status: 503,
        code: "unavailable",
        title: "Service starting",
        detail: `The ${ANALYTICS_SCHEMA} schema is not migrated yet; try again`,
        headers: { "retry-after": "1" },
      });
    }
    await next();
  });
  addAnalyticsRoutes(app, { store });

  const handler = consumer.deadLettering({
    deadLetterTopic: settings.deadLetterTopic,
    outcome: "stored",
    decode: (record) => decodeWordCount(codec, record),
    handle: (decoded) => storeWordCounts(store, decoded),
  });

  return {
    name: context.name,
    app,
    async start() {
      const applied = await consumer.retry(
        `migrate the ${ANALYTICS_SCHEMA} schema`,
        () => migrate(database, { schema: ANALYTICS_SCHEMA, migrations: ANALYTICS_MIGRATIONS }),
      );
      migrated = true;
      logger.info("Schema {schema} up to date (applied {applied})", {
        schema: ANALYTICS_SCHEMA,
        applied: applied.length === 0 ? "none" : applied.join(", "),
      });
      await consumer.consume({
        action: "store",
        topics: [topic],
        fromBeginning: true,
        maxBatchSize: settings.maxBatchSize,
        partitionConcurrency: config.wordCounts.partitions,
      }, handler);
      logger.info("Storing {topic} as group {group}", { topic, group: settings.groupId });
    },
    async stop() {
      await consumer.stop();
      logger.info("Stopped storing word counts; offsets committed");
    },
  };
}
