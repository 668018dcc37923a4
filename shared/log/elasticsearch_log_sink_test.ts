/**
 * The shipping sink against a private HTTP server that answers like
 * Elasticsearch (and fails when told): batching, the bound, drop counting,
 * back-off and the one line per outage. Its output against a real
 * Elasticsearch is in elasticsearch_log_reader_test.ts.
 */
import assert from "node:assert/strict";
import { Client } from "@elastic/elasticsearch";
import type { LogRecord } from "@logtape/logtape";
import { MetricsRegistry } from "../metrics/metrics.ts";
import { startTestServer } from "../testing/http_servers.ts";
import { waitFor } from "../testing/wait.ts";
import {
  ElasticsearchLogSink,
  type ElasticsearchLogSinkOptions,
  type ShippingStatusLogger,
} from "./elasticsearch_log_sink.ts";

const ES_HEADERS = { "content-type": "application/json", "x-elastic-product": "Elasticsearch" };

interface BulkRequest {
  readonly index: string;
  readonly messages: string[];
}

type Answer = "ok" | "down" | ((request: BulkRequest) => Response);

/** A fake Elasticsearch: accepts the template and bulk requests, or answers 503 while down. */
function fakeElasticsearch() {
  const bulks: BulkRequest[] = [];
  const templates: string[] = [];
  let answer: Answer = "ok";
  const server = startTestServer(async (request) => {
    const url = new URL(request.url);
    if (answer === "down") {
      await request.body?.cancel();
      return Response.json({ error: "unavailable" }, { status: 503, headers: ES_HEADERS });
    }
    if (url.pathname.startsWith("/_index_template/")) {
      templates.push(url.pathname.slice("/_index_template/".length));
      await request.body?.cancel();
      return Response.json({ acknowledged: true }, { headers: ES_HEADERS });
    }
    if (url.pathname === "/_bulk") {
      const lines = (await request.text()).trim().split("\n").map((line) => JSON.parse(line));
      const bulk = {
        index: lines[0].create._index,
        messages: lines.filter((_, index) => index % 2 === 1).map((line) => line.message),
      };
      bulks.push(bulk);
      if (typeof answer === "function") return answer(bulk);
      return Response.json({
        errors: false,
        took: 1,
        items: bulk.messages.map(() => ({ create: { status: 201 } })),
      }, { headers: ES_HEADERS });
    }
    return Response.json({ error: "not found" }, { status: 404, headers: ES_HEADERS });
  });
  return {
    server,
    bulks,
    templates,
    set answer(value: Answer) {
      answer = value;
    },
    shipped: () => bulks.flatMap((bulk) => bulk.messages),
  };
}

/** Records what the sink says about itself. */
function statusLog() {
  const lines: { level: string; message: string; properties: Record<string, unknown> }[] = [];
  const at = (level: string) => (message: string, properties: Record<string, unknown>) =>
    void lines.push({ level, message, properties });
  const logger: ShippingStatusLogger = { info: at("info"), warn: at("warn"), error: at("error") };
  return { lines, logger };
}

let sequence = 0;
function line(message = `line ${++sequence}`): LogRecord {
  return {
    category: ["twitterapi", "query"],
    level: "info",
    timestamp: Date.UTC(2026, 11, 2, 10),
    rawMessage: message,
    message: [message],
    properties: { service: "query" },
  };
}

async function withSink(
  options: Partial<ElasticsearchLogSinkOptions>,
  test: (
    sink: ElasticsearchLogSink,
    fake: ReturnType<typeof fakeElasticsearch>,
    status: ReturnType<typeof statusLog>,
  ) => Promise<void>,
): Promise<void> {
  const fake = fakeElasticsearch();
  const status = statusLog();
  const client = new Client({ node: fake.server.url });
  const sink = new ElasticsearchLogSink(client, {
    logger: status.logger,
    indexPrefix: "logs-test",
    initialBackoffMs: 5,
    maxBackoffMs: 20,
    ...options,
  });
  try {
    await test(sink, fake, status);
  } finally {
    await sink.close();
    await client.close();
    await fake.server.shutdown();
  }
}

Deno.test("the sink puts its index template before the first batch", async () => {
  await withSink({ flushIntervalMs: 10 }, async (sink, fake) => {
    sink.start();
    sink.sink(line("first"));
    await sink.flush();
    assert.deepEqual(fake.templates, ["logs-test"]);
    assert.deepEqual(fake.bulks, [{ index: "logs-test-2026.12.02", messages: ["first"] }]);
    const [template] = fake.server.requests;
    assert.equal(template?.method, "PUT");
  });
});

Deno.test("the sink sends a full batch at once and the rest when it is old enough", async () => {
  await withSink({ batchSize: 3, flushIntervalMs: 500 }, async (sink, fake) => {
    sink.start();
    for (let index = 0; index < 7; index++) sink.sink(line(`line ${index}`));
    await waitFor("two full batches", () => fake.bulks.length >= 2);
    assert.deepEqual(fake.bulks.slice(0, 2).map((bulk) => bulk.messages.length), [3, 3]);
    // The seventh line waits for its batch to age, then goes alone.
    await waitFor("the aged batch", () => fake.bulks.length === 3);
    assert.deepEqual(fake.bulks[2]?.messages, ["line 6"]);
    // The fake has the bulk before the sink has read its answer.
    await waitFor("every line counted shipped", () => sink.stats.shipped === 7);
  });
});

