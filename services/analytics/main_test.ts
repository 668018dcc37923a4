/**
 * The analytics service on the embedded engines (the in-process event log
 * and PGlite): word-count events in, the HTTP API out.
 */
import assert from "node:assert/strict";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import type { SqlDatabase, SqlParam, SqlTransaction } from "../../shared/database/database.ts";
import { memoryPglite } from "../../shared/database/database_contract.ts";
import { PgliteDatabase } from "../../shared/database/pglite_database.ts";
import { DEAD_LETTER_HEADERS } from "../../shared/event_log/dead_letter.ts";
import type { ConsumedRecord } from "../../shared/event_log/event_log.ts";
import { MemoryEventLog } from "../../shared/event_log/memory_event_log.ts";
import { loadWordCountCodec, type WordCountEvent } from "../../shared/events/word_count_event.ts";
import { assertDescribesEveryRoute } from "../../shared/testing/openapi_assertions.ts";
import { testContext } from "../../shared/testing/test_context.ts";
import { createTestIssuer } from "../../shared/testing/test_issuer.ts";
import { waitFor } from "../../shared/testing/wait.ts";
import { configureTracing } from "../../shared/trace/tracing.ts";
import { loadConfig } from "../config.ts";
import { createAnalyticsService } from "./main.ts";

const TOPIC = "twitter-analytics-topic";
const DLQ = "twitter-analytics-topic.dlq";
const PROBLEM = "application/problem+json";
const T0 = Date.UTC(2026, 10, 24, 10, 0, 0);

const codec = await loadWordCountCodec();
const issuer = await createTestIssuer();
const reader = await issuer.authorization({ audience: "analytics" });

function event(word: string, count: number, updatedAt = T0 + count * 1000): WordCountEvent {
  return { word, count: BigInt(count), updatedAt };
}

function records(events: readonly WordCountEvent[]) {
  return events.map((update) => ({
    key: new TextEncoder().encode(update.word),
    value: codec.encode(update),
  }));
}

