/**
 * `deno task bench:eventlog [N] [rounds]`: the two Kafka adapters behind the
 * event log port, in one run against the real broker (brought up if needed),
 * taking turns over the rounds (kafkajs, platformatic, kafkajs...), both
 * with the compression KAFKA_COMPRESSION says (none by default; kafkajs has
 * gzip only besides):
 *
 *  - produce: N keyed records of 150 bytes over 6 partitions, batches of
 *    1000, up to 5 batches in flight, until every one is acknowledged (acks=all);
 *  - consume: a new group reads the N records from the log start, batches of 500;
 *  - end to end: a joined group receives N records while they are produced,
 *    from the first send to the last record received, with the latency
 *    (send to handler) percentiles.
 *
 * Numbers, never a pass/fail; medians per adapter.
 */
import type { EventLog, ProducerRecord } from "../../shared/event_log/event_log.ts";
import { createKafkaClient } from "../../shared/event_log/kafka_client.ts";
import { KafkaEventLog } from "../../shared/event_log/kafka_event_log.ts";
import { isKafkajsCompression } from "../../services/config.ts";
import { createPlatformaticClient } from "../../shared/event_log/platformatic_client.ts";
import { PlatformaticEventLog } from "../../shared/event_log/platformatic_event_log.ts";
import { ENGINES, engineUp, write } from "../engines/engines.ts";
import { loadAverage, median } from "./_service_process.ts";

const N = Number(Deno.args[0] ?? 50_000);
const ROUNDS = Number(Deno.args[1] ?? 3);
const PARTITIONS = 6;
const BATCH = 1000;
const IN_FLIGHT = 5;
const VALUE_BYTES = 150;
const ADAPTERS = ["kafkajs", "platformatic"] as const;
type Adapter = (typeof ADAPTERS)[number];
const brokers = (Deno.env.get("KAFKA_BROKERS") ?? "127.0.0.1:19092").split(",");
const COMPRESSION = (() => {
  const compression = Deno.env.get("KAFKA_COMPRESSION") ?? "none";
  if (isKafkajsCompression(compression)) return compression;
  write(`KAFKA_COMPRESSION must be none or gzip, which both clients have: got ${compression}\n`);
  Deno.exit(2);
})();

function createLog(adapter: Adapter): EventLog {
  const options = { compression: COMPRESSION };
  return adapter === "kafkajs"
    ? new KafkaEventLog(createKafkaClient({ brokers, clientId: "bench-eventlog" }), options)
    : new PlatformaticEventLog(
      createPlatformaticClient({ brokers, clientId: "bench-eventlog" }),
      options,
    );
}

const encoder = new TextEncoder();

function records(count: number): ProducerRecord[] {
  const words = "the quick brown fox jumps over the lazy dog while kafka keeps every record ";
  return Array.from({ length: count }, (_, i) => {
    const text = `${i} ${words.repeat(3)}`.slice(0, VALUE_BYTES);
    return { key: encoder.encode(`user-${i % 1000}`), value: encoder.encode(text) };
  });
}

/** Sends all records in batches, `IN_FLIGHT` at a time; the milliseconds it took. */
async function produce(log: EventLog, topic: string, all: readonly ProducerRecord[]) {
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < all.length) {
      const batch = all.slice(next, next + BATCH);
      next += BATCH;
      await log.send(topic, batch);
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  return performance.now() - started;
}