Deno.test("logging never waits for Elasticsearch: the sink only queues", async () => {
  await withSink({ flushIntervalMs: 10_000, batchSize: 10_000 }, (sink, fake) => {
    sink.start();
    for (let index = 0; index < 1000; index++) sink.sink(line());
    assert.equal(sink.stats.queued, 1000);
    assert.equal(fake.bulks.length, 0);
    return Promise.resolve();
  });
});

Deno.test("while Elasticsearch is down the queue is bounded and dropped lines are counted", async () => {
  await withSink(
    { batchSize: 2, maxQueueSize: 5, flushIntervalMs: 1 },
    async (sink, fake, status) => {
      const metrics = new MetricsRegistry();
      sink.registerMetrics(metrics);
      fake.answer = "down";
      sink.start();
      sink.sink(line("a"));
      sink.sink(line("b"));
      await waitFor("the first failed attempt", () => status.lines.length === 1);
      for (let index = 0; index < 20; index++) sink.sink(line(`queued ${index}`));
      // Two in flight (a, b), five queued, the other fifteen dropped.
      assert.equal(sink.stats.queued, 7);
      assert.equal(sink.stats.dropped.queue_full, 15);
      const rendered = await metrics.render();
      assert.match(rendered, /^log_records_dropped_total\{reason="queue_full"\} 15$/m);
      assert.match(rendered, /^log_records_queued 7$/m);
      assert.match(rendered, /^log_shipping_up 0$/m);

      fake.answer = "ok";
      await sink.flush();
      assert.deepEqual(fake.shipped(), [
        "a",
        "b",
        "queued 0",
        "queued 1",
        "queued 2",
        "queued 3",
        "queued 4",
      ]);
      const after = await metrics.render();
      assert.match(after, /^log_records_shipped_total 7$/m);
      assert.match(after, /^log_shipping_up 1$/m);
    },
  );
});

Deno.test("an outage is retried with back-off and said once, its end once too", async () => {
  await withSink({ flushIntervalMs: 1 }, async (sink, fake, status) => {
    fake.answer = "down";
    sink.start();
    sink.sink(line("during the outage"));
    await waitFor("five attempts", () => fake.server.requests.length >= 5);
    sink.sink(line("later in the outage"));
    fake.answer = "ok";
    await sink.flush();
    assert.deepEqual(fake.shipped(), ["during the outage", "later in the outage"]);
    assert.deepEqual(status.lines.map(({ level }) => level), ["error", "info"]);
    assert.match(status.lines[0]!.message, /Cannot ship log lines/);
    assert.match(String(status.lines[0]!.properties.reason), /503/);
    assert.match(status.lines[1]!.message, /again after/);

    // A second outage is a second line.
    fake.answer = "down";
    sink.sink(line("second outage"));
    await waitFor("the second outage's line", () => status.lines.length === 3);
    fake.answer = "ok";
    await sink.flush();
    assert.deepEqual(status.lines.map(({ level }) => level), ["error", "info", "error", "info"]);
  });
});

Deno.test("lines Elasticsearch rejects are dropped and counted; pushed-back lines are resent", async () => {
  await withSink({ flushIntervalMs: 1 }, async (sink, fake, status) => {
    let calls = 0;
    fake.answer = (bulk) => {
      calls += 1;
      return Response.json({
        errors: calls === 1,
        took: 1,
        items: bulk.messages.map((message) => {
          if (calls > 1) return { create: { status: 201 } };
          if (message === "bad") {
            return {
              create: {
                status: 400,
                error: { type: "document_parsing_exception", reason: "failed to parse" },
              },
            };
          }
          if (message === "busy") {
            return {
              create: {
                status: 429,
                error: { type: "es_rejected_execution_exception", reason: "queue full" },
              },
            };
          }
          return { create: { status: 201 } };
        }),
      }, { headers: ES_HEADERS });
    };
    sink.start();
    sink.sink(line("good"));
    sink.sink(line("bad"));
    sink.sink(line("busy"));
    await sink.flush();
    assert.deepEqual(fake.bulks.map((bulk) => bulk.messages), [["good", "bad", "busy"], ["busy"]]);
    assert.equal(sink.stats.shipped, 2);
    assert.equal(sink.stats.dropped.rejected, 1);
    assert.equal(status.lines.length, 1);
    assert.match(String(status.lines[0]!.properties.reason), /document_parsing_exception/);
  });
});

Deno.test("close() gives up on a down Elasticsearch after its timeout and counts what is left", async () => {
  await withSink({ flushIntervalMs: 1, closeTimeoutMs: 100 }, async (sink, fake, status) => {
    fake.answer = "down";
    sink.start();
    sink.sink(line());
    sink.sink(line());
    await waitFor("the outage", () => status.lines.length === 1);
    await sink.close();
    assert.equal(sink.stats.dropped.shutdown, 2);
    assert.match(status.lines.at(-1)?.message ?? "", /not shipped .* before shutdown/);
    assert.equal(sink.stats.queued, 0);
    sink.sink(line());
    assert.equal(sink.stats.dropped.shutdown, 3);
  });
});
