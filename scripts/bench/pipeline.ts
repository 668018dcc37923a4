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
 *     cost against the runs with both off (the embedded defaults);
 *  5. where the time goes between produce and searchable, for the throughput
 *     runs (merged over the rounds) and the freshness run: the services' own
 *     stage histograms read from their `/metrics` at the end of each run
 *     (stream: encode and send of each batch; indexer: each event's age when
 *     its batch is received and when its bulk write is acknowledged, decode
 *     and bulk of each batch, records per batch), Elasticsearch's refresh
 *     count, and the configured compression (KAFKA_COMPRESSION, none by
 *     default, as the services get it) timed in this process on tweets encoded as
 *     the stream encodes them.
 * `--cpu-prof=DIR` writes a V8 CPU profile of every service process to DIR.
 * The indices refresh as the services' settings say
 * (ELASTICSEARCH_REFRESH_INTERVAL_MS, raw bulk included): "searchable" means a
 * search finds it, never a forced refresh. The load average is printed before and
 * after: on a shared machine it says how much the numbers are worth.
 */
import { compressionsAlgorithms } from "@platformatic/kafka";
import { Buffer } from "node:buffer";
import { loadTweetCodec } from "../../shared/events/tweet_event.ts";
import { serviceLogger } from "../../shared/log/log.ts";
import type { TweetDocument } from "../../shared/search_index/search_index.ts";
import { configureTracing } from "../../shared/trace/tracing.ts";
import { loadConfig } from "../../services/config.ts";
import { Infrastructure } from "../../services/infrastructure.ts";
import { MockTweets } from "../../services/stream/mock_tweets.ts";
import { SnowflakeIds } from "../../services/stream/tweet_ids.ts";
import { toDocument } from "../../services/indexer/tweet_indexer.ts";
import { ENGINES, engineUp, write } from "../engines/engines.ts";
import { runningPid } from "../engines/engine.ts";
import { treeCpuSeconds } from "./_cpu.ts";
import { SERVICE_PERMISSIONS } from "../service_command.ts";
import {
  countOf,
  type Histograms,
  type HistogramSeries,
  mergeHistograms,
  parseHistograms,
  quantile,
} from "./_histograms.ts";

const MAIN = new URL("../../services/main.ts", import.meta.url).pathname;

const USAGE = "Usage: deno task bench:pipeline [N] [--rounds=R] [--cost=on|off] [--cpu-prof=DIR]\n";

