/** The stream service: mock tweets to the tweet topic (seed: twitter-to-kafka-service). */
import type { EventLog } from "../../shared/event_log/event_log.ts";
import { TracedEventLog } from "../../shared/event_log/traced_event_log.ts";
import type { TweetCodec } from "../../shared/events/tweet_event.ts";
import { createServiceApp } from "../../shared/http/service_app.ts";
import { STAGE_BUCKETS } from "../../shared/metrics/metrics.ts";
import type { Service, ServiceContext } from "../../shared/service/service.ts";
import type { AppConfig } from "../config.ts";
import type { RefreshableConfig } from "../../shared/config/refreshable_config.ts";
import { addStreamRoutes } from "./app.ts";
import { TweetEmitter } from "./emitter.ts";
import { MockTweets } from "./mock_tweets.ts";
import { SnowflakeIds } from "./tweet_ids.ts";
import { retryUntilDone } from "../../shared/async/retry.ts";
import { bearerAuth } from "../../shared/auth/bearer_auth.ts";
import type { JwtVerifier } from "../../shared/auth/jwt_verifier.ts";

export interface StreamDependencies {
  readonly config: AppConfig;
  readonly context: ServiceContext;
  readonly eventLog: EventLog;
  readonly codec: TweetCodec;
  /** Verifies access tokens for the audience `stream`. */
  readonly verifier: JwtVerifier;
  /** The live configuration: the rate and keywords follow it. */
  readonly configuration?: RefreshableConfig<AppConfig>;
}

export function createStreamService(deps: StreamDependencies): Service {
  const { config, context, codec, verifier } = deps;
  const eventLog = new TracedEventLog(deps.eventLog, context.tracer);
  const settings = config.stream;
  const workerId = settings.workerId >= 0 ? settings.workerId : Math.floor(Math.random() * 1024);
  const tweets = new MockTweets({
    keywords: settings.keywords,
    minWords: settings.minWords,
    maxWords: settings.maxWords,
    users: settings.users,
    ids: new SnowflakeIds(workerId),
  });
  const produced = context.metrics.counter(
    "stream_tweets_produced_total",
    "Tweets acknowledged by the event log.",
  );
  // Where a batch's time goes before the log has it (the indexer times the rest).
  const batchSteps = context.metrics.histogram(
    "stream_batch_step_seconds",
    "Time a produced batch spends in each step: encode (making and encoding its tweets), send " +
      "(until the event log acknowledged it).",
    STAGE_BUCKETS,
  );
  const emitter = new TweetEmitter({
    eventLog,
    encode: (tweet) => codec.encode(tweet),
    next: () => tweets.next(),
    topic: config.tweets.topic,
    ratePerSecond: settings.ratePerSecond,
    lingerMs: settings.lingerMs,
    maxSendsInFlight: settings.maxSendsInFlight,
    count: settings.count,
    logger: context.logger,
    onProduced(count, { encodeSeconds, sendSeconds }) {
      produced.inc({}, count);
      batchSteps.observe({ step: "encode" }, encodeSeconds);
      batchSteps.observe({ step: "send" }, sendSeconds);
    },
  });
  deps.configuration?.subscribe({
    apply(next, previous) {
      // Only a changed setting applies: a rate set through the API stays otherwise.
      if (next.stream.ratePerSecond !== previous.stream.ratePerSecond) {
        emitter.setRate(next.stream.ratePerSecond);
      }
      if (next.stream.keywords.join(",") !== previous.stream.keywords.join(",")) {
        tweets.setKeywords(next.stream.keywords);
      }
    },
  });
  const stopping = new AbortController();
  const app = createServiceApp({
    context,
    bodyLimitBytes: config.process.bodyLimitBytes,
    readiness: [{ name: "event-log", check: () => eventLog.ping() }],
  });
  // The stream's controls are the administrators', here as at the gateway.
  app.use("/api/*", bearerAuth({ verifier, anyRole: ["app_admin_role"] }));
  addStreamRoutes(app, { emitter, maxRatePerSecond: settings.maxRatePerSecond });

  return {
    name: context.name,
    app,
    async start() {
      const topic = { name: config.tweets.topic, partitions: config.tweets.partitions };
      await retryUntilDone(() => eventLog.ensureTopic(topic), {
        action: `create topic ${topic.name}`,
        logger: context.logger,
        signal: stopping.signal,
      });
      emitter.start(settings.autoStart);
      context.logger.info("Producing mock tweets to {topic} at {rate}/s (worker {workerId})", {
        topic: topic.name,
        rate: settings.ratePerSecond,
        workerId,
      });
    },
    async stop() {
      stopping.abort();
      await emitter.stop();
      context.logger.info("Stopped producing after {produced} tweets", {
        produced: emitter.status().produced,
      });
    },
  };
}
