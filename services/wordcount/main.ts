/** The wordcount service: exactly-once word counts with interactive queries (seed: kafka-streams-service). */
import { bearerAuth } from "../../shared/auth/bearer_auth.ts";
import type { JwtVerifier } from "../../shared/auth/jwt_verifier.ts";
import type { ServiceDiscovery } from "../../shared/discovery/service_discovery.ts";
import { ConsumerService } from "../../shared/event_log/consumer_service.ts";
import type { EventLog } from "../../shared/event_log/event_log.ts";
import type { TweetCodec } from "../../shared/events/tweet_event.ts";
import type { WordCountCodec } from "../../shared/events/word_count_event.ts";
import { createServiceApp } from "../../shared/http/service_app.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { AppConfig } from "../config.ts";
import { addWordCountRoutes, PARTITIONS_METADATA } from "./app.ts";
import { parseWindowSize, type WindowSize, WordCountProcessor } from "./word_counts.ts";

export interface WordCountDependencies {
  readonly config: AppConfig;
  readonly context: ServiceContext;
  readonly eventLog: EventLog;
  readonly tweetCodec: TweetCodec;
  readonly wordCountCodec: WordCountCodec;
  /** Finds the other instances and the partitions they answer for. */
  readonly discovery: ServiceDiscovery;
  /** Verifies access tokens for the audience `wordcount`. */
  readonly verifier: JwtVerifier;
}

/** Restores take from milliseconds (a fresh topic) to minutes (a long changelog). */
const RESTORE_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300];

export function createWordCountService(deps: WordCountDependencies): Service {
  const { config, context } = deps;
  const { logger, metrics } = context;
  const settings = config.wordcount;
  // loadConfig has validated every size.
  const windows: WindowSize[] = settings.windows.map((name) => parseWindowSize(name)!);
  const topics = {
    tweets: config.tweets.topic,
    repartition: settings.repartitionTopic,
    changelog: settings.changelogTopic,
    wordCounts: config.wordCounts.topic,
    partitions: settings.partitions,
  };
  const consumer = new ConsumerService({
    context,
    eventLog: deps.eventLog,
    groupId: settings.groupId,
    topics: [
      { name: topics.tweets, partitions: config.tweets.partitions },
      { name: topics.repartition, partitions: settings.partitions },
      { name: topics.changelog, partitions: settings.partitions, compacted: true },
      { name: topics.wordCounts, partitions: config.wordCounts.partitions },
    ],
    metricPrefix: "wordcount",
    lagTopics: [topics.tweets, topics.repartition],
  });
  const eventLog = consumer.eventLog;
  const records = metrics.counter(
    "wordcount_records_total",
    "Records consumed and committed by the word-count processor (tweets and repartition records).",
  );
  const commits = metrics.counter("wordcount_commits_total", "Transactions committed.");
  const failures = metrics.counter(
    "wordcount_failures_total",
    "Aborted transactions, failed restores and undecodable tweets, by kind.",
  );
  const restoreSeconds = metrics.histogram(
    "wordcount_restore_duration_seconds",
    "Time to restore one partition's state store from the changelog.",
    RESTORE_BUCKETS,
  );
  metrics.gauge(
    "wordcount_owned_partitions",
    "Repartition partitions whose state this instance has restored and answers for.",
    () => [{ labels: {}, value: processor.ownedPartitions().length }],
  );
  const publishers: ((metadata: Readonly<Record<string, string>>) => void)[] = [];
  const metadata = () => ({ [PARTITIONS_METADATA]: processor.ownedPartitions().join(",") });

  const processor: WordCountProcessor = new WordCountProcessor({
    eventLog,
    topics,
    windows,
    tweetCodec: deps.tweetCodec,
    wordCountCodec: deps.wordCountCodec,
    onUndecodable(record, error) {
      failures.inc({ kind: "undecodable-tweet" });
      logger.warn("Cannot decode tweet {topic}/{partition}@{offset}; it counts no words", {
        topic: record.topic,
        partition: record.partition,
        offset: record.offset,
        error,
      });
    },
    onRestored(partition, entries, ms) {
      restoreSeconds.observe({}, ms / 1000);
      logger.info("Restored partition {partition}: {entries} words in {ms} ms", {
        partition,
        entries,
        ms: Math.round(ms),
      });
    },
    onOwnershipChange(partitions) {
      logger.info("Answering for partitions {partitions}", { partitions: partitions.join(",") });
      for (const publish of publishers) publish(metadata());
    },
  });

  const app = createServiceApp({
    context,
    description: "The live word counts: each word's all-time count and its counts in the " +
      "current windows, and the trending words, from the instances' restored partitions.",
    bodyLimitBytes: config.process.bodyLimitBytes,
    readiness: [
      { name: "event-log", check: () => eventLog.ping() },
      {
        name: "state",
        check() {
          const member = consumer.member;
          if (member === undefined) {
            return Promise.reject(new Error("not a member of the consumer group yet"));
          }
          const owned = new Set(processor.ownedPartitions());
          const restoring = member.assignment()
            .filter(({ topic, partition }) => topic === topics.repartition && !owned.has(partition))
            .map(({ partition }) => partition);
          return restoring.length === 0
            ? Promise.resolve()
            : Promise.reject(new Error(`restoring partitions ${restoring.join(",")}`));
        },
      },
    ],
  });
  app.use("/api/*", bearerAuth({ verifier: deps.verifier }));
  addWordCountRoutes(app, {
    processor,
    windows,
    partitions: settings.partitions,
    discovery: deps.discovery,
    service: context.name,
    instanceId: context.instanceId,
    tracer: context.tracer,
  });

  return {
    name: context.name,
    app,
    publishMetadata(publish) {
      publishers.push(publish);
      publish(metadata());
    },
    async start() {
      await consumer.consumeTransactional({
        topics: [topics.tweets, topics.repartition],
        transactionalId: `${settings.groupId}-${context.instanceId}`,
        commitIntervalMs: settings.commitIntervalMs,
        maxBatchSize: settings.maxBatchSize,
        onAssigned: (partitions) => processor.restore(partitions),
        onRevoked: (partitions) => processor.revoke(partitions),
        beforeCommit: (transaction) => processor.flush(transaction),
        onCommitted(consumed) {
          commits.inc();
          records.inc({}, consumed);
        },
        onError(error, action) {
          failures.inc({ kind: "transaction" });
          logger.warn("Word counts: {action}; recovering from the committed state", {
            action,
            error,
          });
        },
      }, (batch, transaction) => processor.handle(batch, transaction));
      logger.info("Counting words of {topic} as group {group}", {
        topic: topics.tweets,
        group: settings.groupId,
      });
    },
    async stop() {
      await consumer.stop();
      logger.info("Stopped counting words; the last transaction is committed");
    },
  };
}