async function untilReceived(received: () => number, count: number): Promise<void> {
  const deadline = performance.now() + 300_000;
  while (received() < count) {
    if (performance.now() > deadline) throw new Error(`Received ${received()} of ${count}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

interface RoundResult {
  produce: number;
  consume: number;
  endToEnd: number;
  p50: number;
  p99: number;
}

async function round(adapter: Adapter, index: number): Promise<RoundResult> {
  const run = `${adapter}-${index}-${crypto.randomUUID().slice(0, 6)}`;
  const log = createLog(adapter);
  const topic = `bench-eventlog-${run}`;
  const e2eTopic = `${topic}-e2e`;
  const all = records(N);
  try {
    await log.ensureTopic({ name: topic, partitions: PARTITIONS });
    await log.ensureTopic({ name: e2eTopic, partitions: PARTITIONS });
    // Warm the connections and metadata before measuring.
    await log.send(topic, all.slice(0, 10));
    const produceMs = await produce(log, topic, all);
    let consumed = 0;
    const consumeStarted = performance.now();
    const reader = await log.consume(
      { groupId: `bench-read-${run}`, topics: [topic], partitionConcurrency: PARTITIONS },
      (batch) => {
        consumed += batch.records.length;
        return Promise.resolve();
      },
    );
    await untilReceived(() => consumed, N + 10);
    const consumeMs = performance.now() - consumeStarted;
    await reader.stop();

    const latencies: number[] = [];
    const e2eRecords = all.map((record) => ({ ...record, timestamp: 0 }));
    const follower = await log.consume(
      {
        groupId: `bench-e2e-${run}`,
        topics: [e2eTopic],
        fromBeginning: false,
        partitionConcurrency: PARTITIONS,
      },
      (batch) => {
        const now = Date.now();
        for (const record of batch.records) latencies.push(now - record.timestamp);
        return Promise.resolve();
      },
    );
    // Records sent before the group's start is pinned would be skipped (kafkajs pins after joining).
    while (follower.assignment().length < PARTITIONS) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const e2eStarted = performance.now();
    let next = 0;
    const worker = async () => {
      while (next < e2eRecords.length) {
        const sentAt = Date.now();
        const batch = e2eRecords.slice(next, next + BATCH).map((record) => ({
          ...record,
          timestamp: sentAt,
        }));
        next += BATCH;
        await log.send(e2eTopic, batch);
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    await untilReceived(() => latencies.length, N);
    const e2eMs = performance.now() - e2eStarted;
    await follower.stop();
    latencies.sort((a, b) => a - b);
    const result: RoundResult = {
      produce: N / (produceMs / 1000),
      consume: N / (consumeMs / 1000),
      endToEnd: N / (e2eMs / 1000),
      p50: latencies[Math.floor(latencies.length * 0.5)]!,
      p99: latencies[Math.floor(latencies.length * 0.99)]!,
    };
    write(
      `  ${adapter} round ${index + 1}: produce ${result.produce.toFixed(0)}/s, consume ` +
        `${result.consume.toFixed(0)}/s, end to end ${result.endToEnd.toFixed(0)}/s ` +
        `(latency p50 ${result.p50} ms, p99 ${result.p99} ms)\n`,
    );
    return result;
  } finally {
    await log.close();
    await deleteTopics([topic, e2eTopic]);
  }
}

async function deleteTopics(topics: string[]): Promise<void> {
  const admin = createKafkaClient({ brokers, retry: { retries: 0 } }).admin();
  try {
    await admin.connect();
    await admin.deleteTopics({ topics });
  } catch {
    // Unique names keep a leftover from disturbing another run.
  } finally {
    await admin.disconnect();
  }
}

if (import.meta.main) {
  await engineUp(ENGINES.filter((engine) => engine.name === "kafka"));
  write(
    `Event log adapters: ${N} records of ${VALUE_BYTES} B, ${PARTITIONS} partitions, ${ROUNDS} ` +
      `rounds each, taking turns (load average before: ${loadAverage()})\n`,
  );
  const results = new Map<Adapter, RoundResult[]>(ADAPTERS.map((adapter) => [adapter, []]));
  for (let index = 0; index < ROUNDS; index++) {
    for (const adapter of ADAPTERS) results.get(adapter)!.push(await round(adapter, index));
  }
  const of = (adapter: Adapter, field: keyof RoundResult) =>
    median(results.get(adapter)!.map((result) => result[field])).toFixed(0);
  for (const adapter of ADAPTERS) {
    write(
      `${adapter} median: produce ${of(adapter, "produce")}/s, consume ${
        of(adapter, "consume")
      }/s, end to end ${of(adapter, "endToEnd")}/s, latency p50 ${of(adapter, "p50")} ms, p99 ${
        of(adapter, "p99")
      } ms\n`,
    );
  }
  write(`(load average after: ${loadAverage()})\n`);
}
