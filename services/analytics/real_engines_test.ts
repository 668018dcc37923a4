/**
 * The analytics service on the real engines: Kafka (KAFKA_BROKERS,
 * 127.0.0.1:19092 by default) and PostgreSQL (DATABASE_URL, 127.0.0.1:5432),
 * wired by the infrastructure exactly as `main.ts analytics` wires them. The
 * test uses a topic, a consumer group and a database of its own, and removes
 * them afterwards; it fails, never skips, when an engine is down.
 */
import assert from "node:assert/strict";
import { connectPostgres, DATABASE_URL } from "../../shared/database/database_contract.ts";
import { createKafkaClient } from "../../shared/event_log/kafka_client.ts";
import { loadWordCountCodec, type WordCountEvent } from "../../shared/events/word_count_event.ts";
import { serviceLogger } from "../../shared/log/log.ts";
import type { Service } from "../../shared/service/service.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { createTestIssuer } from "../../shared/testing/test_issuer.ts";
import { waitFor } from "../../shared/testing/wait.ts";
import { loadConfig } from "../config.ts";
import { Infrastructure } from "../infrastructure.ts";
import { createAnalyticsService } from "./main.ts";

const BROKERS = Deno.env.get("KAFKA_BROKERS") ?? "127.0.0.1:19092";
const T0 = Date.UTC(2026, 10, 24, 10, 0, 0);

Deno.test({
  name: "analytics on Kafka and PostgreSQL stores every update once, across a restart",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const run = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
    const server = await connectPostgres();
    const databaseName = `analytics_e2e_${run}`;
    await server.unsafe(`CREATE DATABASE ${databaseName}`);
    const databaseUrl = new URL(DATABASE_URL);
    databaseUrl.pathname = `/${databaseName}`;
    const config = loadConfig({
      EVENT_LOG: "kafka",
      KAFKA_BROKERS: BROKERS,
      WORD_COUNT_TOPIC: `word-counts-e2e-${run}`,
      ANALYTICS_DEAD_LETTER_TOPIC: `word-counts-e2e-${run}.dlq`,
      ANALYTICS_GROUP_ID: `analytics-e2e-${run}`,
      ANALYTICS_DATABASE_URL: databaseUrl.href,
      ANALYTICS_HISTORY_PER_WORD: "3",
    });
    const infrastructure = new Infrastructure(
      config,
      serviceLogger("test", "analytics-e2e"),
    );
    const eventLog = await infrastructure.eventLog();
    const database = await infrastructure.database("analytics", config.analytics.databaseUrl);
    const codec = await loadWordCountCodec();
    const issuer = await createTestIssuer();
    const reader = await issuer.authorization({ audience: "analytics" });
    const topic = config.wordCounts.topic;
    const running = new Set<Service>();
    const stop = async (service: Service) => {
      running.delete(service);
      await service.stop();
    };
    const analytics = async (name: string) => {
      const service = createAnalyticsService({
        config,
        context: testContext(name),
        eventLog,
        database,
        codec,
        verifier: issuer.verifier("analytics"),
      });
      running.add(service);
      await service.start();
      return service;
    };
    const send = (events: readonly WordCountEvent[]) =>
      eventLog.send(
        topic,
        events.map((update) => ({
          key: new TextEncoder().encode(update.word),
          value: codec.encode(update),
        })),
      );
    const event = (word: string, count: number): WordCountEvent => ({
      word,
      count: BigInt(count),
      updatedAt: T0 + count * 1000,
    });
    const noLag = () =>
      waitFor(
        "no lag in the analytics group",
        async () => (await eventLog.lag(config.analytics.groupId, topic)).every((p) => p.lag === 0),
        60_000,
      );
    const state = () =>
      database.query(
        `SELECT 'latest' AS kind, word, count, updated_at FROM analytics.word_counts
          UNION ALL
         SELECT 'history', word, count, updated_at FROM analytics.word_count_history
          ORDER BY kind, word, count`,
      );

    try {
      await eventLog.ping().catch((cause) => {
        throw new Error(
          `Kafka is not reachable at ${BROKERS}: start it with \`deno task engines up kafka\``,
          { cause },
        );
      });
      const first = await analytics("analytics-1");
      const words = ["kafka", "java", "spring", "\u00e9t\u00e9"];
      const updates = [1, 2, 3, 4, 5].flatMap((count) => words.map((word) => event(word, count)));
      await send(updates);
      await eventLog.send(topic, [{ key: null, value: new TextEncoder().encode("not avro") }]);
      await noLag();

      const get = async (service: Service, path: string) => {
        const response = await service.app.request(path, { headers: reader });
        assert.equal(response.status, 200, path);
        return await response.json();
      };
      assert.deepEqual(await get(first, "/api/v1/analytics/words/Kafka"), {
        word: "kafka",
        count: 5,
        updatedAt: "2026-11-24T10:00:05.000Z",
      });
      assert.deepEqual(
        (await get(first, "/api/v1/analytics/words/kafka/history")).history,
        [3, 4, 5].map((count) => ({
          count,
          updatedAt: new Date(T0 + count * 1000).toISOString(),
        })),
      );
      assert.deepEqual(
        (await get(first, "/api/v1/analytics/top?limit=2")).words.map((w: { word: string }) =>
          w.word
        ),
        ["java", "kafka"],
      );
      const deadLetters = await eventLog.lag(`dlq-${run}`, config.analytics.deadLetterTopic);
      assert.equal(deadLetters.reduce((sum, p) => sum + p.highWatermark, 0), 1, "one dead letter");
      const stored = await state();
      assert.equal(stored.length, words.length * 4, "latest plus 3 history rows per word");
      await stop(first);

      // A new instance over the same database: migrations are done, and every
      // update delivered again (plus older ones) changes nothing.
      const second = await analytics("analytics-2");
      await send([...updates].reverse());
      await noLag();
      assert.deepEqual(await state(), stored);
      assert.equal((await get(second, "/api/v1/analytics/words/spring")).count, 5);
      const ready = await second.app.request("/ready");
      assert.equal(ready.status, 200, await ready.text());
      await stop(second);
    } finally {
      for (const service of running) await stop(service).catch(() => {});
      await infrastructure.close();
      const admin = createKafkaClient({ brokers: BROKERS.split(",") }).admin();
      try {
        await admin.connect();
        await admin.deleteTopics({ topics: [topic, config.analytics.deadLetterTopic] });
      } catch {
        // Unique names keep a leftover topic from disturbing another run.
      } finally {
        await admin.disconnect();
      }
      await server.unsafe(`DROP DATABASE IF EXISTS ${databaseName} WITH (FORCE)`);
      await server.end();
    }
  },
});
