/** Kafka through @platformatic/kafka (KAFKA_CLIENT=platformatic). */
import type { EventLog } from "../../shared/event_log/event_log.ts";
import { createPlatformaticClient } from "../../shared/event_log/platformatic_client.ts";
import { PlatformaticEventLog } from "../../shared/event_log/platformatic_event_log.ts";
import type { Logger } from "../../shared/log/log.ts";
import type { AppConfig } from "../config.ts";

export function platformaticEventLog(
  settings: AppConfig["eventLog"],
  instanceId: string,
  logger: Logger,
): EventLog {
  return new PlatformaticEventLog(
    createPlatformaticClient({ clientId: settings.kafkaClientId, brokers: settings.kafkaBrokers }),
    {
      compression: settings.kafkaCompression,
      // A restarted process with the same INSTANCE_ID rejoins as the same
      // static member and takes its partitions back without a rebalance.
      ...(instanceId === "" ? {} : { instanceIdFor: (groupId) => `${groupId}-${instanceId}` }),
      onError: (error, context) =>
        logger.warn("Kafka: {context}: {error}", { context, error: String(error) }),
    },
  );
}
