/** Kafka through kafkajs (KAFKA_CLIENT=kafkajs). */
import type { EventLog } from "../../shared/event_log/event_log.ts";
import { createKafkaClient } from "../../shared/event_log/kafka_client.ts";
import { KafkaEventLog } from "../../shared/event_log/kafka_event_log.ts";
import type { Logger } from "../../shared/log/log.ts";
import { type AppConfig, isKafkajsCompression } from "../config.ts";

export function kafkajsEventLog(settings: AppConfig["eventLog"], logger: Logger): EventLog {
  const compression = settings.kafkaCompression;
  // loadConfig refuses the others with KAFKA_CLIENT=kafkajs.
  if (!isKafkajsCompression(compression)) {
    throw new RangeError(`kafkajs cannot compress with ${compression}: only gzip or none`);
  }
  const client = createKafkaClient({
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
  });
  return new KafkaEventLog(client, { compression });
}