/** A database that refuses every statement while `down`, as an unreachable server does. */
class SwitchableDatabase implements SqlDatabase {
  down = true;
  constructor(readonly inner: SqlDatabase) {}
  #check(): void {
    if (this.down) throw new Error("connect ECONNREFUSED 127.0.0.1:5432");
  }
  query<T>(sql: string, params?: readonly SqlParam[]): Promise<T[]> {
    this.#check();
    return this.inner.query<T>(sql, params);
  }
  execute(script: string): Promise<void> {
    this.#check();
    return this.inner.execute(script);
  }
  transaction<T>(fn: (tx: SqlTransaction) => Promise<T>): Promise<T> {
    this.#check();
    return this.inner.transaction(fn);
  }
  listen(
    channel: string,
    onNotification: (payload: string) => void,
    onListening?: () => void,
  ): Promise<() => Promise<void>> {
    this.#check();
    return this.inner.listen(channel, onNotification, onListening);
  }
  ping(): Promise<void> {
    this.#check();
    return this.inner.ping();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

async function analytics(
  options: { env?: Record<string, string>; database?: SqlDatabase; start?: boolean } = {},
) {
  const eventLog = new MemoryEventLog({ retryBackoffMs: 10 });
  const database = options.database ?? new PgliteDatabase(await memoryPglite());
  const context = testContext("analytics");
  const service = createAnalyticsService({
    config: loadConfig(options.env ?? {}),
    context,
    eventLog,
    database,
    codec,
    verifier: issuer.verifier("analytics"),
  });
  if (options.start !== false) await service.start();
  const get = async (path: string, headers: Record<string, string> = reader) => {
    const response = await service.app.request(path, { headers });
    return { response, body: await response.json() };
  };
  const noLag = () =>
    waitFor(
      "no lag in the analytics group",
      async () => (await eventLog.lag("analytics", TOPIC)).every((p) => p.lag === 0),
    );
  const close = async () => {
    await service.stop();
    await eventLog.close();
    await database.close();
  };
  return { service, eventLog, database, context, get, noLag, close };
}

Deno.test("analytics serves the word counts it consumed, end to end on the embedded log", async () => {
  const { eventLog, get, noLag, context, close } = await analytics();
  try {
    await eventLog.send(
      TOPIC,
      records([
        event("kafka", 1),
        event("java", 3),
        event("kafka", 2),
        event("spring", 3),
        event("kafka", 4),
      ]),
    );
    await noLag();

    const word = await get("/api/v1/analytics/words/kafka");
    assert.equal(word.response.status, 200);
    assert.match(word.response.headers.get("content-type") ?? "", /^application\/json/);
    assert.deepEqual(word.body, {
      word: "kafka",
      count: 4,
      updatedAt: "2026-11-24T10:00:04.000Z",
    });

    const history = await get("/api/v1/analytics/words/kafka/history");
    assert.equal(history.response.status, 200);
    assert.deepEqual(history.body, {
      word: "kafka",
      history: [
        { count: 1, updatedAt: "2026-11-24T10:00:01.000Z" },
        { count: 2, updatedAt: "2026-11-24T10:00:02.000Z" },
        { count: 4, updatedAt: "2026-11-24T10:00:04.000Z" },
      ],
    });

    const top = await get("/api/v1/analytics/top?limit=2");
    assert.equal(top.response.status, 200);
    assert.deepEqual(top.body, {
      words: [
        { word: "kafka", count: 4, updatedAt: "2026-11-24T10:00:04.000Z" },
        { word: "java", count: 3, updatedAt: "2026-11-24T10:00:03.000Z" },
      ],
    });
    assert.match(await context.metrics.render(), /analytics_events_total\{outcome="stored"\} 5/);
  } finally {
    await close();
  }
});

Deno.test("analytics is unchanged by redelivered and out-of-order updates", async () => {
  const { eventLog, get, noLag, close } = await analytics();
  try {
    const batch = records([event("kafka", 5), event("kafka", 7), event("java", 2)]);
    await eventLog.send(TOPIC, batch);
    await noLag();
    const before = {
      kafka: (await get("/api/v1/analytics/words/kafka/history")).body,
      top: (await get("/api/v1/analytics/top")).body,
    };
    // The same events again, as after a crash before the commit, then an older update.
    await eventLog.send(TOPIC, batch);
    await eventLog.send(TOPIC, records([event("kafka", 6)]));
    await noLag();
    assert.deepEqual((await get("/api/v1/analytics/words/kafka")).body, {
      word: "kafka",
      count: 7,
      updatedAt: "2026-11-24T10:00:07.000Z",
    });
    assert.deepEqual((await get("/api/v1/analytics/top")).body, before.top);
    // The older update is history (it happened), once; nothing is duplicated.
    const history = (await get("/api/v1/analytics/words/kafka/history")).body;
    assert.deepEqual(history.history.map((entry: { count: number }) => entry.count), [5, 6, 7]);
    assert.deepEqual(
      before.kafka.history.map((entry: { count: number }) => entry.count),
      [5, 7],
    );
  } finally {
    await close();
  }
});

Deno.test("analytics keeps ANALYTICS_HISTORY_PER_WORD updates per word", async () => {
  const { eventLog, get, noLag, close } = await analytics({
    env: { ANALYTICS_HISTORY_PER_WORD: "2" },
  });
  try {
    await eventLog.send(TOPIC, records([1, 2, 3, 4, 5].map((count) => event("kafka", count))));
    await noLag();
    const { body } = await get("/api/v1/analytics/words/kafka/history");
    assert.deepEqual(body.history.map((entry: { count: number }) => entry.count), [4, 5]);
  } finally {
    await close();
  }
});

Deno.test("analytics history filters by from and to", async () => {
  const { eventLog, get, noLag, close } = await analytics();
  try {
    await eventLog.send(
      TOPIC,
      records([event("kafka", 1, T0), event("kafka", 2, T0 + 86_400_000)]),
    );
    await noLag();
    const counts = async (query: string) =>
      (await get(`/api/v1/analytics/words/kafka/history?${query}`)).body.history.map((
        entry: { count: number },
      ) => entry.count);
    assert.deepEqual(await counts("from=2026-11-25"), [2]);
    assert.deepEqual(await counts("to=2026-11-24"), [1]);
    assert.deepEqual(await counts("from=2026-11-24T10:00:00Z&to=2026-11-25T10:00:00Z"), [1, 2]);
    assert.deepEqual(await counts("from=2026-11-24T10:00:00.001Z&to=2026-11-25T09:00:00Z"), []);
    assert.deepEqual(await counts("from=2026-11-24T11:00:00%2B01:00&to=2026-11-24T10:00:00Z"), [
      1,
    ]);
  } finally {
    await close();
  }
});

Deno.test("analytics normalises the word as it was counted", async () => {
  const { eventLog, get, noLag, close } = await analytics();
  try {
    await eventLog.send(TOPIC, records([event("\u00e9t\u00e9", 3), event("kafka", 1)]));
    await noLag();
    for (const path of ["KAFKA", "Kafka", "%20kafka!"]) {
      const { response, body } = await get(`/api/v1/analytics/words/${path}`);
      assert.equal(response.status, 200, path);
      assert.equal(body.word, "kafka");
    }
    const { body } = await get(`/api/v1/analytics/words/${encodeURIComponent("\u00c9T\u00c9")}`);
    assert.equal(body.count, 3);
  } finally {
    await close();
  }
});

Deno.test("analytics answers 404 problems for a word never counted", async () => {
  const { get, close } = await analytics();
  try {
    for (const path of ["/api/v1/analytics/words/nowhere", "/api/v1/analytics/words/x/history"]) {
      const { response, body } = await get(path);
      assert.equal(response.status, 404, path);
      assert.equal(response.headers.get("content-type"), PROBLEM);
      assert.equal(body.type, "urn:twitterapi:problem:not-found");
      assert.match(body.detail, /No count has been recorded for the word/);
    }
    const top = await get("/api/v1/analytics/top");
    assert.deepEqual(top.body, { words: [] });
  } finally {
    await close();
  }
});

Deno.test("analytics answers 400 problems naming every bad parameter", async () => {
  const { get, close } = await analytics();
  try {
    const cases: [string, string[]][] = [
      ["/api/v1/analytics/words/two%20words", ["word"]],
      ["/api/v1/analytics/words/%21%3F", ["word"]],
      ["/api/v1/analytics/words/a-b/history", ["word"]],
      ["/api/v1/analytics/words/kafka/history?from=yesterday", ["from"]],
      ["/api/v1/analytics/words/kafka/history?to=2026-02-30", ["to"]],
      ["/api/v1/analytics/words/kafka/history?from=2026-11-25&to=2026-11-24", ["to"]],
      // The query is validated before the path: its parameters are named first.
      ["/api/v1/analytics/words/a%20b/history?from=x&to=y", ["from", "to"]],
      ["/api/v1/analytics/top?limit=0", ["limit"]],
      ["/api/v1/analytics/top?limit=101", ["limit"]],
      ["/api/v1/analytics/top?limit=ten", ["limit"]],
      ["/api/v1/analytics/top?limit=1.5", ["limit"]],
    ];
    for (const [path, parameters] of cases) {
      const { response, body } = await get(path);
      assert.equal(response.status, 400, path);
      assert.equal(response.headers.get("content-type"), PROBLEM, path);
      assert.equal(body.type, "urn:twitterapi:problem:invalid-parameter", path);
      assert.deepEqual(
        body.errors.map((error: { parameter: string }) => error.parameter),
        parameters,
        path,
      );
    }
    assert.equal((await get("/api/v1/analytics/top?limit=100")).response.status, 200);
  } finally {
    await close();
  }
});

Deno.test("analytics describes every route it serves in valid OpenAPI 3.1", async () => {
  const { service, get, close } = await analytics();
  try {
    const description = await assertDescribesEveryRoute(service.app);
    const paths = description.paths as Record<
      string,
      Record<string, { parameters: { name: string; schema: Record<string, unknown> }[] }>
    >;
    const [limit] = paths["/api/v1/analytics/top"]!.get!.parameters;
    assert.equal(limit!.name, "limit");
    const { type, minimum, maximum } = limit!.schema;
    assert.deepEqual({ type, minimum, maximum, default: limit!.schema.default }, {
      type: "integer",
      minimum: 1,
      maximum: 100,
      default: 10,
    });
    // The schema's rules answer, and its default applies.
    const { body } = await get("/api/v1/analytics/top?limit=1e3");
    assert.deepEqual(body.errors, [{
      parameter: "limit",
      detail: "must be an integer from 1 to 100",
    }]);
    assert.equal((await get("/api/v1/analytics/top")).response.status, 200);
  } finally {
    await close();
  }
});

Deno.test("analytics answers 401 without a valid token for its audience", async () => {
  const { get, close } = await analytics();
  try {
    const wrongAudience = await issuer.authorization({ audience: "query" });
    for (const path of ["/api/v1/analytics/words/kafka", "/api/v1/analytics/top"]) {
      for (const headers of [{}, wrongAudience, { authorization: "Bearer not-a-jwt" }]) {
        const { response, body } = await get(path, headers);
        assert.equal(response.status, 401, path);
        assert.equal(response.headers.get("content-type"), PROBLEM);
        assert.equal(body.type, "urn:twitterapi:problem:unauthorized");
        assert.match(response.headers.get("www-authenticate") ?? "", /^Bearer realm=/);
      }
    }
    // The operational endpoints stay open.
    assert.equal((await get("/health", {})).response.status, 200);
  } finally {
    await close();
  }
});

Deno.test("analytics sends undecodable and invalid events to the dead-letter topic", async () => {
  const { eventLog, get, noLag, context, close } = await analytics();
  try {
    await eventLog.send(TOPIC, [
      { key: null, value: new TextEncoder().encode("not avro"), headers: { origin: "test" } },
      ...records([
        event("Kafka", 1),
        event("two words", 1),
        { word: "big", count: 2n ** 53n, updatedAt: T0 },
        event("kafka", 2),
      ]),
    ]);
    await noLag();
    assert.equal((await get("/api/v1/analytics/words/kafka")).body.count, 2);
    const dead: ConsumedRecord[] = [];
    const deadReader = await eventLog.consume({ groupId: "dlq-reader", topics: [DLQ] }, (batch) => {
      dead.push(...batch.records);
      return Promise.resolve();
    });
    await waitFor("four dead letters", () => dead.length === 4);
    await deadReader.stop();
    dead.sort((a, b) => a.offset - b.offset);
    assert.deepEqual(
      dead.map((letter) => letter.headers[DEAD_LETTER_HEADERS.errorCode]),
      ["event-decode", "invalid-word-count", "invalid-word-count", "invalid-word-count"],
    );
    assert.equal(dead[0]?.headers.origin, "test");
    assert.equal(dead[0]?.headers[DEAD_LETTER_HEADERS.topic], TOPIC);
    assert.match(
      dead[1]?.headers[DEAD_LETTER_HEADERS.errorMessage] ?? "",
      /the word "Kafka" is not one normalised token/,
    );
    assert.match(
      dead[3]?.headers[DEAD_LETTER_HEADERS.errorMessage] ?? "",
      /the count 9007199254740992 is not from 0 to 2\^53 - 1/,
    );
    assert.equal((await get("/api/v1/analytics/words/big")).response.status, 404);
    const metrics = await context.metrics.render();
    assert.match(metrics, /analytics_events_total\{outcome="dead-lettered"\} 4/);
    assert.match(metrics, /analytics_events_total\{outcome="stored"\} 1/);
  } finally {
    await close();
  }
});

Deno.test("analytics retries its migrations while the database is down, and is not ready", async () => {
  const database = new SwitchableDatabase(new PgliteDatabase(await memoryPglite()));
  const { service, eventLog, get, noLag, close } = await analytics({ database, start: false });
  try {
    const started = service.start();
    const down = await get("/ready", {});
    assert.equal(down.response.status, 503);
    assert.equal(down.body.checks.database.status, "down");
    assert.match(down.body.checks.database.error, /ECONNREFUSED/);

    database.down = false;
    await started;
    await waitFor("ready", async () => (await get("/ready", {})).response.status === 200);
    await eventLog.send(TOPIC, records([event("kafka", 1)]));
    await noLag();
    assert.equal((await get("/api/v1/analytics/words/kafka")).body.count, 1);
  } finally {
    await close();
  }
});

Deno.test("analytics is not ready, and its API answers 503 at once, before its schema is migrated", async () => {
  const { get, service, close } = await analytics({ start: false });
  try {
    const { response, body } = await get("/ready", {});
    assert.equal(response.status, 503);
    assert.match(body.checks.database.error, /not migrated yet/);
    // Its API answers at once, rather than hold a search until its timeout.
    const api = await get("/api/v1/analytics/words/kafka");
    assert.equal(api.response.status, 503);
    assert.equal(api.response.headers.get("content-type"), PROBLEM);
    assert.equal(api.response.headers.get("retry-after"), "1");
    assert.equal(api.body.detail, "The analytics schema is not migrated yet; try again");
    await service.start();
    assert.equal((await get("/ready", {})).response.status, 200);
    assert.equal((await get("/api/v1/analytics/words/kafka")).response.status, 404);
  } finally {
    await close();
  }
});

Deno.test("analytics continues each word count's trace, and its write is in every one", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const { eventLog, noLag, close } = await analytics();
  const traceIds = ["0af7651916cd43dd8448eb211c80319c", "1bf7651916cd43dd8448eb211c80319d"];
  try {
    // One key, so one partition and one batch: one write for both.
    await eventLog.send(
      TOPIC,
      [event("kafka", 1), event("kafka", 2)].map((update, i) => ({
        ...records([update])[0]!,
        headers: { traceparent: `00-${traceIds[i]}-b7ad6b7169203331-01` },
      })),
    );
    await noLag();
  } finally {
    await close();
    configureTracing();
  }
  const spans = exporter.getFinishedSpans();
  for (const traceId of traceIds) {
    const inTrace = spans.filter((span) => span.spanContext().traceId === traceId);
    const processed = inTrace.find((span) => span.name === `process ${TOPIC}`);
    assert.equal(processed?.parentSpanContext?.spanId, "b7ad6b7169203331");
    assert.equal(processed?.resource.attributes["service.name"], "analytics");
    const stored = inTrace.find((span) => span.name === "store word counts");
    assert.equal(stored?.parentSpanContext?.spanId, processed?.spanContext().spanId);
  }
});
