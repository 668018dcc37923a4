/**
 * PlatformaticEventLog against a real broker: the shared contract plus static
 * membership, which only this adapter has. The broker is `KAFKA_BROKERS`
 * (comma-separated) or the one `deno task engines up kafka` starts; when it is
 * unreachable every test fails with that advice, none is skipped.
 */
import { Admin } from "@platformatic/kafka";
import type {
  EventLog,
  PartitionLag,
  ProducerRecord,
  RecordMetadata,
  TopicSpec,
} from "./event_log.ts";
import { runEventLogContract } from "./event_log_contract.ts";
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
