/**
 * `deno task bench:pipeline [N]`: numbers, never a pass/fail, on the real
 * engines (brought up if needed):
 *  1. raw Elasticsearch bulk throughput for N tweet documents (the physical
 *     limit of the pipeline);
 *  2. pipeline throughput for N tweets, stream -> Kafka -> indexer ->
 *     Elasticsearch, each service in its own process as deployed, from the
 *     first produce until the last one is searchable;
 *  3. freshness: produce-to-searchable latency percentiles at a steady rate.
 * Elasticsearch keeps its default 1 s refresh: "searchable" means a search
 * finds it, never a forced refresh.
 */
import { serviceLogger } from "../../shared/log/log.ts";
import type { TweetDocument } from "../../shared/search_index/search_index.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { configureTracing } from "../../shared/trace/tracing.ts";
import { loadConfig } from "../../services/config.ts";
import { createIndexerService } from "../../services/indexer/main.ts";
import { Infrastructure } from "../../services/infrastructure.ts";
import { MockTweets } from "../../services/stream/mock_tweets.ts";
import { createStreamService } from "../../services/stream/main.ts";
import { SnowflakeIds } from "../../services/stream/tweet_ids.ts";
import { toDocument } from "../../services/indexer/tweet_indexer.ts";
import { ENGINES, engineUp, write } from "../engines/engines.ts";
import { SERVICE_PERMISSIONS } from "../dev.ts";

const MAIN = new URL("../../services/main.ts", import.meta.url).pathname;

const N = Number(Deno.args[0] ?? 50_000);
const FRESHNESS_RATE = 500;
const FRESHNESS_SECONDS = 20;
const BULK_SIZE = 500;

function configFor(run: string, extra: Record<string, string>) {
  return loadConfig({
    EVENT_LOG: "kafka",
    SEARCH_INDEX: "elasticsearch",
    KAFKA_BROKERS: Deno.env.get("KAFKA_BROKERS") ?? "127.0.0.1:19092",
    ELASTICSEARCH_URL: Deno.env.get("ELASTICSEARCH_URL") ?? "http://127.0.0.1:9200",
    TWEET_TOPIC: `bench-${run}`,
    INDEXER_DEAD_LETTER_TOPIC: `bench-${run}.dlq`,
    INDEXER_GROUP_ID: `bench-indexer-${run}`,
    ELASTICSEARCH_INDEX: `bench-${run}`,
    INDEXER_MAX_BATCH_SIZE: String(BULK_SIZE),
    ...extra,
  });
}

function progress(label: string, done: number, total: number, startedMs: number): void {
  const seconds = (performance.now() - startedMs) / 1000;
  write(`  ${label}: ${done}/${total} after ${seconds.toFixed(1)} s\n`);
}

