/** A service context for tests: a quiet logger and a fresh metrics registry. */
import { serviceLogger } from "../log/log.ts";
import { MetricsRegistry } from "../metrics/metrics.ts";
import type { ServiceContext } from "../service/service.ts";

export function testContext(name: string): ServiceContext {
  const instanceId = `${name}-test`;
  return {
    name,
    instanceId,
    logger: serviceLogger(name, instanceId),
    metrics: new MetricsRegistry(),
  };
}
