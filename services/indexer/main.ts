/** The indexer service: tweet topic -> search index (seed: kafka-to-elastic-service). */
import { ConsumerService } from "../../shared/event_log/consumer_service.ts";
import type { EventLog } from "../../shared/event_log/event_log.ts";
import type { TweetCodec } from "../../shared/events/tweet_event.ts";
import { createServiceApp } from "../../shared/http/service_app.ts";
import type { SearchIndex } from "../../shared/search_index/search_index.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { AppConfig } from "../config.ts";
import { decodeTweet, indexTweets } from "./tweet_indexer.ts";

export interface IndexerDependencies {
  readonly config: AppConfig;
  readonly context: ServiceContext;
  readonly eventLog: EventLog;
  readonly index: SearchIndex;
  readonly codec: TweetCodec;
}

export function createIndexerService(deps: IndexerDependencies): Service {
  const { config, context, eventLog, index, codec } = deps;
  const { logger } = context;
  const settings = config.indexer;
  const topic = config.tweets.topic;
  const consumer = new ConsumerService({
    context,
    eventLog,
    groupId: settings.groupId,
    topics: [topic, settings.deadLetterTopic].map((name) => ({
      name,
      partitions: config.tweets.partitions,
    })),
    metricPrefix: "indexer",
    lagTopics: [topic],
  });
  const handler = consumer.deadLettering({
    deadLetterTopic: settings.deadLetterTopic,
    outcome: "indexed",
    decode: (record) => decodeTweet(codec, record),
    handle: (decoded) => indexTweets(index, decoded),
  });

  const app = createServiceApp({
    context,
    bodyLimitBytes: config.process.bodyLimitBytes,
    readiness: [
      { name: "event-log", check: () => eventLog.ping() },
      { name: "search-index", check: () => index.ping() },
    ],
  });

  return {
    name: context.name,
    app,
    async start() {
      await consumer.retry("open the search index", () => index.open());
      await consumer.consume({
        action: "index",
        topics: [topic],
        fromBeginning: true,
        maxBatchSize: settings.maxBatchSize,
        partitionConcurrency: settings.partitionConcurrency,
      }, handler);
      logger.info("Indexing {topic} as group {group}", { topic, group: settings.groupId });
    },
    async stop() {
      await consumer.stop();
      logger.info("Stopped indexing; offsets committed");
    },
  };
}
