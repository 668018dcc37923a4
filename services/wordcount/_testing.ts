/**
 * Helpers of the wordcount tests: tweets with known words and their exact
 * counts, reading the word-count topic back, and instances served on
 * loopback that find each other through a discovery fed by their metadata.
 */
import assert from "node:assert/strict";
import type {
  ServiceDiscovery,
  ServiceInstance,
} from "../../shared/discovery/service_discovery.ts";
import type { EventLog, ProducerRecord } from "../../shared/event_log/event_log.ts";
import { encodeLongKey } from "../../shared/event_log/murmur2.ts";
import type { TweetCodec } from "../../shared/events/tweet_event.ts";
import type { WordCountCodec } from "../../shared/events/word_count_event.ts";
import type { Service } from "../../shared/service/service.ts";
import type { AppConfig } from "../config.ts";

/**
 * Words that tokenise to themselves once lower-cased: Latin, accented and
 * non-Latin letters, digits and `_` (escapes, as the lint rule wants ASCII).
 */
export const VOCABULARY = [
  "kafka",
  "deno",
  "streams",
  "exactly",
  "once",
  "java",
  "spring",
  "elasticsearch",
  "microservices",
  "partition",
  "offset",
  "changelog",
  "caf\u00e9",
  "na\u00efve",
  "\u6771\u4eac",
  "\u00fcber",
  "2026",
  "v2",
  "snake_case",
  "x",
];
const SEPARATORS = [" ", ", ", "! ", " - ", "... ", "\n", " #", " (", ") ", "?"];

/** A deterministic pseudo-random sequence (xorshift), so runs are reproducible. */
function random(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 4294967296;
  };
}

export interface KnownTweets {
  /** Encoded tweets, keyed by user id like the stream service's. */
  readonly records: ProducerRecord[];
  /** Exact count per word, computed while writing the texts. */
  readonly expected: Map<string, number>;
}

/**
 * `count` tweets of 0 to 12 vocabulary words in random case between random
 * punctuation; every 50th tweet has no text (it counts nothing).
 */
export function knownTweets(codec: TweetCodec, count: number, seed = 42): KnownTweets {
  const next = random(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
  const expected = new Map<string, number>();
  const records: ProducerRecord[] = [];
  const now = Date.now();
  for (let i = 0; i < count; i++) {
    let text: string | null = null;
    if (i % 50 !== 49) {
      const words = Array.from({ length: Math.floor(next() * 13) }, () => pick(VOCABULARY));
      for (const word of words) expected.set(word, (expected.get(word) ?? 0) + 1);
      text = words.map((word) => (next() < 0.3 ? word.toUpperCase() : word) + pick(SEPARATORS))
        .join("");
    }
    const userId = BigInt(i % 97);
    records.push({
      key: encodeLongKey(userId),
      value: codec.encode({ id: BigInt(i + 1), userId, text, createdAt: now, source: "test" }),
    });
  }
  return { records, expected };
}

/** Sends records in slices, as a stream would. */
export async function sendAll(
  log: EventLog,
  topic: string,
  records: readonly ProducerRecord[],
): Promise<void> {
  for (let start = 0; start < records.length; start += 1000) {
    await log.send(topic, records.slice(start, start + 1000));
  }
}

/** The latest count per word on the word-count topic. */
export async function latestCounts(
  log: EventLog,
  codec: WordCountCodec,
  config: AppConfig,
): Promise<Map<string, number>> {
  const latest = new Map<string, number>();
  for (let partition = 0; partition < config.wordCounts.partitions; partition++) {
    await log.readPartition(config.wordCounts.topic, partition, 0, (records) => {
      for (const record of records) {
        const event = codec.decode(record.value);
        latest.set(event.word, Number(event.count));
      }
    });
  }
  return latest;
}

export function sorted(counts: ReadonlyMap<string, number>): [string, number][] {
  return [...counts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The words whose counts differ, as `word: actual != expected`; "" when none do. */
export function countDifferences(
  actual: ReadonlyMap<string, number>,
  expected: ReadonlyMap<string, number>,
): string {
  const words = new Set([...actual.keys(), ...expected.keys()]);
  return [...words].filter((word) => actual.get(word) !== expected.get(word))
    .slice(0, 10)
    .map((word) => `${word}: ${actual.get(word)} != ${expected.get(word)}`)
    .join(", ");
}

/** Asks `baseUrl` for every expected word; the answers as a map. */
export async function apiCounts(
  baseUrl: string,
  headers: HeadersInit,
  words: Iterable<string>,
): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const word of words) {
    const response = await fetch(`${baseUrl}/api/v1/words/${encodeURIComponent(word)}`, {
      headers,
    });
    const body = await response.json();
    assert.equal(response.status, 200, `GET ${word}: ${JSON.stringify(body)}`);
    counts.set(word, body.count);
  }
  return counts;
}

/** Instances registered by their published metadata, as the registry would hold them. */
export class MetadataDiscovery implements ServiceDiscovery {
  readonly #instances = new Map<string, ServiceInstance>();

  instances(service: string): Promise<readonly ServiceInstance[]> {
    return Promise.resolve([...this.#instances.values()].filter((i) => i.service === service));
  }

  /** Serves `service` on loopback and registers it with the metadata it publishes. */
  serve(service: Service, instanceId: string): { url: string; shutdown(): Promise<void> } {
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      service.app.fetch,
    );
    const url = `http://127.0.0.1:${server.addr.port}`;
    const register = (metadata: Readonly<Record<string, string>>) =>
      this.#instances.set(instanceId, {
        service: service.name,
        instanceId,
        baseUrl: url,
        version: "test",
        metadata,
      });
    if (service.publishMetadata === undefined) register({});
    else service.publishMetadata(register);
    return {
      url,
      shutdown: async () => {
        this.#instances.delete(instanceId);
        await server.shutdown();
      },
    };
  }
}
