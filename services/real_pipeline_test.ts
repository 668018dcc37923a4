/**
 * End to end on the real engines (Kafka and Elasticsearch, started by
 * `deno task test`): 10,000 tweets produced by the stream service are indexed
 * exactly once each, even though the indexer is stopped in the middle and a
 * new instance of it takes over.
 */
import assert from "node:assert/strict";
import { serviceLogger } from "../shared/log/log.ts";
import type { SearchCursor } from "../shared/search_index/search_index.ts";
import type { Service } from "../shared/service/service.ts";
import { testContext } from "../shared/testing/test_context.ts";
import { waitFor } from "../shared/testing/wait.ts";
import { configureTracing } from "../shared/trace/tracing.ts";
import { loadConfig } from "./config.ts";
import { createIndexerService } from "./indexer/main.ts";
import { Infrastructure } from "./infrastructure.ts";
import { createQueryService } from "./query/main.ts";
import { fixedTokens, superUser } from "./query/_testing.ts";
import { StaticDiscovery } from "../shared/discovery/service_discovery.ts";
import { createTestIssuer } from "../shared/testing/test_issuer.ts";
import { createStreamService } from "./stream/main.ts";

const COUNT = 10_000;
const RESTART_AFTER = 3_000;

Deno.test({
  name:
    "pipeline on Kafka and Elasticsearch indexes 10,000 tweets once each across an indexer restart",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    configureTracing();
    const run = crypto.randomUUID().slice(0, 8);
    const config = loadConfig({
      EVENT_LOG: "kafka",
      SEARCH_INDEX: "elasticsearch",
      KAFKA_BROKERS: Deno.env.get("KAFKA_BROKERS") ?? "127.0.0.1:19092",
      ELASTICSEARCH_URL: Deno.env.get("ELASTICSEARCH_URL") ?? "http://127.0.0.1:9200",
      TWEET_TOPIC: `tweets-e2e-${run}`,
      INDEXER_DEAD_LETTER_TOPIC: `tweets-e2e-${run}.dlq`,
      INDEXER_GROUP_ID: `indexer-e2e-${run}`,
      ELASTICSEARCH_INDEX: `tweets-e2e-${run}`,
      STREAM_COUNT: String(COUNT),
      STREAM_RATE_PER_SECOND: "2500",
    });
    const infrastructure = new Infrastructure(config, serviceLogger("test", "e2e"));
    const eventLog = await infrastructure.eventLog();
    const index = await infrastructure.searchIndex();
    const codec = await infrastructure.tweetCodec();
    await eventLog.ping().catch((cause) => {
      throw new Error(
        "Kafka is not reachable at 127.0.0.1:19092: start it with `deno task engines up kafka`",
        { cause },
      );
    });
    await index.open().catch((cause) => {
      throw new Error(
        "Elasticsearch is not reachable at http://127.0.0.1:9200: start it with " +
          "`deno task engines up elasticsearch`",
        { cause },
      );
    });
    const indexer = (name: string): Service =>
      createIndexerService({ config, context: testContext(name), eventLog, index, codec });
    const issuer = await createTestIssuer();
    const stream = createStreamService({
      config,
      context: testContext("stream"),
      eventLog,
      codec,
      verifier: issuer.verifier("stream"),
    });
    const query = createQueryService({
      config,
      context: testContext("query"),
      index,
      verifier: issuer.verifier("query"),
      database: await infrastructure.database("query", ""),
      discovery: new StaticDiscovery([]),
      tokens: fixedTokens(),
    });
    const admin = await issuer.authorization({ audience: "stream", roles: ["app_admin_role"] });

    try {
      await query.start();
      const first = indexer("indexer-1");
      await first.start();
      await stream.start();
      await waitFor(`${RESTART_AFTER} indexed tweets`, async () => {
        await index.refresh();
        return (await index.count()) >= RESTART_AFTER;
      }, 120_000);
      await first.stop();
      const indexedBeforeRestart = await index.count();
      assert.ok(indexedBeforeRestart < COUNT, "the restart happens in the middle");

      const second = indexer("indexer-2");
      await second.start();
      await waitFor(`${COUNT} produced tweets`, async () => {
        const status = await (await stream.app.request("/api/v1/stream", { headers: admin }))
          .json();
        return status.state === "completed";
      }, 120_000);
      await waitFor(`${COUNT} indexed tweets`, async () => {
        await index.refresh();
        return (await index.count()) === COUNT;
      }, 120_000);
      await waitFor(
        "no lag in the indexer's group",
        async () =>
          (await eventLog.lag(config.indexer.groupId, config.tweets.topic)).every((partition) =>
            partition.lag === 0
          ),
        60_000,
      );
      await second.stop();

      // The known set: every tweet in the topic, read back by a new group.
      const produced = new Set<string>();
      const reader = await eventLog.consume(
        { groupId: `reader-${run}`, topics: [config.tweets.topic] },
        (batch) => {
          for (const record of batch.records) {
            produced.add(codec.decode(record.value).id.toString());
          }
          return Promise.resolve();
        },
      );
      await waitFor(`${COUNT} tweets read back`, () => produced.size === COUNT, 120_000);
      await reader.stop();

      const indexed: string[] = [];
      let after: SearchCursor | undefined;
      do {
        const page = await index.search({ size: 1000, ...(after ? { after } : {}) });
        indexed.push(...page.documents.map((document) => document.id));
        after = page.next;
      } while (after !== undefined);
      assert.equal(indexed.length, COUNT, "every document once");
      assert.equal(new Set(indexed).size, COUNT, "no duplicates");
      assert.deepEqual(new Set(indexed), produced, "indexed == produced");

      const response = await query.app.request("/api/v2/tweets?text=kafka&size=5", {
        headers: await superUser(issuer),
      });
      assert.equal(response.status, 200);
      const body = await response.json();
      assert.ok(body.page.total > 0);
      assert.ok(body.data.every((tweet: { text: string }) => /\bKafka\b/.test(tweet.text)));
    } finally {
      await stream.stop();
      await infrastructure.close();
      const url = `${config.searchIndex.elasticsearchUrl}/${config.searchIndex.elasticsearchIndex}`;
      await (await fetch(url, { method: "DELETE" })).body?.cancel();
    }
  },
});
