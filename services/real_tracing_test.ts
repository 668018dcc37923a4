/**
 * One tweet is one trace, on the real engines: a tweet produced by the stream
 * service goes through Kafka to the indexer (Elasticsearch) and to wordcount,
 * whose repartition topic and word-count updates carry it on to analytics
 * (PostgreSQL); Zipkin (ZIPKIN_URL, http://127.0.0.1:9411 by default) then
 * holds one trace with spans of all four, each under its own service name,
 * exported as main.ts exports them, with the Elasticsearch bulk request and
 * the PostgreSQL write as client spans under the writes of the batch.
 * Topics, groups, the index and the database are the test's own.
 */
import assert from "node:assert/strict";
import { ZipkinExporter } from "@opentelemetry/exporter-zipkin";
import { connectPostgres, DATABASE_URL } from "../shared/database/database_contract.ts";
import { StaticDiscovery } from "../shared/discovery/service_discovery.ts";
import { createKafkaClient } from "../shared/event_log/kafka_client.ts";
import { serviceLogger } from "../shared/log/log.ts";
import type { Service } from "../shared/service/service.ts";
import { testContext } from "../shared/testing/test_context.ts";
import { createTestIssuer } from "../shared/testing/test_issuer.ts";
import { waitFor } from "../shared/testing/wait.ts";
import { configureTracing } from "../shared/trace/tracing.ts";
import { createAnalyticsService } from "./analytics/main.ts";
import { loadConfig } from "./config.ts";
import { createIndexerService } from "./indexer/main.ts";
import { Infrastructure } from "./infrastructure.ts";
import { createStreamService } from "./stream/main.ts";
import { createWordCountService } from "./wordcount/main.ts";

const ZIPKIN_URL = Deno.env.get("ZIPKIN_URL") ?? "http://127.0.0.1:9411";
const BROKERS = Deno.env.get("KAFKA_BROKERS") ?? "127.0.0.1:19092";
const ELASTICSEARCH_URL = Deno.env.get("ELASTICSEARCH_URL") ?? "http://127.0.0.1:9200";

/** A span as Zipkin's v2 API returns it. */
interface ZipkinSpan {
  readonly traceId: string;
  readonly id: string;
  readonly parentId?: string;
  readonly name: string;
  readonly kind?: string;
  readonly localEndpoint?: { readonly serviceName?: string };
  readonly tags?: Record<string, string>;
}

async function zipkinTrace(traceId: string): Promise<ZipkinSpan[]> {
  const response = await fetch(`${ZIPKIN_URL}/api/v2/trace/${traceId}`);
  if (response.status === 404) {
    await response.body?.cancel();
    return [];
  }
  assert.equal(response.status, 200, `Zipkin's trace ${traceId}`);
  return await response.json();
}

