/**
 * PlatformaticEventLog against a real broker: the shared contract plus static
 * membership, which only this adapter has. The broker is `KAFKA_BROKERS`
 * (comma-separated) or the one `deno task engines up kafka` starts; when it is
 * unreachable every test fails with that advice, none is skipped.
 */
import assert from "node:assert/strict";
import { Admin } from "@platformatic/kafka";
import type {
  EventLog,
  PartitionLag,
  ProducerRecord,
  RecordMetadata,
  TopicSpec,
} from "./event_log.ts";
import {
  runCompressedDeliveryTest,
  runEventLogContract,
  uniqueName,
} from "./event_log_contract.ts";
import { waitFor } from "../testing/wait.ts";
import { createPlatformaticClient } from "./platformatic_client.ts";
import {
  PlatformaticEventLog,
  type PlatformaticEventLogOptions,
} from "./platformatic_event_log.ts";

const BROKERS = Deno.env.get("KAFKA_BROKERS") ?? "127.0.0.1:19092";
const brokers = BROKERS.split(",").map((broker) => broker.trim()).filter(Boolean);

function quickAdmin(): Admin {
  return new Admin({
    clientId: "platformatic-event-log-test",
    bootstrapBrokers: brokers,
    connectTimeout: 2000,
    retries: 0,
  });
}

let reachable: Promise<void> | undefined;

/** Fails (once per file, cached) with how to start Kafka when it does not answer. */
function assertReachable(): Promise<void> {
  reachable ??= (async () => {
    const admin = quickAdmin();
    try {
      await admin.metadata({ topics: [] });
    } catch (error) {
      throw new Error(
        `Kafka is not reachable at ${BROKERS}: start it with \`deno task engines up kafka\` (${
          error instanceof Error ? error.message : String(error)
        })`,
      );
    } finally {
      await admin.close();
    }
  })();
  return reachable;
}

/**
 * The adapter under test, deleting the topics it created when closed so that
 * repeated runs leave the shared broker as they found it.
 */
class CleanLog implements EventLog {
  readonly #log: PlatformaticEventLog;
  readonly #topics = new Set<string>();

  constructor(options: PlatformaticEventLogOptions = {}) {
    this.#log = new PlatformaticEventLog(createPlatformaticClient({ brokers }), options);
  }

  async ensureTopic(spec: TopicSpec): Promise<void> {
    this.#topics.add(spec.name);
    await this.#log.ensureTopic(spec);
  }

  send(topic: string, records: readonly ProducerRecord[]): Promise<RecordMetadata[]> {
    return this.#log.send(topic, records);
  }

  consume(...args: Parameters<EventLog["consume"]>): ReturnType<EventLog["consume"]> {
    return this.#log.consume(...args);
  }

  consumeTransactional(
    ...args: Parameters<EventLog["consumeTransactional"]>
  ): ReturnType<EventLog["consumeTransactional"]> {
    return this.#log.consumeTransactional(...args);
  }

  readPartition(
    ...args: Parameters<EventLog["readPartition"]>
  ): ReturnType<EventLog["readPartition"]> {
    return this.#log.readPartition(...args);
  }

  lag(groupId: string, topic: string): Promise<PartitionLag[]> {
    return this.#log.lag(groupId, topic);
  }

  ping(): Promise<void> {
    return this.#log.ping();
  }

  async close(): Promise<void> {
    try {
      await this.#log.close();
    } finally {
      if (this.#topics.size > 0) {
        const admin = quickAdmin();
        try {
          await admin.deleteTopics({ topics: [...this.#topics] });
        } catch {
          // Unique names keep a leftover topic from disturbing another run.
        } finally {
          await admin.close();
        }
      }
    }
  }
}

async function createLog(options: PlatformaticEventLogOptions = {}): Promise<CleanLog> {
  await assertReachable();
  return new CleanLog(options);
}

runEventLogContract("PlatformaticEventLog", () => createLog());

// The contract runs uncompressed (KAFKA_COMPRESSION's default); every other choice once here.
for (const compression of ["gzip", "snappy", "lz4", "zstd"] as const) {
  runCompressedDeliveryTest("PlatformaticEventLog", compression, () => createLog({ compression }));
}

/** A member of `group` with a static instance id, in a process of its own that the test can kill. */
function spawnStaticMember(topic: string, group: string, instanceId: string): Deno.ChildProcess {
  const adapter = new URL("./platformatic_event_log.ts", import.meta.url).href;
  const client = new URL("./platformatic_client.ts", import.meta.url).href;
  const code = `
    import { PlatformaticEventLog } from ${JSON.stringify(adapter)};
    import { createPlatformaticClient } from ${JSON.stringify(client)};
    const log = new PlatformaticEventLog(createPlatformaticClient({ brokers: ${
    JSON.stringify(brokers)
  } }), {
      sessionTimeoutMs: ${STATIC_SESSION_TIMEOUT_MS},
      instanceIdFor: () => ${JSON.stringify(instanceId)},
    });
    const member = await log.consume({ groupId: ${JSON.stringify(group)}, topics: [${
    JSON.stringify(topic)
  }] }, () => Promise.resolve());
    while (member.assignment().length < 2) await new Promise((resolve) => setTimeout(resolve, 50));
    console.log("assigned");
    setInterval(() => {}, 1000);
  `;
  return new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

/** Long enough that a dynamic member's partitions would visibly wait for it. */
const STATIC_SESSION_TIMEOUT_MS = 30_000;

Deno.test("PlatformaticEventLog: a static member restarted after SIGKILL owns its partitions again before the session timeout", async () => {
  const log = await createLog();
  const group = uniqueName("static-group");
  const instanceId = `${group}-instance`;
  let member: { stop(): Promise<void>; assignment(): unknown[] } | undefined;
  const restartedLog = new PlatformaticEventLog(createPlatformaticClient({ brokers }), {
    sessionTimeoutMs: STATIC_SESSION_TIMEOUT_MS,
    instanceIdFor: () => instanceId,
  });
  try {
    const topic = uniqueName("static");
    await log.ensureTopic({ name: topic, partitions: 2 });
    const child = spawnStaticMember(topic, group, instanceId);
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    while (!seen.includes("assigned")) {
      const { value, done } = await lines.read();
      if (done) throw new Error("The static member's process ended before it owned its partitions");
      seen += value;
    }
    child.kill("SIGKILL");
    await child.status;
    await lines.cancel().catch(() => {});
    const killedAt = Date.now();
    member = await restartedLog.consume(
      { groupId: group, topics: [topic] },
      () => Promise.resolve(),
    );
    await waitFor(
      "the restarted static member to own both partitions",
      () => member!.assignment().length === 2,
      STATIC_SESSION_TIMEOUT_MS - 5_000,
    );
    const waited = Date.now() - killedAt;
    // A dynamic member would wait for the killed one's session to expire first.
    assert.ok(
      waited < STATIC_SESSION_TIMEOUT_MS,
      `the restarted member waited ${waited} ms, as long as the session timeout`,
    );
  } finally {
    await member?.stop().catch(() => {});
    await restartedLog.close();
    await log.close();
  }
});
