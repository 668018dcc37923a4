/**
 * The contract every log reader adapter meets, with the sink that feeds it:
 * lines logged through `correlatingSink` are found by trace id, service,
 * lowest level, words of the message and time range, newest first.
 */
import assert from "node:assert/strict";
import type { LogLevel, LogRecord, Sink } from "@logtape/logtape";
import { correlatingSink } from "./log.ts";
import type { LogEntry, LogReader } from "./log_reader.ts";

export interface LogReaderHarness {
  /** The adapter's sink, fed through `correlatingSink`. */
  readonly sink: Sink;
  readonly reader: LogReader;
  /** Resolves once every line given to the sink is searchable. */
  settle(): Promise<void>;
  close(): Promise<void>;
}

const T0 = Date.UTC(2024, 0, 1, 12);

interface Line {
  readonly at: number;
  readonly level: LogLevel;
  readonly service: string;
  readonly message: string;
  readonly traceId?: string;
  readonly properties?: Record<string, unknown>;
}

function record(line: Line): LogRecord {
  return {
    category: ["twitterapi", line.service],
    level: line.level,
    timestamp: T0 + line.at,
    rawMessage: line.message,
    message: [line.message],
    properties: {
      service: line.service,
      instance: `${line.service}-1`,
      ...(line.traceId === undefined
        ? {}
        : { traceId: line.traceId, spanId: line.traceId.slice(0, 16) }),
      ...line.properties,
    },
  };
}

/** Messages of the entries, in the order found. */
function messages(entries: readonly LogEntry[]): string[] {
  return entries.map((entry) => entry.message);
}

export function runLogReaderContract(
  adapter: string,
  open: () => Promise<LogReaderHarness>,
): void {
  Deno.test(`${adapter} finds logged lines by trace, service, level, text and time`, async (t) => {
    const harness = await open();
    const run = crypto.randomUUID().replaceAll("-", "");
    const trace1 = run;
    const trace2 = [...run].reverse().join("");
    const query = `query-${run.slice(0, 8)}`;
    const analytics = `analytics-${run.slice(0, 8)}`;
    const failure = new TypeError("connection refused");
    const lines: Line[] = [
      {
        at: 0,
        level: "info",
        service: query,
        traceId: trace1,
        message: "Searched 3 tweets",
        properties: { count: 3, route: "/api/v1/tweets" },
      },
      {
        at: 1000,
        level: "warning",
        service: query,
        traceId: trace1,
        message: "Word counts unavailable",
        properties: { error: failure },
      },
      {
        at: 2000,
        level: "error",
        service: analytics,
        traceId: trace1,
        message: "Cannot store word counts",
      },
      { at: 3000, level: "debug", service: analytics, traceId: trace2, message: "Heartbeat sent" },
      { at: 4000, level: "info", service: analytics, message: "Searched 5 tweets" },
      { at: 5000, level: "info", service: query, traceId: trace2, message: "Listening on port" },
    ];
    const correlate = correlatingSink(harness.sink);
    // Logged out of time order: the readers order by time, not by arrival.
    for (const index of [1, 0, 2, 3, 5, 4]) correlate(record(lines[index]!));
    await harness.settle();
    const { reader } = harness;
    const window = { from: T0, to: T0 + 6000 };

    try {
      await t.step("by trace id, newest first, with every field", async () => {
        const found = await reader.search({ traceId: trace1 });
        assert.deepEqual(messages(found), [
          "Cannot store word counts",
          "Word counts unavailable",
          "Searched 3 tweets",
        ]);
        const searched = found[2]!;
        assert.equal(searched.timestamp, T0);
        assert.equal(searched.level, "info");
        assert.equal(searched.logger, `twitterapi.${query}`);
        assert.equal(searched.service, query);
        assert.equal(searched.instance, `${query}-1`);
        assert.equal(searched.traceId, trace1);
        assert.equal(searched.spanId, trace1.slice(0, 16));
        assert.deepEqual(searched.labels, { count: 3, route: "/api/v1/tweets" });
        assert.equal(searched.error, undefined);
      });

      await t.step("an error property becomes the entry's error", async () => {
        const [worst] = await reader.search({ traceId: trace1, level: "warning", limit: 1 });
        assert.equal(worst?.message, "Cannot store word counts");
        const [unavailable] = await reader.search({ traceId: trace1, text: "unavailable" });
        assert.equal(unavailable?.error?.type, "TypeError");
        assert.equal(unavailable?.error?.message, "connection refused");
        assert.match(unavailable?.error?.stackTrace ?? "", /TypeError: connection refused/);
        assert.equal(unavailable?.labels.error, undefined);
      });

      await t.step("by service", async () => {
        const found = await reader.search({ service: analytics });
        assert.deepEqual(messages(found), [
          "Searched 5 tweets",
          "Heartbeat sent",
          "Cannot store word counts",
        ]);
      });

      await t.step("by lowest level", async () => {
        assert.deepEqual(messages(await reader.search({ ...window, level: "warning" })), [
          "Cannot store word counts",
          "Word counts unavailable",
        ]);
        assert.equal((await reader.search({ ...window, level: "debug" })).length, 6);
        assert.equal((await reader.search({ ...window, level: "info" })).length, 5);
      });

      await t.step("by every word of a text, in any case", async () => {
        assert.deepEqual(messages(await reader.search({ ...window, text: "SEARCHED tweets" })), [
          "Searched 5 tweets",
          "Searched 3 tweets",
        ]);
        assert.deepEqual(messages(await reader.search({ ...window, text: "searched 5" })), [
          "Searched 5 tweets",
        ]);
        assert.deepEqual(await reader.search({ ...window, text: "searched nothing" }), []);
      });

      await t.step("by time range, from inclusive to exclusive", async () => {
        assert.deepEqual(
          messages(await reader.search({ from: T0 + 1000, to: T0 + 4000 })),
          ["Heartbeat sent", "Cannot store word counts", "Word counts unavailable"],
        );
      });

      await t.step("criteria combine, and the limit keeps the newest", async () => {
        assert.deepEqual(
          messages(await reader.search({ traceId: trace2, service: analytics })),
          ["Heartbeat sent"],
        );
        assert.deepEqual(messages(await reader.search({ ...window, limit: 2 })), [
          "Listening on port",
          "Searched 5 tweets",
        ]);
        assert.deepEqual(await reader.search({ traceId: "0".repeat(32) }), []);
      });

      await t.step("a limit out of range is refused", async () => {
        await assert.rejects(reader.search({ limit: 0 }), RangeError);
        await assert.rejects(reader.search({ limit: 100_001 }), RangeError);
      });
    } finally {
      await harness.close();
    }
  });
}