function parseArgs(
  args: readonly string[],
): { n: number; rounds: number; cost: boolean; cpuProf: string } {
  let n = 50_000;
  let rounds = 2;
  let cost = true;
  let cpuProf = "";
  for (const arg of args) {
    const option = /^--(rounds|cost|cpu-prof)=(.+)$/.exec(arg);
    if (option?.[1] === "cpu-prof") {
      cpuProf = option[2]!;
    } else if (option?.[1] === "rounds") {
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
  return { n, rounds, cost, cpuProf };
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
/** The services' compression of the tweet topic; unset: the setting's default. */
const KAFKA_COMPRESSION = Deno.env.get("KAFKA_COMPRESSION");
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
    ...(KAFKA_COMPRESSION === undefined ? {} : { KAFKA_COMPRESSION }),
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
  const index = await infrastructure.searchIndex();
  await index.open();
  const tweets = new MockTweets({ ...config.stream, ids: new SnowflakeIds(1) });
  const documents: TweetDocument[] = Array.from({ length: n }, () => toDocument(tweets.next()));
  const cpu = await meterCpu({ ...await enginePids(), bench: Deno.pid });
  const started = performance.now();
  for (let i = 0; i < n; i += BULK_SIZE) {
    await index.upsert(documents.slice(i, i + BULK_SIZE));
    if ((i / BULK_SIZE) % 20 === 0) progress("written", i + BULK_SIZE, n, started);
  }
  const ended = await untilSearchable(() => index.count(), n, "searchable", started);
  const used = await cpu.stop(n);
  await infrastructure.close();
  await deleteIndex(config.searchIndex.elasticsearchUrl, config.searchIndex.elasticsearchIndex);
  const rate = n / ((ended - started) / 1000);
  write(`  es-bulk: ${rate.toFixed(0)} docs/s; ${cpuLine(used)}\n`);
  return rate;
}

/** Env of a service process of this benchmark, on the real engines. */
function serviceEnv(config: ReturnType<typeof configFor>): Record<string, string> {
  return {
    NO_COLOR: "1",
    EVENT_LOG: "kafka",
    SEARCH_INDEX: "elasticsearch",
    KAFKA_BROKERS: config.eventLog.kafkaBrokers.join(","),
    KAFKA_COMPRESSION: config.eventLog.kafkaCompression,
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

const LISTENING = /(?<!management )listening on (https?:\/\/[^\s"]+)/;

/**
 * Runs one service as its own process, as deployed, and resolves once its
 * log says `ready` matched; `metrics()` reads its `/metrics` histograms,
 * `stop()` ends it with SIGTERM.
 */
async function spawnService(name: string, env: Record<string, string>, ready: RegExp) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...SERVICE_PERMISSIONS,
      ...(ARGS.cpuProf === "" ? [] : ["--cpu-prof", `--cpu-prof-dir=${ARGS.cpuProf}`]),
      MAIN,
      name,
    ],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  running.add(child);
  void child.status.then(() => running.delete(child));
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let url: string | undefined;
  while (!ready.test(buffer)) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`The ${name} process ended before it was ready`);
    buffer = (buffer + value).slice(-10_000);
    // Taken when logged: retries logged before ready may push it out of the buffer.
    url ??= LISTENING.exec(buffer)?.[1]?.replace(/\/$/, "");
  }
  if (url === undefined) throw new Error(`The ${name} process did not log where it listens`);
  // Keep draining the log so the process never blocks on a full pipe.
  void (async () => {
    while (!(await lines.read()).done);
  })();
  return {
    pid: child.pid,
    async metrics(): Promise<Histograms> {
      return parseHistograms(await (await fetch(`${url}/metrics`)).text());
    },
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

/** CPU seconds used by each process of a run, and the documents it wrote. */
interface CpuUse {
  readonly seconds: Readonly<Record<string, number>>;
  readonly documents: number;
}

/** Starts measuring the CPU the named processes (and their children) use; `stop` says how much. */
async function meterCpu(pids: Readonly<Record<string, number>>) {
  const read = async () =>
    Object.fromEntries(
      await Promise.all(
        Object.entries(pids).map(async ([name, pid]) => [name, await treeCpuSeconds(pid)] as const),
      ),
    );
  const before = await read();
  return {
    async stop(documents: number): Promise<CpuUse> {
      const after = await read();
      const seconds = Object.fromEntries(
        Object.keys(pids).map((name) => [name, after[name]! - before[name]!]),
      );
      return { seconds, documents };
    },
  };
}

/** The engines' processes, whose CPU the runs measure too. */
async function enginePids(): Promise<Record<string, number>> {
  const pids: Record<string, number> = {};
  for (const engine of ["elasticsearch", "kafka"]) {
    const pid = await runningPid(engine);
    if (pid !== undefined) pids[engine] = pid;
  }
  return pids;
}

function mergeCpu(all: readonly CpuUse[]): CpuUse {
  const seconds: Record<string, number> = {};
  for (const use of all) {
    for (const [name, value] of Object.entries(use.seconds)) {
      seconds[name] = (seconds[name] ?? 0) + value;
    }
  }
  return { seconds, documents: all.reduce((sum, use) => sum + use.documents, 0) };
}

/** `cpu per 1000 documents: elasticsearch 80 ms, ...`; all of it last. */
function cpuLine(use: CpuUse): string {
  const per1000 = (seconds: number) => (seconds * 1e6 / use.documents).toFixed(0);
  const parts = Object.entries(use.seconds).map(([name, seconds]) =>
    `${name} ${per1000(seconds)} ms`
  );
  const all = Object.values(use.seconds).reduce((sum, seconds) => sum + seconds, 0);
  return `cpu per 1000 documents: ${parts.join(", ")}; all ${per1000(all)} ms`;
}

/** What a pipeline run's services and Elasticsearch say about where the time went. */
interface Stages {
  readonly stream: Histograms;
  readonly indexer: Histograms;
  readonly refreshes: Refreshes;
  readonly cpu: CpuUse;
}

interface Refreshes {
  readonly count: number;
  readonly totalMs: number;
}

async function refreshesOf(url: string, index: string): Promise<Refreshes> {
  const stats = await (await fetch(`${url}/${index}/_stats/refresh`)).json();
  const refresh = stats?._all?.primaries?.refresh;
  return { count: refresh?.total ?? NaN, totalMs: refresh?.total_time_in_millis ?? NaN };
}

/** The stage histograms of a run's services and the index's refreshes, before they stop. */
async function stagesOf(
  stream: { metrics(): Promise<Histograms> },
  indexer: { metrics(): Promise<Histograms> },
  config: ReturnType<typeof configFor>,
  cpu: CpuUse,
): Promise<Stages> {
  const [streamHistograms, indexerHistograms, refreshes] = await Promise.all([
    stream.metrics(),
    indexer.metrics(),
    refreshesOf(config.searchIndex.elasticsearchUrl, config.searchIndex.elasticsearchIndex),
  ]);
  return { stream: streamHistograms, indexer: indexerHistograms, refreshes, cpu };
}

function mergeStages(all: readonly Stages[]): Stages {
  return {
    stream: mergeHistograms(all.map((stages) => stages.stream)),
    indexer: mergeHistograms(all.map((stages) => stages.indexer)),
    refreshes: {
      count: all.reduce((sum, stages) => sum + stages.refreshes.count, 0),
      totalMs: all.reduce((sum, stages) => sum + stages.refreshes.totalMs, 0),
    },
    cpu: mergeCpu(all.map((stages) => stages.cpu)),
  };
}

function milliseconds(seconds: number): string {
  const ms = seconds * 1000;
  return Number.isNaN(ms)
    ? "-"
    : ms < 10
    ? ms.toFixed(2)
    : ms < 100
    ? ms.toFixed(1)
    : ms.toFixed(0);
}

/** `p50 / p99` of a series, in milliseconds, with its count. */
function p50p99(series: HistogramSeries | undefined, unit = "ms"): string {
  if (series === undefined || countOf(series) === 0) return "none";
  const [p50, p99] = [quantile(series, 0.5), quantile(series, 0.99)];
  return unit === "ms"
    ? `${milliseconds(p50)} / ${milliseconds(p99)} ms`
    : `${p50.toFixed(0)} / ${p99.toFixed(0)} ${unit}`;
}

/**
 * Where the time went, p50 / p99 of each stage. `freshness` (the measured
 * produce-to-searchable percentiles, in ms) adds what follows the bulk write:
 * its percentiles less the indexed age's, an estimate, as the two are not
 * paired per tweet.
 */
function writeBreakdown(title: string, stages: Stages, freshness?: readonly number[]): void {
  const { stream, indexer, refreshes } = stages;
  const sends = stream.get('stream_batch_step_seconds{step="send"}');
  const batches = indexer.get("indexer_batch_events");
  const indexed = indexer.get('indexer_event_age_seconds{stage="handled"}');
  write(`  breakdown, ${title} (p50 / p99):\n`);
  write(
    `    stream, per batch (${sends === undefined ? 0 : countOf(sends)} batches): encode ${
      p50p99(stream.get('stream_batch_step_seconds{step="encode"}'))
    }; send to acknowledged (compress, produce, broker) ${p50p99(sends)}\n`,
  );
  write(
    `    indexer, per batch (${batches === undefined ? 0 : countOf(batches)} batches of ${
      p50p99(batches, "events")
    }): decode ${p50p99(indexer.get('indexer_batch_step_seconds{step="decode"}'))}; bulk ${
      p50p99(indexer.get('indexer_batch_step_seconds{step="handle"}'))
    }\n`,
  );
  write(
    `    event age (since created): received by the indexer ${
      p50p99(indexer.get('indexer_event_age_seconds{stage="received"}'))
    }; indexed ${p50p99(indexed)}\n`,
  );
  if (freshness !== undefined && indexed !== undefined && countOf(indexed) > 0) {
    write(
      `    searchable: ${freshness[0]} / ${
        freshness[2]
      } ms; after indexed (refresh wait, polling; ` +
        `estimate): ${(freshness[0]! - quantile(indexed, 0.5) * 1000).toFixed(0)} / ${
          (freshness[2]! - quantile(indexed, 0.99) * 1000).toFixed(0)
        } ms\n`,
    );
  }
  write(
    `    elasticsearch: ${refreshes.count} refreshes, ${
      (refreshes.totalMs / refreshes.count).toFixed(1)
    } ms each on average\n`,
  );
  write(`    ${cpuLine(stages.cpu)}\n`);
}

/**
 * The configured compression of produce-sized batches of tweets encoded as the
 * stream encodes them, in this process: the one stage the client does not expose.
 */
async function writeCompression(config: ReturnType<typeof configFor>): Promise<void> {
  const name = config.eventLog.kafkaCompression;
  if (name === "none") {
    write("compression: none (KAFKA_COMPRESSION)\n");
    return;
  }
  const codec = await loadTweetCodec();
  const tweets = new MockTweets({ ...config.stream, ids: new SnowflakeIds(2) });
  const batch = Buffer.concat(Array.from({ length: 1000 }, () => codec.encode(tweets.next())));
  const algorithm = compressionsAlgorithms[name];
  let compressed = algorithm.compressSync(batch);
  const rounds = 200;
  const started = performance.now();
  for (let i = 0; i < rounds; i++) compressed = algorithm.compressSync(batch);
  const compressMs = (performance.now() - started) / rounds;
  const decompressStarted = performance.now();
  for (let i = 0; i < rounds; i++) algorithm.decompressSync(compressed);
  const decompressMs = (performance.now() - decompressStarted) / rounds;
  write(
    `${name} (KAFKA_COMPRESSION) in this process, 1000 encoded tweets (${batch.byteLength} -> ` +
      `${compressed.byteLength} bytes): compress ${compressMs.toFixed(2)} ms, decompress ${
        decompressMs.toFixed(2)
      } ms\n`,
  );
}

async function pipeline(
  run: string,
  n: number,
  observability?: Observability,
): Promise<{ rate: number; stages: Stages }> {
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
  const index = await infrastructure.searchIndex();
  await index.open();
  const indexer = await spawnService("indexer", env, /Indexing \S+ as group/);
  const stream = await spawnService("stream", env, /Producing mock tweets/);
  const cpu = await meterCpu({ ...await enginePids(), stream: stream.pid, indexer: indexer.pid });
  const started = performance.now();
  const ended = await untilSearchable(() => index.count(), n, "searchable", started);
  const stages = await stagesOf(stream, indexer, config, await cpu.stop(n));
  await stream.stop();
  await indexer.stop();
  await infrastructure.close();
  await deleteIndex(config.searchIndex.elasticsearchUrl, config.searchIndex.elasticsearchIndex);
  const rate = n / ((ended - started) / 1000);
  write(`  pipeline: ${rate.toFixed(0)} docs/s\n`);
  return { rate, stages };
}

const PAGE_SIZE = 1000;

interface SearchablePage {
  /** Documents searchable when the search ran. */
  readonly total: number;
  readonly hits: { id: string; createdAt: number; sort: [number, string] }[];
}

/**
 * One newest-first page of the searchable tweets' ids and creation times, by
 * a search straight to Elasticsearch: the lightest search that says which
 * tweets a search finds (no text or terms sent back, no client decoding), so
 * that the poll adds little to the latencies it measures.
 */
async function searchablePage(
  config: ReturnType<typeof configFor>,
  after?: [number, string],
): Promise<SearchablePage> {
  const { elasticsearchUrl, elasticsearchIndex } = config.searchIndex;
  const response = await fetch(
    `${elasticsearchUrl}/${elasticsearchIndex}/_search?filter_path=hits.total.value,hits.hits._source,hits.hits.sort`,
    {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        size: PAGE_SIZE,
        _source: ["id", "createdAt"],
        sort: [{ createdAt: "desc" }, { id: "desc" }],
        track_total_hits: true,
        ...(after === undefined ? {} : { search_after: after }),
      }),
    },
  );
  if (!response.ok) throw new Error(`The freshness search failed: ${await response.text()}`);
  const body = await response.json();
  const hits = (body.hits?.hits ?? []) as {
    _source: { id: string; createdAt: number };
    sort: [number, string];
  }[];
  return {
    total: body.hits?.total?.value ?? 0,
    hits: hits.map(({ _source, sort }) => ({ ..._source, sort })),
  };
}

async function freshness(
  run: string,
  observability?: Observability,
): Promise<{ percentiles: number[]; stages: Stages }> {
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
  const index = await infrastructure.searchIndex();
  await index.open();
  const indexer = await spawnService("indexer", env, /Indexing \S+ as group/);
  const started = performance.now();
  const stream = await spawnService("stream", env, /Producing mock tweets/);
  const cpu = await meterCpu({ ...await enginePids(), stream: stream.pid, indexer: indexer.pid });
  const polls: number[] = [];
  // A tweet's createdAt is its produce time; it is searchable from the first
  // poll whose newest-first pages show it, timed when that poll's answer came.
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
    const pollStarted = performance.now();
    let page = await searchablePage(config);
    const searchable = page.total;
    let now = Date.now();
    const record = () => {
      for (const { id, createdAt } of page.hits) {
        if (!latencies.has(id)) latencies.set(id, now - createdAt);
      }
    };
    record();
    // A tweet indexed after a thousand newer ones (a slow batch) is not on the first page: when
    // more were searchable than seen, page on until every one of them is.
    while (latencies.size < searchable && page.hits.length === PAGE_SIZE) {
      page = await searchablePage(config, page.hits.at(-1)!.sort);
      now = Date.now();
      record();
    }
    polls.push(performance.now() - pollStarted);
    if (performance.now() - lastReport > 2000) {
      progress("searchable", latencies.size, total, started);
      lastReport = performance.now();
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const stages = await stagesOf(stream, indexer, config, await cpu.stop(latencies.size));
  await stream.stop();
  await indexer.stop();
  await infrastructure.close();
  await deleteIndex(config.searchIndex.elasticsearchUrl, config.searchIndex.elasticsearchIndex);
  const sorted = [...latencies.values()].sort((a, b) => a - b);
  const [p50, p95, p99] = [0.5, 0.95, 0.99].map((p) => percentile(sorted, p));
  polls.sort((a, b) => a - b);
  write(
    `  freshness: p50 ${p50} ms, p95 ${p95} ms, p99 ${p99} ms (a poll of the index took ${
      percentile(polls, 0.5).toFixed(0)
    } / ${percentile(polls, 0.99).toFixed(0)} ms, p50 / p99)\n`,
  );
  return { percentiles: [p50!, p95!, p99!], stages };
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
  await writeCompression(configFor(run, {}));
  const warmup = Math.max(BULK_SIZE, Math.round(N / 5));
  write(`warm-up (not counted):\n`);
  await rawBulk(`${run}-w`, warmup);
  await pipeline(`${run}-w`, warmup);
  const exporting: Observability[] = ARGS.cost ? [{ sampleRatio: 0.1 }, { sampleRatio: 1 }] : [];
  const esBulk: number[] = [];
  const pipelineRates = new Map<Observability, number[]>();
  const throughputStages: Stages[] = [];
  for (let round = 1; round <= ARGS.rounds; round++) {
    write(`round ${round}/${ARGS.rounds}:\n`);
    esBulk.push(await rawBulk(`${run}-${round}`, N));
    for (const observability of [undefined, ...exporting]) {
      const { rate, stages } = await pipeline(`${run}-${round}`, N, observability);
      pipelineRates.set(observability, [...pipelineRates.get(observability) ?? [], rate]);
      if (observability === undefined) {
        throughputStages.push(stages);
        writeBreakdown("this run", stages);
      }
    }
  }
  const p99s = new Map<Observability, number>();
  let freshStages: { percentiles: number[]; stages: Stages } | undefined;
  for (const observability of [undefined, ...exporting]) {
    const measured = await freshness(run, observability);
    p99s.set(observability, measured.percentiles[2]!);
    if (observability === undefined) freshStages = measured;
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
  writeBreakdown(
    `throughput, ${ARGS.rounds} round(s) merged, export and shipping off`,
    mergeStages(throughputStages),
  );
  writeBreakdown(
    `freshness at ${FRESHNESS_RATE} tweets/s, export and shipping off`,
    freshStages!.stages,
    freshStages!.percentiles,
  );
  Deno.exit(0);
}
