/** A consumer group's lag as a Prometheus gauge, one series per partition. */
import type { MetricsRegistry } from "../metrics/metrics.ts";
import type { EventLog } from "./event_log.ts";

export interface LagGaugeOptions {
  readonly name: string;
  readonly help: string;
  readonly eventLog: EventLog;
  readonly groupId: string;
  readonly topic: string;
}

/** Registers a gauge read from `eventLog.lag` on every scrape. */
export function registerLagGauge(metrics: MetricsRegistry, options: LagGaugeOptions): void {
  const { eventLog, groupId, topic } = options;
  metrics.gauge(
    options.name,
    options.help,
    async () =>
      (await eventLog.lag(groupId, topic)).map((partition) => ({
        labels: { group: groupId, topic, partition: String(partition.partition) },
        value: partition.lag,
      })),
  );
}
