/**
 * `deno task bench:pipeline [N] [--rounds=R] [--cost=on|off]`: numbers, never
 * a pass/fail, on the real engines (brought up if needed):
 *  0. a warm-up, not counted: a raw bulk and a pipeline run of N/5 each, so
 *     that the JVMs (Kafka, Elasticsearch) have compiled their hot paths;
 *  1. raw Elasticsearch bulk throughput for N tweet documents (the physical
 *     limit of the pipeline), and
 *  2. pipeline throughput for N tweets, stream -> Kafka -> indexer ->
 *     Elasticsearch, each service in its own process as deployed, from the
 *     first produce until the last one is searchable, taking turns over R
 *     rounds (raw, pipeline, raw, pipeline...; default 2) so that load from
 *     outside spreads over both; the medians make the final line;
 *  3. freshness: produce-to-searchable latency percentiles at a steady rate,
 *     both services in their own processes;
 *  4. unless `--cost=off`, 2 and 3 again with trace export to Zipkin and log
 *     shipping to Elasticsearch on in both services, at 10 % and at 100 %
 *     sampling (the pipeline runs take their turns in the rounds), and their
 *     cost against the runs with both off (the embedded defaults).
 * Elasticsearch keeps its default 1 s refresh: "searchable" means a search
 * finds it, never a forced refresh. The load average is printed before and
 * after: on a shared machine it says how much the numbers are worth.
 */
import { serviceLogger } from "../../shared/log/log.ts";
import type { TweetDocument } from "../../shared/search_index/search_index.ts";
import { configureTracing } from "../../shared/trace/tracing.ts";
import { loadConfig } from "../../services/config.ts";
import { Infrastructure } from "../../services/infrastructure.ts";
import { MockTweets } from "../../services/stream/mock_tweets.ts";
import { SnowflakeIds } from "../../services/stream/tweet_ids.ts";
import { toDocument } from "../../services/indexer/tweet_indexer.ts";
import { ENGINES, engineUp, write } from "../engines/engines.ts";
import { SERVICE_PERMISSIONS } from "../dev.ts";

const MAIN = new URL("../../services/main.ts", import.meta.url).pathname;

const USAGE = "Usage: deno task bench:pipeline [N] [--rounds=R] [--cost=on|off]\n";

function parseArgs(args: readonly string[]): { n: number; rounds: number; cost: boolean } {
  let n = 50_000;
  let rounds = 2;
  let cost = true;
  for (const arg of args) {
    const option = /^--(rounds|cost)=(.+)$/.exec(arg);
    if (option?.[1] === "rounds") {
      rounds = Number(option[2]);
    } else if (option?.[1] === "cost") {
      if (option[2] !== "on" && option[2] !== "off") {
        throw new RangeError(`--cost must be on or off: got ${option[2]}`);
      }
      cost = option[2] === "on";
    } else if (/^\d+$/.test(arg)) {
      n = Number(arg);
    } else {
      throw new RangeError(`Unknown argument ${arg}`);
    }
  }
  for (const [name, value] of [["N", n], ["--rounds", rounds]] as const) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(`${name} must be a positive integer: got ${value}`);
    }
  }
  return { n, rounds, cost };
}

const ARGS = (() => {
  try {
    return parseArgs(Deno.args);
  } catch (error) {
    write(`${error instanceof Error ? error.message : error}\n${USAGE}`);
    Deno.exit(2);
  }
})();
const N = ARGS.n;
const FRESHNESS_RATE = 500;
const FRESHNESS_SECONDS = 20;
/** Freshness gives up after this long without a tweet becoming searchable. */
const STALL_MS = 30_000;
const BULK_SIZE = 500;
const ZIPKIN_URL = (Deno.env.get("ZIPKIN_URL") || "http://127.0.0.1:9411").replace(/\/$/, "");

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

