/** A service context for tests: a quiet logger, a fresh metrics registry, its tracer. */
import { serviceLogger } from "../log/log.ts";
import { MetricsRegistry } from "../metrics/metrics.ts";
import type { ServiceContext } from "../service/service.ts";
import { serviceTracer } from "../trace/tracing.ts";

/** The version test contexts report. */
export const TEST_VERSION = "0.0.0-test";

export function testContext(name: string): ServiceContext {
  const instanceId = `${name}-test`;
  return {
    name,
    instanceId,
    version: TEST_VERSION,
    logger: serviceLogger(name, instanceId),
    metrics: new MetricsRegistry(),
    tracer: serviceTracer(name),
  };
}