Deno.test({
  name: "a tweet from stream is one trace in Zipkin with stream, indexer, wordcount and analytics",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const health = await fetch(`${ZIPKIN_URL}/health`).catch((cause) => {
      throw new Error(
        `Zipkin is not reachable at ${ZIPKIN_URL}: start it with \`deno task engines up zipkin\``,
        { cause },
      );
    });
    await health.body?.cancel();
    // As main.ts exports: every service's batching queue to Zipkin.
    configureTracing({
      export: {
        exporter: new ZipkinExporter({ url: `${ZIPKIN_URL}/api/v2/spans` }),
        scheduledDelayMs: 200,
      },
    });
    const contexts = {
      stream: testContext("stream"),
      indexer: testContext("indexer"),
      wordcount: testContext("wordcount"),
      analytics: testContext("analytics"),
    };
    const run = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
    const server = await connectPostgres();
    const databaseName = `tracing_e2e_${run}`;
    await server.unsafe(`CREATE DATABASE ${databaseName}`);
    const databaseUrl = new URL(DATABASE_URL);
    databaseUrl.pathname = `/${databaseName}`;
    const topics = {
      tweets: `tweets-trace-${run}`,
      tweetsDeadLetters: `tweets-trace-${run}.dlq`,
      repartition: `repartition-trace-${run}`,
      changelog: `changelog-trace-${run}`,
      wordCounts: `word-counts-trace-${run}`,
      wordCountsDeadLetters: `word-counts-trace-${run}.dlq`,
    };
    const config = loadConfig({
      EVENT_LOG: "kafka",
      KAFKA_BROKERS: BROKERS,
      SEARCH_INDEX: "elasticsearch",
      ELASTICSEARCH_URL,
      ELASTICSEARCH_INDEX: `tweets-trace-${run}`,
      TWEET_TOPIC: topics.tweets,
      INDEXER_DEAD_LETTER_TOPIC: topics.tweetsDeadLetters,
      INDEXER_GROUP_ID: `indexer-trace-${run}`,
      WORDCOUNT_REPARTITION_TOPIC: topics.repartition,
      WORDCOUNT_CHANGELOG_TOPIC: topics.changelog,
      WORDCOUNT_GROUP_ID: `wordcount-trace-${run}`,
      WORDCOUNT_COMMIT_INTERVAL_MS: "200",
      WORD_COUNT_TOPIC: topics.wordCounts,
      ANALYTICS_DEAD_LETTER_TOPIC: topics.wordCountsDeadLetters,
      ANALYTICS_GROUP_ID: `analytics-trace-${run}`,
      ANALYTICS_DATABASE_URL: databaseUrl.href,
      STREAM_COUNT: "1",
      STREAM_AUTO_START: "false",
    });
    const infrastructure = new Infrastructure(
      config,
      serviceLogger("test", "tracing-e2e"),
    );
    const eventLog = await infrastructure.eventLog();
    const index = await infrastructure.searchIndex(contexts.indexer.tracer);
    const issuer = await createTestIssuer();
    const tweetCodec = await infrastructure.tweetCodec();
    const wordCountCodec = await infrastructure.wordCountCodec();
    const services: Service[] = [
      createStreamService({
        config,
        context: contexts.stream,
        eventLog,
        codec: tweetCodec,
        verifier: issuer.verifier("stream"),
      }),
      createIndexerService({
        config,
        context: contexts.indexer,
        eventLog,
        index,
        codec: tweetCodec,
      }),
      createWordCountService({
        config,
        context: contexts.wordcount,
        eventLog,
        tweetCodec,
        wordCountCodec,
        discovery: new StaticDiscovery([]),
        verifier: issuer.verifier("wordcount"),
      }),
      createAnalyticsService({
        config,
        context: contexts.analytics,
        eventLog,
        database: await infrastructure.database(
          "analytics",
          config.analytics.databaseUrl,
          contexts.analytics.tracer,
        ),
        codec: wordCountCodec,
        verifier: issuer.verifier("analytics"),
      }),
    ];
    const [stream] = services;
    try {
      await eventLog.ping().catch((cause) => {
        throw new Error(
          `Kafka is not reachable at ${BROKERS}: start it with \`deno task engines up kafka\``,
          { cause },
        );
      });
      await index.open().catch((cause) => {
        throw new Error(
          `Elasticsearch is not reachable at ${ELASTICSEARCH_URL}: start it with ` +
            "`deno task engines up elasticsearch`",
          { cause },
        );
      });
      for (const service of services) await service.start();
      const admin = await issuer.authorization({ audience: "stream", roles: ["app_admin_role"] });
      const resumed = await stream!.app.request("/api/v1/stream/resume", {
        method: "POST",
        headers: admin,
      });
      assert.equal(resumed.status, 200);
      await resumed.body?.cancel();

      // The tweet's trace id, as its record in Kafka carries it.
      let traceparent: string | undefined;
      const reader = await eventLog.consume(
        { groupId: `reader-trace-${run}`, topics: [topics.tweets] },
        (batch) => {
          traceparent ??= batch.records[0]?.headers.traceparent;
          return Promise.resolve();
        },
      );
      await waitFor("the tweet in Kafka", () => traceparent !== undefined, 60_000);
      await reader.stop();
      const traceId = traceparent!.split("-")[1]!;

      const expected = [
        ["stream", `send ${topics.tweets}`],
        ["indexer", `process ${topics.tweets}`],
        ["indexer", "index tweets"],
        ["wordcount", `process ${topics.tweets}`],
        ["wordcount", `send ${topics.repartition}`],
        ["wordcount", `process ${topics.repartition}`],
        ["wordcount", `send ${topics.wordCounts}`],
        ["analytics", `process ${topics.wordCounts}`],
        ["analytics", "store word counts"],
      ];
      const has = (spans: ZipkinSpan[], [service, name]: string[]) =>
        spans.some((span) =>
          span.localEndpoint?.serviceName === service && span.name === name!.toLowerCase()
        );
      let spans: ZipkinSpan[] = [];
      // Spans arrive one by one, a child often before its parent (it ends first):
      // the trace is whole once every expected span is there and every parent too.
      const orphans = () => {
        const ids = new Set(spans.map((span) => span.id));
        return spans.filter((span) => span.parentId !== undefined && !ids.has(span.parentId));
      };
      await waitFor("the whole trace in Zipkin", async () => {
        spans = await zipkinTrace(traceId);
        return expected.every((wanted) => has(spans, wanted)) && orphans().length === 0;
      }, 90_000).catch((error) => {
        const missing = expected.filter((wanted) => !has(spans, wanted));
        const parentless = orphans().map((span) => span.name);
        throw new Error(
          `Zipkin's trace ${traceId} lacks ${JSON.stringify(missing)} and the parents of ` +
            JSON.stringify(parentless),
          { cause: error },
        );
      });

      assert.deepEqual(
        new Set(spans.map((span) => span.localEndpoint?.serviceName)),
        new Set(["stream", "indexer", "wordcount", "analytics"]),
      );
      // One tree: a single root (the stream's send), every other span's parent in the trace.
      const roots = spans.filter((span) => span.parentId === undefined);
      assert.deepEqual(roots.map((span) => span.name), [`send ${topics.tweets}`.toLowerCase()]);
      assert.equal(roots[0]?.kind, "PRODUCER");
      const byName = (service: string, name: string) =>
        spans.filter((span) =>
          span.localEndpoint?.serviceName === service && span.name === name.toLowerCase()
        );
      // Each consumer span is the child of its topic's producer span.
      const [indexed] = byName("indexer", `process ${topics.tweets}`);
      assert.equal(indexed?.parentId, roots[0]?.id);
      assert.equal(indexed?.kind, "CONSUMER");
      assert.equal(indexed?.tags?.["messaging.system"], "kafka");
      // The engines' client spans sit under the batch-wide writes.
      const [bulkWrite] = byName("indexer", "index tweets");
      assert.ok(
        spans.some((span) =>
          span.parentId === bulkWrite?.id && span.kind === "CLIENT" &&
          span.tags?.["db.system.name"] === "elasticsearch"
        ),
        "the Elasticsearch bulk request under the indexer's write",
      );
      const stores = new Set(byName("analytics", "store word counts").map((span) => span.id));
      assert.ok(
        spans.some((span) =>
          stores.has(span.parentId ?? "") && span.tags?.["db.system.name"] === "postgresql"
        ),
        "a PostgreSQL call under analytics' write",
      );
      const updates = new Set(byName("wordcount", `send ${topics.wordCounts}`).map((s) => s.id));
      for (const stored of byName("analytics", `process ${topics.wordCounts}`)) {
        assert.ok(updates.has(stored.parentId!), "analytics continues a word-count update");
      }

      // Zipkin finds the trace by the stream's service name too.
      const search = new URL(`${ZIPKIN_URL}/api/v2/traces`);
      search.searchParams.set("serviceName", "stream");
      search.searchParams.set("spanName", `send ${topics.tweets}`);
      search.searchParams.set("limit", "10");
      const found: ZipkinSpan[][] = await (await fetch(search)).json();
      assert.deepEqual(found.map((trace) => trace[0]?.traceId), [traceId]);
    } finally {
      for (const service of services) await service.stop().catch(() => {});
      await infrastructure.close();
      configureTracing();
      const kafkaAdmin = createKafkaClient({ brokers: BROKERS.split(",") }).admin();
      try {
        await kafkaAdmin.connect();
        await kafkaAdmin.deleteTopics({ topics: Object.values(topics) });
      } catch {
        // Unique names keep a leftover topic from disturbing another run.
      } finally {
        await kafkaAdmin.disconnect();
      }
      await (await fetch(`${ELASTICSEARCH_URL}/${config.searchIndex.elasticsearchIndex}`, {
        method: "DELETE",
      })).body?.cancel();
      await server.unsafe(`DROP DATABASE IF EXISTS ${databaseName} WITH (FORCE)`);
      await server.end();
    }
  },
});