/** Polls the count without forcing a refresh until `target` documents are searchable. */
async function untilSearchable(
  count: () => Promise<number>,
  target: number,
  label: string,
  startedMs: number,
): Promise<number> {
  let lastReport = 0;
  while (true) {
    const seen = await count();
    if (seen >= target) return performance.now();
    if (performance.now() - lastReport > 2000) {
      progress(label, seen, target, startedMs);
      lastReport = performance.now();
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function deleteIndex(url: string, index: string): Promise<void> {
  await (await fetch(`${url}/${index}`, { method: "DELETE" })).body?.cancel();
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
}

async function rawBulk(run: string): Promise<number> {
  write(`1/3 raw Elasticsearch bulk: ${N} documents in bulks of ${BULK_SIZE}\n`);
  const config = configFor(`${run}-raw`, {});
  const infrastructure = new Infrastructure(config, serviceLogger("bench", run));
  const index = infrastructure.searchIndex();
  await index.open();
  const tweets = new MockTweets({ ...config.stream, ids: new SnowflakeIds(1) });
  const documents: TweetDocument[] = Array.from({ length: N }, () => toDocument(tweets.next()));
  const started = performance.now();
  for (let i = 0; i < N; i += BULK_SIZE) {
    await index.upsert(documents.slice(i, i + BULK_SIZE));
    if ((i / BULK_SIZE) % 20 === 0) progress("written", i + BULK_SIZE, N, started);
  }
  const ended = await untilSearchable(() => index.count(), N, "searchable", started);
  await infrastructure.close();
  await deleteIndex(config.searchIndex.elasticsearchUrl, config.searchIndex.elasticsearchIndex);
  const rate = N / ((ended - started) / 1000);
  write(`  es-bulk: ${rate.toFixed(0)} docs/s\n`);
  return rate;
}

/** Env of a service process of this benchmark, on the real engines. */
function serviceEnv(config: ReturnType<typeof configFor>): Record<string, string> {
  return {
    NO_COLOR: "1",
    EVENT_LOG: "kafka",
    SEARCH_INDEX: "elasticsearch",
    KAFKA_BROKERS: config.eventLog.kafkaBrokers.join(","),
    ELASTICSEARCH_URL: config.searchIndex.elasticsearchUrl,
    ELASTICSEARCH_INDEX: config.searchIndex.elasticsearchIndex,
    TWEET_TOPIC: config.tweets.topic,
    INDEXER_DEAD_LETTER_TOPIC: config.indexer.deadLetterTopic,
    INDEXER_GROUP_ID: config.indexer.groupId,
    INDEXER_MAX_BATCH_SIZE: String(config.indexer.maxBatchSize),
    STREAM_COUNT: String(config.stream.count),
    STREAM_RATE_PER_SECOND: String(config.stream.ratePerSecond),
    STREAM_PORT: "0",
    INDEXER_PORT: "0",
  };
}

/**
 * Runs one service as its own process, as deployed, and resolves once its
 * log says `ready` matched; `stop()` ends it with SIGTERM.
 */
async function spawnService(name: string, env: Record<string, string>, ready: RegExp) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...SERVICE_PERMISSIONS, MAIN, name],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  while (!ready.test(buffer)) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`The ${name} process ended before it was ready`);
    buffer = (buffer + value).slice(-10_000);
  }
  // Keep draining the log so the process never blocks on a full pipe.
  void (async () => {
    while (!(await lines.read()).done);
  })();
  return {
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

async function pipeline(run: string): Promise<number> {
  write(
    `2/3 pipeline: ${N} tweets, stream -> Kafka -> indexer -> Elasticsearch (one process each)\n`,
  );
  const config = configFor(`${run}-pipe`, {
    STREAM_COUNT: String(N),
    STREAM_RATE_PER_SECOND: "1000000",
  });
  const env = serviceEnv(config);
  const infrastructure = new Infrastructure(config, serviceLogger("bench", run));
  const index = infrastructure.searchIndex();
  await index.open();
  const indexer = await spawnService("indexer", env, /Indexing \S+ as group/);
  const stream = await spawnService("stream", env, /Producing mock tweets/);
  const started = performance.now();
  const ended = await untilSearchable(() => index.count(), N, "searchable", started);
  await stream.stop();
  await indexer.stop();
  await infrastructure.close();
  await deleteIndex(config.searchIndex.elasticsearchUrl, config.searchIndex.elasticsearchIndex);
  const rate = N / ((ended - started) / 1000);
  write(`  pipeline: ${rate.toFixed(0)} docs/s\n`);
  return rate;
}

async function freshness(run: string): Promise<number[]> {
  const total = FRESHNESS_RATE * FRESHNESS_SECONDS;
  write(`3/3 freshness: ${FRESHNESS_RATE} tweets/s for ${FRESHNESS_SECONDS} s\n`);
  const config = configFor(`${run}-fresh`, {
    STREAM_COUNT: String(total),
    STREAM_RATE_PER_SECOND: String(FRESHNESS_RATE),
  });
  const infrastructure = new Infrastructure(config, serviceLogger("bench", run));
  const eventLog = infrastructure.eventLog();
  const index = infrastructure.searchIndex();
  const codec = await infrastructure.tweetCodec();
  const indexer = createIndexerService({
    config,
    context: testContext("indexer"),
    eventLog,
    index,
    codec,
  });
  const stream = createStreamService({
    config,
    context: testContext("stream"),
    eventLog,
    codec,
    verifier: infrastructure.tokenVerifier("stream"),
  });
  await indexer.start();
  const started = performance.now();
  await stream.start();
  // A tweet's id encodes its produce time (its createdAt); it is searchable
  // from the first poll whose newest-first page shows it.
  const latencies = new Map<string, number>();
  let lastReport = 0;
  while (latencies.size < total) {
    const page = await index.search({ size: 1000 });
    const now = Date.now();
    for (const document of page.documents) {
      if (!latencies.has(document.id)) latencies.set(document.id, now - document.createdAt);
    }
    if (performance.now() - lastReport > 2000) {
      progress("searchable", latencies.size, total, started);
      lastReport = performance.now();
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await stream.stop();
  await indexer.stop();
  await infrastructure.close();
  await deleteIndex(config.searchIndex.elasticsearchUrl, config.searchIndex.elasticsearchIndex);
  const sorted = [...latencies.values()].sort((a, b) => a - b);
  const [p50, p95, p99] = [0.5, 0.95, 0.99].map((p) => percentile(sorted, p));
  write(`  freshness: p50 ${p50} ms, p95 ${p95} ms, p99 ${p99} ms\n`);
  return [p50!, p95!, p99!];
}

if (import.meta.main) {
  configureTracing();
  await engineUp(
    ENGINES.filter((engine) => engine.name === "kafka" || engine.name === "elasticsearch"),
  );
  const run = crypto.randomUUID().slice(0, 8);
  const esBulk = await rawBulk(run);
  const pipelineRate = await pipeline(run);
  const [, , p99] = await freshness(run);
  write(
    `pipeline: ${pipelineRate.toFixed(0)} docs/s; es-bulk: ${esBulk.toFixed(0)} docs/s; ratio: ${
      (pipelineRate / esBulk).toFixed(2)
    }; freshness p99: ${p99} ms\n`,
  );
  Deno.exit(0);
}
