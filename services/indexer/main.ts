/** The indexer service: tweet topic -> search index (seed: kafka-to-elastic-service). */
import { retryUntilDone } from "../../shared/async/retry.ts";
import type { ConsumerGroupMember, EventLog } from "../../shared/event_log/event_log.ts";
import type { TweetCodec } from "../../shared/events/tweet_event.ts";
import { registerLagGauge } from "../../shared/event_log/lag_gauge.ts";
import { createServiceApp } from "../../shared/http/service_app.ts";
import type { SearchIndex } from "../../shared/search_index/search_index.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { AppConfig } from "../config.ts";
import { createTweetIndexer } from "./tweet_indexer.ts";

export interface IndexerDependencies {
  readonly config: AppConfig;
  readonly context: ServiceContext;
  readonly eventLog: EventLog;
  readonly index: SearchIndex;
  readonly codec: TweetCodec;
}

export function createIndexerService(deps: IndexerDependencies): Service {
  const { config, context, eventLog, index, codec } = deps;
  const { logger, metrics } = context;
  const settings = config.indexer;
  const topic = config.tweets.topic;
  const events = metrics.counter("indexer_events_total", "Tweet events handled, by outcome.");
  const failures = metrics.counter(
    "indexer_batch_failures_total",
    "Batches whose indexing failed and will be redelivered.",
  );
  registerLagGauge(metrics, {
    eventLog,
    groupId: settings.groupId,
    topic,
  });
  const stopping = new AbortController();
  let member: ConsumerGroupMember | undefined;

  const app = createServiceApp({
    context,
    bodyLimitBytes: config.process.bodyLimitBytes,
    readiness: [
      { name: "event-log", check: () => eventLog.ping() },
      { name: "search-index", check: () => index.ping() },
    ],
  });

  const handler = createTweetIndexer({
    eventLog,
    index,
    codec,
    deadLetterTopic: settings.deadLetterTopic,
    tracer: context.tracer,
    onIndexed({ indexed, deadLettered }) {
      events.inc({ outcome: "indexed" }, indexed);
      if (deadLettered > 0) {
        events.inc({ outcome: "dead-lettered" }, deadLettered);
        logger.warn("Sent {count} undecodable events to {topic}", {
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
      await retryUntilDone(() => index.open(), { ...retry, action: "open the search index" });
      for (const name of [topic, settings.deadLetterTopic]) {
        const spec = { name, partitions: config.tweets.partitions };
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
          partitionConcurrency: settings.partitionConcurrency,
          onBatchError(error, batch, attempt) {
            failures.inc();
            logger.error(
              "Cannot index {count} events of {topic}/{partition} (attempt {attempt}); retrying",
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
      logger.info("Indexing {topic} as group {group}", { topic, group: settings.groupId });
    },
    async stop() {
      stopping.abort();
      await member?.stop();
      logger.info("Stopped indexing; offsets committed");
    },
  };
}
