import assert from "node:assert/strict";
import { testContext } from "../testing/test_context.ts";
import { waitFor } from "../testing/wait.ts";
import { ConsumerService } from "./consumer_service.ts";
import { DEAD_LETTER_HEADERS } from "./dead_letter.ts";
import type { ConsumedRecord } from "./event_log.ts";
import { text, textOf } from "./event_log_contract.ts";
import { MemoryEventLog } from "./memory_event_log.ts";

Deno.test("ConsumerService creates its topics, dead-letters, retries failed batches and reports lag", async () => {
  const eventLog = new MemoryEventLog({ retryBackoffMs: 10 });
  const context = testContext("numbers");
  const consumer = new ConsumerService({
    context,
    eventLog,
    groupId: "numbers-group",
    topics: [
      { name: "numbers", partitions: 2 },
      { name: "numbers.dlq", partitions: 2 },
      { name: "other", partitions: 1 },
    ],
    metricPrefix: "numbers",
    lagTopics: ["numbers", "other"],
  });
  const sums: number[] = [];
  let failuresLeft = 2;
  const handler = consumer.deadLettering({
    deadLetterTopic: "numbers.dlq",
    outcome: "summed",
    decode(record) {
      const value = Number(textOf(record));
      if (!Number.isInteger(value)) throw new TypeError(`not a number: ${textOf(record)}`);
      return value;
    },
    handle(decoded) {
      if (failuresLeft-- > 0) return Promise.reject(new Error("sum store down"));
      sums.push(decoded.reduce((sum, { value }) => sum + value, 0));
      return Promise.resolve(decoded.length);
    },
  });
  try {
    await consumer.consume({ action: "sum", topics: ["numbers"] }, handler);
    assert.ok(consumer.member?.assignment().length === 2, "joined and owns both partitions");
    await eventLog.send(
      "numbers",
      ["1", "2", "x", "4"].map((value) => ({
        key: text("k"),
        value: text(value),
      })),
    );
    await waitFor("the batch to be handled", () => sums.length === 1);
    assert.deepEqual(sums, [7]);

    const dead: ConsumedRecord[] = [];
    const reader = await eventLog.consume({ groupId: "dlq", topics: ["numbers.dlq"] }, (batch) => {
      dead.push(...batch.records);
      return Promise.resolve();
    });
    await waitFor("the dead letter", () => dead.length >= 1);
    await reader.stop();
    // A dead letter is sent with every delivery of its batch: the failed ones too.
    assert.ok(dead.every((letter) => textOf(letter) === "x"));
    assert.equal(dead[0]?.headers[DEAD_LETTER_HEADERS.errorCode], "TypeError");

    await waitFor("no lag", async () => {
      const lag = await eventLog.lag("numbers-group", "numbers");
      return lag.every((partition) => partition.lag === 0);
    });
    const metrics = await context.metrics.render();
    assert.match(metrics, /numbers_events_total\{outcome="summed"\} 3/);
    assert.match(metrics, /numbers_events_total\{outcome="dead-lettered"\} 1/);
    assert.match(metrics, /numbers_batch_failures_total 2/);
    // Stage timings: every delivery is received and decoded, only the successful one handled.
    assert.match(metrics, /numbers_event_age_seconds_count\{stage="received"\} 12\n/);
    assert.match(metrics, /numbers_event_age_seconds_count\{stage="handled"\} 4\n/);
    assert.match(metrics, /numbers_batch_step_seconds_count\{step="decode"\} 3\n/);
    assert.match(metrics, /numbers_batch_step_seconds_count\{step="handle"\} 1\n/);
    assert.match(metrics, /numbers_batch_events_bucket\{le="5"\} 3\n/);
    for (const [topic, partition] of [["numbers", 0], ["numbers", 1], ["other", 0]]) {
      assert.match(
        metrics,
        new RegExp(
          `event_log_consumer_lag\\{group="numbers-group",partition="${partition}",topic="${topic}"\\} 0`,
        ),
      );
    }
  } finally {
    await consumer.stop();
    await eventLog.close();
  }
});
