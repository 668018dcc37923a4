import assert from "node:assert/strict";
import { MetricsRegistry } from "../metrics/metrics.ts";
import { registerLagGauge } from "./lag_gauge.ts";
import { MemoryEventLog } from "./memory_event_log.ts";

Deno.test("the lag gauge renders no samples for a topic not created yet, then the group's lag", async () => {
  const eventLog = new MemoryEventLog();
  const metrics = new MetricsRegistry();
  registerLagGauge(metrics, { eventLog, groupId: "indexer", topic: "tweets" });
  assert.doesNotMatch(await metrics.render(), /event_log_consumer_lag\{/);

  await eventLog.ensureTopic({ name: "tweets", partitions: 1 });
  await eventLog.send("tweets", [{ key: null, value: new Uint8Array([1]) }]);
  assert.match(
    await metrics.render(),
    /^event_log_consumer_lag\{group="indexer",partition="0",topic="tweets"\} 1$/m,
  );
  await eventLog.close();
});
