/**
 * The wordcount service on a real Kafka (127.0.0.1:19092, or KAFKA_BROKERS):
 * exact counts after 10,000 tweets with two instances sharing the
 * partitions, and exact again after the service process is killed with
 * SIGKILL mid-stream and restarted. Every topic and group name is unique to
 * the run. Fails, never skips, when Kafka is down.
 */
import assert from "node:assert/strict";
import type { EventLog } from "../../shared/event_log/event_log.ts";
import { loadTweetCodec } from "../../shared/events/tweet_event.ts";
import { loadWordCountCodec } from "../../shared/events/word_count_event.ts";
import { serviceLogger } from "../../shared/log/log.ts";
import { MetricsRegistry } from "../../shared/metrics/metrics.ts";
import { serviceTracer } from "../../shared/trace/tracing.ts";
import { TEST_VERSION } from "../../shared/testing/test_context.ts";
import { createTestIssuer } from "../../shared/testing/test_issuer.ts";
import { delay, waitFor } from "../../shared/testing/wait.ts";
import { createKafkaClient } from "../../shared/event_log/kafka_client.ts";
import { type AppConfig, loadConfig } from "../config.ts";
import { passwordGrantToken, testIdentity } from "../identity/_testing.ts";
import { Infrastructure } from "../infrastructure.ts";
import { createWordCountService } from "./main.ts";
import {
  apiCounts,
  countDifferences,
  knownTweets,
  latestCounts,
  MetadataDiscovery,
  sendAll,
  sorted,
} from "./_testing.ts";

const BROKERS = Deno.env.get("KAFKA_BROKERS") ?? "127.0.0.1:19092";
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const tweetCodec = await loadTweetCodec();
const wordCountCodec = await loadWordCountCodec();

/** Both Kafka clients run every test: each must count exactly once. */
const KAFKA_CLIENTS = ["platformatic", "kafkajs"] as const;
type KafkaClient = (typeof KAFKA_CLIENTS)[number];

/** Settings naming topics and the group after the run, so runs never share them. */
function runEnv(run: string, client: KafkaClient): Record<string, string> {
  return {
    EVENT_LOG: "kafka",
    KAFKA_CLIENT: client,
    KAFKA_BROKERS: BROKERS,
    TWEET_TOPIC: `wc-tweets-${run}`,
    WORD_COUNT_TOPIC: `wc-counts-${run}`,
    WORDCOUNT_REPARTITION_TOPIC: `wc-repartition-${run}`,
    WORDCOUNT_CHANGELOG_TOPIC: `wc-changelog-${run}`,
    WORDCOUNT_GROUP_ID: `wc-${run}`,
    WORDCOUNT_COMMIT_INTERVAL_MS: "200",
  };
}

async function kafkaLog(
  config: AppConfig,
): Promise<{ log: EventLog; infrastructure: Infrastructure }> {
  const infrastructure = new Infrastructure(
    config,
    serviceLogger("test", "wordcount-kafka"),
  );
  const log = await infrastructure.eventLog();
  await log.ping().catch((cause) => {
    throw new Error(
      `Kafka is not reachable at ${BROKERS}: start it with \`deno task engines up kafka\``,
      { cause },
    );
  });
  return { log, infrastructure };
}

async function deleteTopics(config: AppConfig): Promise<void> {
  const admin = createKafkaClient({ brokers: BROKERS.split(","), retry: { retries: 0 } }).admin();
  try {
    await admin.connect();
    await admin.deleteTopics({
      topics: [
        config.tweets.topic,
        config.wordCounts.topic,
        config.wordcount.repartitionTopic,
        config.wordcount.changelogTopic,
      ],
    });
    await admin.deleteGroups([config.wordcount.groupId]).catch(() => {});
  } catch {
    // Unique names keep a leftover from disturbing another run.
  } finally {
    await admin.disconnect();
  }
}

