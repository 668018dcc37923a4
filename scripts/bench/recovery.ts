/**
 * `deno task bench:recovery [rounds]`: how long indexing stalls when the
 * indexer process is killed with SIGKILL and restarted at once, on the real
 * engines (brought up if needed). A stream process produces tweets at a
 * steady rate throughout; each round kills the indexer, starts a new one
 * with the same settings, and measures from the kill until the group commits
 * past where it stood (the indexer commits only after Elasticsearch accepted
 * the batch: indexing again). The Kafka clients take turns over the rounds:
 *
 * - platformatic, with INSTANCE_ID set: static membership, the restarted
 *   process rejoins as the same member and gets its partitions back at once;
 * - kafkajs (dynamic membership only): the dead member holds its partitions
 *   until its session times out (10 s), then the group rebalances.
 *
 * Numbers, never a pass/fail; medians per client.
 */
import { loadConfig } from "../../services/config.ts";
import { Infrastructure } from "../../services/infrastructure.ts";
import { serviceLogger } from "../../shared/log/log.ts";
import { ENGINES, engineUp, write } from "../engines/engines.ts";
import { loadAverage, median, spawnService } from "./_service_process.ts";

const ROUNDS = Number(Deno.args[0] ?? 3);
const RATE = 200;
const CLIENTS = ["platformatic", "kafkajs"] as const;
type Client = (typeof CLIENTS)[number];
/** Longest a round waits for indexing to resume before it reports a timeout. */
const GIVE_UP_MS = 60_000;

function envFor(run: string, client: Client): Record<string, string> {
  return {
    EVENT_LOG: "kafka",
    KAFKA_CLIENT: client,
    SEARCH_INDEX: "elasticsearch",
    KAFKA_BROKERS: Deno.env.get("KAFKA_BROKERS") ?? "127.0.0.1:19092",
    ELASTICSEARCH_URL: Deno.env.get("ELASTICSEARCH_URL") ?? "http://127.0.0.1:9200",
    ELASTICSEARCH_INDEX: `bench-recovery-${run}`,
    TWEET_TOPIC: `bench-recovery-${run}`,
    INDEXER_DEAD_LETTER_TOPIC: `bench-recovery-${run}.dlq`,
    INDEXER_GROUP_ID: `bench-recovery-indexer-${run}`,
    // Stable across the restart: the indexer's consumer becomes a static member.
    INSTANCE_ID: `indexer-${run}`,
    STREAM_COUNT: "0",
    STREAM_RATE_PER_SECOND: String(RATE),
    STREAM_PORT: "0",
    INDEXER_PORT: "0",
  };
}

const INDEXER_READY = /Indexing \S+ as group/;

/** One round: the stall in milliseconds from SIGKILL to the first commit past the kill. */
async function round(client: Client, index: number): Promise<number> {
  const run = `${client}-${index}-${crypto.randomUUID().slice(0, 6)}`;
  const env = envFor(run, client);
  const config = loadConfig(env);
  const infrastructure = new Infrastructure(config, serviceLogger("bench", run));
  const log = await infrastructure.eventLog();
  const committed = async () =>
    (await log.lag(config.indexer.groupId, config.tweets.topic).catch(() => []))
      .reduce((sum, partition) => sum + partition.committedOffset, 0);
  let indexer = await spawnService("indexer", env, INDEXER_READY);
  const stream = await spawnService("stream", env, /Producing mock tweets/);
  try {
    // Steady state first: the group commits, so the indexer is indexing.
    const warm = performance.now();
    while ((await committed()) < RATE && performance.now() - warm < GIVE_UP_MS) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await indexer.kill();
    const killed = performance.now();
    const before = await committed();
    indexer = await spawnService("indexer", env, INDEXER_READY);
    const restarted = performance.now() - killed;
    for (;;) {
      if ((await committed()) > before) break;
      if (performance.now() - killed > GIVE_UP_MS) return Infinity;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const stall = performance.now() - killed;
    write(
      `  ${client} round ${index + 1}: indexing again ${stall.toFixed(0)} ms after the kill ` +
        `(the new process was up after ${restarted.toFixed(0)} ms)\n`,
    );
    return stall;
  } finally {
    await stream.stop();
    await indexer.stop();
    await infrastructure.close();
    await fetch(`${config.searchIndex.elasticsearchUrl}/${config.searchIndex.elasticsearchIndex}`, {
      method: "DELETE",
    }).then((response) => response.body?.cancel()).catch(() => {});
  }
}

if (import.meta.main) {
  await engineUp(
    ENGINES.filter((engine) => engine.name === "kafka" || engine.name === "elasticsearch"),
  );
  write(
    `Recovery after SIGKILL of the indexer and an immediate restart, ${ROUNDS} rounds per ` +
      `client, ${RATE} tweets/s (load average before: ${loadAverage()})\n`,
  );
  const stalls = new Map<Client, number[]>(CLIENTS.map((client) => [client, []]));
  for (let index = 0; index < ROUNDS; index++) {
    for (const client of CLIENTS) stalls.get(client)!.push(await round(client, index));
  }
  const summary = CLIENTS.map((client) => `${client} ${median(stalls.get(client)!).toFixed(0)} ms`)
    .join(", ");
  write(
    `recovery median (SIGKILL to indexing again): ${summary} (load average after: ${loadAverage()})\n`,
  );
}
