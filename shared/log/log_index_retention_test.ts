/**
 * Log index retention: which daily indices expire, and their deletion from a
 * real Elasticsearch (`ELASTICSEARCH_URL`, by default the one `deno task
 * engines up elasticsearch` starts), in indices of this run's own prefix.
 */
import assert from "node:assert/strict";
import { Client } from "@elastic/elasticsearch";
import {
  assertElasticsearchReachable,
  deleteLogIndices,
  ELASTICSEARCH_URL,
  testLogIndexPrefix,
} from "../testing/elasticsearch.ts";
import { dailyIndex, indexPattern } from "./ecs_log_document.ts";
import { expiredLogIndices, LogIndexRetention } from "./log_index_retention.ts";

const NOW = Date.UTC(2026, 11, 2, 10, 30);

function statusLogger() {
  const lines: { level: string; message: string }[] = [];
  const at = (level: string) => (message: string) => void lines.push({ level, message });
  return { lines, logger: { info: at("info"), warn: at("warn"), error: at("error") } };
}

Deno.test("a daily log index expires once its day is the retention or more before today", () => {
  const names = [
    "logs-x-2026.12.02",
    "logs-x-2026.11.26",
    "logs-x-2026.11.25",
    "logs-x-2025.01.01",
    "logs-x-other",
    "logs-x-y-2020.01.01",
    "logs-xx-2020.01.01",
  ];
  assert.deepEqual(expiredLogIndices("logs-x", names, 7, NOW), [
    "logs-x-2025.01.01",
    "logs-x-2026.11.25",
  ]);
  assert.deepEqual(expiredLogIndices("logs-x", names, 1, NOW), [
    "logs-x-2025.01.01",
    "logs-x-2026.11.25",
    "logs-x-2026.11.26",
  ]);
});

Deno.test("retention refuses a retention or interval that is not a positive integer", () => {
  const client = new Client({ node: ELASTICSEARCH_URL });
  const { logger } = statusLogger();
  assert.throws(() => new LogIndexRetention(client, { logger, retentionDays: 0 }), /retentionDays/);
  assert.throws(() => new LogIndexRetention(client, { logger, intervalMs: 1.5 }), /intervalMs/);
});

Deno.test("retention deletes the expired daily indices from Elasticsearch and keeps the others", async () => {
  await assertElasticsearchReachable();
  const client = new Client({ node: ELASTICSEARCH_URL });
  const indexPrefix = testLogIndexPrefix();
  const { lines, logger } = statusLogger();
  const today = dailyIndex(indexPrefix, NOW);
  const recent = dailyIndex(indexPrefix, NOW - 2 * 86_400_000);
  const old = dailyIndex(indexPrefix, NOW - 3 * 86_400_000);
  const older = dailyIndex(indexPrefix, NOW - 400 * 86_400_000);
  const retention = new LogIndexRetention(client, {
    logger,
    indexPrefix,
    retentionDays: 3,
    now: () => NOW,
  });
  try {
    for (const index of [today, recent, old, older, `${indexPrefix}-notes`]) {
      await client.indices.create({ index });
    }
    assert.deepEqual(await retention.prune(), [older, old]);
    const left = await client.indices.get({ index: indexPattern(indexPrefix) });
    assert.deepEqual(Object.keys(left).sort(), [recent, today, `${indexPrefix}-notes`].sort());
    assert.deepEqual(lines.map((line) => line.level), ["info"]);
    assert.deepEqual(await retention.prune(), []);
  } finally {
    await retention.close();
    await deleteLogIndices(client, indexPrefix);
    await client.close();
  }
});

Deno.test("retention reports an unreachable Elasticsearch and keeps going", async () => {
  const client = new Client({ node: "http://127.0.0.1:9", maxRetries: 0, requestTimeout: 1000 });
  const { lines, logger } = statusLogger();
  const retention = new LogIndexRetention(client, { logger, indexPrefix: "logs-unreachable" });
  try {
    assert.deepEqual(await retention.prune(), []);
    assert.deepEqual(lines.map((line) => line.level), ["warn"]);
  } finally {
    await retention.close();
    await client.close();
  }
});