/** Keeps the last lines a child wrote, to show when the test fails. */
async function drain(stream: ReadableStream<Uint8Array>, into: string[]): Promise<void> {
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    into.push(chunk);
    if (into.length > 200) into.splice(0, into.length - 200);
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

for (const client of KAFKA_CLIENTS) {
  Deno.test({
    name:
      `two wordcount instances on Kafka (${client}) count 10,000 tweets exactly and answer every word`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const run = crypto.randomUUID().slice(0, 8);
      const config = loadConfig(runEnv(run, client));
      const { log, infrastructure } = await kafkaLog(config);
      const discovery = new MetadataDiscovery();
      const instances: { stop(): Promise<void>; url: string }[] = [];
      const issuer = await createTestIssuer();
      const reader = await issuer.authorization({ audience: "wordcount" });
      const start = async (instanceId: string) => {
        // Each instance has its own Kafka clients, as separate processes would.
        const own = new Infrastructure(config, serviceLogger("wordcount", instanceId));
        const service = createWordCountService({
          config,
          context: {
            name: "wordcount",
            instanceId,
            version: TEST_VERSION,
            logger: serviceLogger("wordcount", instanceId),
            metrics: new MetricsRegistry(),
            tracer: serviceTracer("wordcount"),
          },
          eventLog: await own.eventLog(),
          tweetCodec,
          wordCountCodec,
          discovery,
          verifier: issuer.verifier("wordcount"),
        });
        const server = discovery.serve(service, instanceId);
        await service.start();
        instances.push({
          url: server.url,
          stop: async () => {
            await service.stop();
            await server.shutdown();
            await own.close();
          },
        });
      };
      try {
        const { records, expected } = knownTweets(tweetCodec, 10_000, 11);
        await log.ensureTopic({ name: config.tweets.topic, partitions: config.tweets.partitions });
        await start(`wc-a-${run}`);
        await sendAll(log, config.tweets.topic, records.slice(0, 5000));
        await start(`wc-b-${run}`);
        await sendAll(log, config.tweets.topic, records.slice(5000));
        for (const instance of instances) {
          let lastSeen = "";
          await waitFor("an instance to answer every word exactly", async () => {
            try {
              lastSeen = countDifferences(
                await apiCounts(instance.url, reader, expected.keys()),
                expected,
              );
            } catch (error) {
              lastSeen = String(error);
            }
            if (lastSeen === "") return true;
            await delay(500);
            return false;
          }, 120_000).catch((error) => {
            throw new Error(`${error.message}; last seen: ${lastSeen}`, { cause: error });
          });
        }
        const owners = (await discovery.instances("wordcount"))
          .map((instance) => instance.metadata["wordcount-partitions"] ?? "");
        assert.ok(
          owners.every((list) => list !== ""),
          `both own partitions: ${owners.join(" | ")}`,
        );
        await waitFor("the word-count topic to hold the exact counts", async () => {
          const latest = await latestCounts(log, wordCountCodec, config);
          if (sorted(latest).join() === sorted(expected).join()) return true;
          await delay(500);
          return false;
        }, 60_000);

        // The second leaves: the first restores its partitions from the changelog.
        await instances.pop()!.stop();
        await waitFor("the remaining instance to own every partition", async () => {
          const [only] = await discovery.instances("wordcount");
          return only?.metadata["wordcount-partitions"] === "0,1,2";
        }, 60_000);
        assert.deepEqual(
          sorted(await apiCounts(instances[0]!.url, reader, expected.keys())),
          sorted(expected),
        );
      } finally {
        for (const instance of instances.reverse()) await instance.stop();
        await infrastructure.close();
        await deleteTopics(config);
      }
    },
  });

  Deno.test({
    name:
      `wordcount on Kafka (${client}) counts exactly after its process is killed (-9) mid-stream`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const run = crypto.randomUUID().slice(0, 8);
      const env = runEnv(run, client);
      const config = loadConfig(env);
      const { log, infrastructure } = await kafkaLog(config);
      const identity = await testIdentity();
      const identityServer = Deno.serve(
        { hostname: "127.0.0.1", port: 0, onListen: () => {} },
        identity.service.app.fetch,
      );
      const issuer = `http://127.0.0.1:${identityServer.addr.port}/realms/twitterapi`;
      const port = freePort();
      const output: string[] = [];
      const exits: number[] = [];
      const spawn = () => {
        const child = new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--allow-net",
            "--allow-env",
            "--allow-read",
            "--allow-sys=hostname,osRelease,homedir",
            MAIN,
            "wordcount",
          ],
          env: {
            ...env,
            NO_COLOR: "1",
            // The same id after the restart: its transactions fence the killed one's.
            INSTANCE_ID: `wordcount-kill-${run}`,
            WORDCOUNT_PORT: String(port),
            OIDC_ISSUER: issuer,
            REGISTRY_URLS: "http://127.0.0.1:9",
            LOG_LEVEL: "warning",
          },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        void drain(child.stdout, output);
        void drain(child.stderr, output);
        child.status.then((status) => exits.push(status.code));
        return child;
      };
      let child = spawn();
      let producing: Promise<void> = Promise.resolve();
      try {
        const { records, expected } = knownTweets(tweetCodec, 10_000, 23);
        await log.ensureTopic({ name: config.tweets.topic, partitions: config.tweets.partitions });
        await sendAll(log, config.tweets.topic, records.slice(0, 3000));
        // The rest arrives while the process is killed and restarted.
        producing = (async () => {
          for (let start = 3000; start < records.length; start += 250) {
            await log.send(config.tweets.topic, records.slice(start, start + 250));
            await delay(100);
          }
        })();
        await waitFor("the first commits of the tweet topic", async () => {
          if (exits.length > 0) throw new Error(`wordcount exited with code ${exits[0]}`);
          const lag = await log.lag(config.wordcount.groupId, config.tweets.topic).catch(() => []);
          const committed = lag.reduce((sum, partition) => sum + partition.committedOffset, 0);
          if (committed >= 2000) return true;
          await delay(100);
          return false;
        }, 120_000).catch((error) => {
          throw new Error(`${error.message}\nchild output:\n${output.join("")}`);
        });
        child.kill("SIGKILL");
        const killed = await child.status;
        assert.equal(killed.signal, "SIGKILL");
        child = spawn();
        await producing;

        const token = await passwordGrantToken(
          `${issuer}/protocol/openid-connect/token`,
          "app_user",
        );
        const headers = { authorization: `Bearer ${token}` };
        const baseUrl = `http://127.0.0.1:${port}`;
        await waitFor("the restarted process to answer every word exactly", async () => {
          const counts = await apiCounts(baseUrl, headers, expected.keys()).catch(() => new Map());
          if (sorted(counts).join() === sorted(expected).join()) return true;
          await delay(500);
          return false;
        }, 180_000).catch((error) => {
          throw new Error(`${error.message}\nchild output:\n${output.join("")}`);
        });
        await waitFor("the word-count topic to hold the exact counts", async () => {
          const latest = await latestCounts(log, wordCountCodec, config);
          if (sorted(latest).join() === sorted(expected).join()) return true;
          await delay(500);
          return false;
        }, 60_000);
      } finally {
        await producing.catch(() => {});
        try {
          child.kill("SIGTERM");
        } catch {
          // Already exited.
        }
        await child.status;
        await identityServer.shutdown();
        await infrastructure.close();
        await deleteTopics(config);
      }
    },
  });
}
