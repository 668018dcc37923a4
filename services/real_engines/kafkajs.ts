/** Kafka through kafkajs (KAFKA_CLIENT=kafkajs). */
import type { EventLog } from "../../shared/event_log/event_log.ts";
import { createKafkaClient } from "../../shared/event_log/kafka_client.ts";
import { KafkaEventLog } from "../../shared/event_log/kafka_event_log.ts";
import type { Logger } from "../../shared/log/log.ts";
import type { AppConfig } from "../config.ts";

export function kafkajsEventLog(settings: AppConfig["eventLog"], logger: Logger): EventLog {
  return new KafkaEventLog(createKafkaClient({
    clientId: settings.kafkaClientId,
    brokers: settings.kafkaBrokers,
    logLevel: "warn",
    // kafkajs repeats every connection failure it retries; the services
    // report an unreachable Kafka once per retry of their own, loudly.
    onLog: (entry) =>
      logger.debug("kafkajs {namespace}: {message}", {
        namespace: entry.namespace,
        message: entry.message,
        level: entry.level,
      }),
  }));
}
