/**
 * Consumer lag as one Prometheus gauge, `event_log_consumer_lag{group,topic,partition}`:
 * the records of a partition that the group has not committed yet. Every
 * consumer of a service adds its group and topic to the same gauge.
 */
import type { GaugeSample, MetricsRegistry } from "../metrics/metrics.ts";
import { type EventLog, UnknownTopicError } from "./event_log.ts";

export const CONSUMER_LAG_METRIC = "event_log_consumer_lag";

export interface LagGaugeOptions {
  readonly eventLog: EventLog;
  readonly groupId: string;
  readonly topic: string;
}

/** The consumers of each registry's gauge. */
const sources = new WeakMap<MetricsRegistry, LagGaugeOptions[]>();

/** Adds the group's lag on `topic` to the registry's lag gauge, read from `eventLog.lag` on every scrape. */
export function registerLagGauge(metrics: MetricsRegistry, options: LagGaugeOptions): void {
  let consumers = sources.get(metrics);
  if (consumers === undefined) {
    const registered: LagGaugeOptions[] = [];
    consumers = registered;
    sources.set(metrics, registered);
    metrics.gauge(
      CONSUMER_LAG_METRIC,
      "Records of a partition not yet committed by the consumer group.",
      async () => (await Promise.all(registered.map(lagSamples))).flat(),
    );
  }
  consumers.push(options);
}

/** No samples for a topic the consumer has not created yet (a scrape during start-up). */
async function lagSamples(options: LagGaugeOptions): Promise<GaugeSample[]> {
  const { eventLog, groupId, topic } = options;
  try {
    return (await eventLog.lag(groupId, topic)).map((partition) => ({
      labels: { group: groupId, topic, partition: String(partition.partition) },
      value: partition.lag,
    }));
  } catch (error) {
    if (error instanceof UnknownTopicError) return [];
    throw error;
  }
}
