/**
 * The analytics service: word-count topic -> its own database, and a read
 * API over it (seed: analytics-service).
 */
import { retryUntilDone } from "../../shared/async/retry.ts";
import { bearerAuth } from "../../shared/auth/bearer_auth.ts";
import type { JwtVerifier } from "../../shared/auth/jwt_verifier.ts";
import type { SqlDatabase } from "../../shared/database/database.ts";
import { migrate } from "../../shared/database/migrations.ts";
import type { ConsumerGroupMember, EventLog } from "../../shared/event_log/event_log.ts";
import type { WordCountCodec } from "../../shared/events/word_count_event.ts";
import { registerLagGauge } from "../../shared/event_log/lag_gauge.ts";
import { createServiceApp } from "../../shared/http/service_app.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { AppConfig } from "../config.ts";
import { addAnalyticsRoutes } from "./app.ts";
import { ANALYTICS_MIGRATIONS, ANALYTICS_SCHEMA } from "./migrations.ts";
import { createWordCountConsumer } from "./word_count_consumer.ts";
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
  const { logger, metrics } = context;
  const settings = config.analytics;
  const topic = config.wordCounts.topic;
  const events = metrics.counter(
    "analytics_events_total",
    "Word-count events handled, by outcome.",
  );
  const failures = metrics.counter(
    "analytics_batch_failures_total",
    "Batches whose write failed and will be redelivered.",
  );
  registerLagGauge(metrics, {
    eventLog,
    groupId: settings.groupId,
    topic,
  });
  const store = new WordCountStore(database, {
    schema: ANALYTICS_SCHEMA,
    historyPerWord: settings.historyPerWord,
  });
  const stopping = new AbortController();
  let migrated = false;
  let member: ConsumerGroupMember | undefined;

  const app = createServiceApp({
    context,
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
  addAnalyticsRoutes(app, { store });

  const handler = createWordCountConsumer({
    eventLog,
    store,
    codec,
    deadLetterTopic: settings.deadLetterTopic,
    onStored({ stored, deadLettered }) {
      events.inc({ outcome: "stored" }, stored);
      if (deadLettered > 0) {
        events.inc({ outcome: "dead-lettered" }, deadLettered);
        logger.warn("Sent {count} unusable word-count events to {topic}", {
          count: deadLettered,
          topic: settings.deadLetterTopic,
        });
      }
    },
  });

  return {
    name: context.name,
    app,
    async start() {
      const retry = { logger, signal: stopping.signal };
      const applied = await retryUntilDone(
        () => migrate(database, { schema: ANALYTICS_SCHEMA, migrations: ANALYTICS_MIGRATIONS }),
        { ...retry, action: `migrate the ${ANALYTICS_SCHEMA} schema` },
      );
      migrated = true;
      logger.info("Schema {schema} up to date (applied {applied})", {
        schema: ANALYTICS_SCHEMA,
        applied: applied.length === 0 ? "none" : applied.join(", "),
      });
      for (const name of [topic, settings.deadLetterTopic]) {
        const spec = { name, partitions: config.wordCounts.partitions };
        await retryUntilDone(() => eventLog.ensureTopic(spec), {
          ...retry,
          action: `create topic ${name}`,
        });
      }
      member = await retryUntilDone(() =>
        eventLog.consume({
          groupId: settings.groupId,
          topics: [topic],
          fromBeginning: true,
          maxBatchSize: settings.maxBatchSize,
          partitionConcurrency: config.wordCounts.partitions,
          onBatchError(error, batch, attempt) {
            failures.inc();
            logger.error(
              "Cannot store {count} events of {topic}/{partition} (attempt {attempt}); retrying",
              {
                count: batch.records.length,
                topic: batch.topic,
                partition: batch.partition,
                attempt,
                error,
              },
            );
          },
        }, handler), { ...retry, action: `join consumer group ${settings.groupId}` });
      logger.info("Storing {topic} as group {group}", { topic, group: settings.groupId });
    },
    async stop() {
      stopping.abort();
      await member?.stop();
      logger.info("Stopped storing word counts; offsets committed");
    },
  };
}