async function rawBulk(run: string, n: number): Promise<number> {
  write(`raw Elasticsearch bulk: ${n} documents in bulks of ${BULK_SIZE}\n`);
  const config = configFor(`${run}-raw`, {});
  const infrastructure = new Infrastructure(config, serviceLogger("bench", run));
  const index = infrastructure.searchIndex();
  await index.open();
  const tweets = new MockTweets({ ...config.stream, ids: new SnowflakeIds(1) });
  const documents: TweetDocument[] = Array.from({ length: n }, () => toDocument(tweets.next()));
  const started = performance.now();
  for (let i = 0; i < n; i += BULK_SIZE) {
    await index.upsert(documents.slice(i, i + BULK_SIZE));
    if ((i / BULK_SIZE) % 20 === 0) progress("written", i + BULK_SIZE, n, started);
  }
  const ended = await untilSearchable(() => index.count(), n, "searchable", started);
  await infrastructure.close();
  await deleteIndex(config.searchIndex.elasticsearchUrl, config.searchIndex.elasticsearchIndex);
  const rate = n / ((ended - started) / 1000);
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

/** The service processes running, stopped when the benchmark is interrupted. */
const running = new Set<Deno.ChildProcess>();

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
  running.add(child);
  void child.status.then(() => running.delete(child));
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

/** Trace export and log shipping of the service processes; undefined: both off (the defaults). */
type Observability = { readonly sampleRatio: number } | undefined;

function observabilityEnv(observability: Observability, run: string): Record<string, string> {
  if (observability === undefined) return {};
  return {
    ZIPKIN_URL: ZIPKIN_URL,
    TRACE_SAMPLE_RATIO: String(observability.sampleRatio),
    LOG_SHIPPING: "elasticsearch",
    LOG_SHIPPING_ELASTICSEARCH_URL: Deno.env.get("ELASTICSEARCH_URL") ?? "http://127.0.0.1:9200",
    LOG_SHIPPING_INDEX_PREFIX: `logs-bench-${run}`,
  };
}

function observabilityName(observability: Observability): string {
  return observability === undefined
    ? "export and shipping off"
    : `trace export at ${observability.sampleRatio * 100} % sampling and log shipping on`;
}

async function pipeline(run: string, n: number, observability?: Observability): Promise<number> {
  write(
    `pipeline: ${n} tweets, stream -> Kafka -> indexer -> Elasticsearch (one process each), ${
      observabilityName(observability)
    }\n`,
  );
  const config = configFor(`${run}-pipe`, {
    STREAM_COUNT: String(n),
    STREAM_RATE_PER_SECOND: "1000000",
  });
  const env = { ...serviceEnv(config), ...observabilityEnv(observability, run) };
  const infrastructure = new Infrastructure(config, serviceLogger("bench", run));
  const index = infrastructure.searchIndex();
  await index.open();
  const indexer = await spawnService("indexer", env, /Indexing \S+ as group/);
  const stream = await spawnService("stream", env, /Producing mock tweets/);
  const started = performance.now();
  const ended = await untilSearchable(() => index.count(), n, "searchable", started);
  await stream.stop();
  await indexer.stop();
  await infrastructure.close();
  await deleteIndex(config.searchIndex.elasticsearchUrl, config.searchIndex.elasticsearchIndex);
  const rate = n / ((ended - started) / 1000);
  write(`  pipeline: ${rate.toFixed(0)} docs/s\n`);
  return rate;
}

async function freshness(run: string, observability?: Observability): Promise<number[]> {
  const total = FRESHNESS_RATE * FRESHNESS_SECONDS;
  write(
    `freshness: ${FRESHNESS_RATE} tweets/s for ${FRESHNESS_SECONDS} s (one process each), ${
      observabilityName(observability)
    }\n`,
  );
  const config = configFor(`${run}-fresh-${crypto.randomUUID().slice(0, 4)}`, {
    STREAM_COUNT: String(total),
    STREAM_RATE_PER_SECOND: String(FRESHNESS_RATE),
  });
  const env = { ...serviceEnv(config), ...observabilityEnv(observability, run) };
  const infrastructure = new Infrastructure(config, serviceLogger("bench", run));
  const index = infrastructure.searchIndex();
  await index.open();
  const indexer = await spawnService("indexer", env, /Indexing \S+ as group/);
  const started = performance.now();
  const stream = await spawnService("stream", env, /Producing mock tweets/);
  // A tweet's id encodes its produce time (its createdAt); it is searchable
  // from the first poll whose newest-first page shows it.
  const latencies = new Map<string, number>();
  let lastReport = 0;
  let lastProgress = performance.now();
  let seenAtLastProgress = 0;
  while (latencies.size < total) {
    if (latencies.size > seenAtLastProgress) {
      seenAtLastProgress = latencies.size;
      lastProgress = performance.now();
    } else if (performance.now() - lastProgress > STALL_MS) {
      write(
        `!!! freshness: ${total - latencies.size} tweets not searchable after ${
          STALL_MS / 1000
        } s without progress: the percentiles below leave them out and are INVALID !!!\n`,
      );
      break;
    }
    let page = await index.search({ size: 1000 });
    let now = Date.now();
    const record = () => {
      for (const document of page.documents) {
        if (!latencies.has(document.id)) latencies.set(document.id, now - document.createdAt);
      }
    };
    record();
    // A tweet indexed after a thousand newer ones (a slow batch) is not on the first page: when
    // more are searchable than seen, page on until every searchable one is.
    let pages = 1;
    while (page.next !== undefined && pages < total / 1000 + 1) {
      if (await index.count() <= latencies.size) break;
      page = await index.search({ size: 1000, after: page.next });
      now = Date.now();
      record();
      pages++;
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

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function signedPercent(fraction: number): string {
  const percent = fraction * 100;
  return `${percent >= 0 ? "+" : ""}${percent.toFixed(1)} %`;
}

async function loadAverage(): Promise<string> {
  return (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
}

async function checkZipkin(): Promise<void> {
  try {
    const response = await fetch(`${ZIPKIN_URL}/health`, { signal: AbortSignal.timeout(5000) });
    await response.body?.cancel();
    if (!response.ok) throw new Error(`it answered ${response.status}`);
  } catch (error) {
    throw new Error(
      `Zipkin is not usable at ${ZIPKIN_URL} (needed by --cost=on): ${
        error instanceof Error ? error.message : error
      }; start it with: deno task engines up zipkin (or pass --cost=off)`,
    );
  }
}

if (import.meta.main) {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      write(`\n${signal}: stopping the service processes\n`);
      for (const child of running) {
        try {
          child.kill("SIGTERM");
        } catch {
          // Ended meanwhile.
        }
      }
      void Promise.all([...running].map((child) => child.status)).then(() => Deno.exit(130));
    });
  }
  configureTracing();
  await engineUp(
    ENGINES.filter((engine) => engine.name === "kafka" || engine.name === "elasticsearch"),
  );
  if (ARGS.cost) await checkZipkin();
  const run = crypto.randomUUID().slice(0, 8);
  write(`load average before: ${await loadAverage()}\n`);
  const warmup = Math.max(BULK_SIZE, Math.round(N / 5));
  write(`warm-up (not counted):\n`);
  await rawBulk(`${run}-w`, warmup);
  await pipeline(`${run}-w`, warmup);
  const exporting: Observability[] = ARGS.cost ? [{ sampleRatio: 0.1 }, { sampleRatio: 1 }] : [];
  const esBulk: number[] = [];
  const pipelineRates = new Map<Observability, number[]>();
  for (let round = 1; round <= ARGS.rounds; round++) {
    write(`round ${round}/${ARGS.rounds}:\n`);
    esBulk.push(await rawBulk(`${run}-${round}`, N));
    for (const observability of [undefined, ...exporting]) {
      const rate = await pipeline(`${run}-${round}`, N, observability);
      pipelineRates.set(observability, [...pipelineRates.get(observability) ?? [], rate]);
    }
  }
  const p99s = new Map<Observability, number>();
  for (const observability of [undefined, ...exporting]) {
    p99s.set(observability, (await freshness(run, observability))[2]!);
  }
  write(`load average after: ${await loadAverage()}\n`);
  const pipelineRate = median(pipelineRates.get(undefined)!);
  const bulkRate = median(esBulk);
  if (ARGS.rounds > 1) write(`medians of ${ARGS.rounds} rounds:\n`);
  write(
    `pipeline: ${pipelineRate.toFixed(0)} docs/s; es-bulk: ${bulkRate.toFixed(0)} docs/s; ratio: ${
      (pipelineRate / bulkRate).toFixed(2)
    }; freshness p99: ${p99s.get(undefined)} ms\n`,
  );
  if (exporting.length > 0) {
    const costs = exporting.map((observability) =>
      `${observability!.sampleRatio * 100} % sampling: throughput ${
        signedPercent(median(pipelineRates.get(observability)!) / pipelineRate - 1)
      } (${median(pipelineRates.get(observability)!).toFixed(0)} docs/s), freshness p99 ${
        signedPercent(p99s.get(observability)! / p99s.get(undefined)! - 1)
      } (${p99s.get(observability)} ms)`
    );
    write(`export+shipping cost (against both off): ${costs.join("; ")}\n`);
  }
  Deno.exit(0);
}
