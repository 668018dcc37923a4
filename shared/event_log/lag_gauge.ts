/** A consumer group's lag as a Prometheus gauge, one series per topic and partition. */
import type { MetricsRegistry } from "../metrics/metrics.ts";
import type { EventLog } from "./event_log.ts";

export interface LagGaugeOptions {
  readonly name: string;
  readonly help: string;
  readonly eventLog: EventLog;
  readonly groupId: string;
  readonly topics: readonly string[];
}

/** Registers a gauge read from `eventLog.lag` on every scrape. */
export function registerLagGauge(metrics: MetricsRegistry, options: LagGaugeOptions): void {
  const { eventLog, groupId, topics } = options;
  metrics.gauge(options.name, options.help, async () => {
    const lags = await Promise.all(topics.map((topic) => eventLog.lag(groupId, topic)));
    return lags.flat().map((partition) => ({
      labels: { group: groupId, topic: partition.topic, partition: String(partition.partition) },
      value: partition.lag,
    }));
  });
}
