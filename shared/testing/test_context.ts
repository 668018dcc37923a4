/** A service context for tests: a quiet logger, a fresh metrics registry, its tracer. */
import { serviceLogger } from "../log/log.ts";
import { MetricsRegistry } from "../metrics/metrics.ts";
import type { ServiceContext } from "../service/service.ts";
import { serviceTracer } from "../trace/tracing.ts";

export function testContext(name: string): ServiceContext {
  const instanceId = `${name}-test`;
  return {
    name,
    instanceId,
    logger: serviceLogger(name, instanceId),
    metrics: new MetricsRegistry(),
    tracer: serviceTracer(name),
  };
}
