/**
 * The Elasticsearch adapter against a real Elasticsearch (`ELASTICSEARCH_URL`,
 * by default the one `deno task engines up elasticsearch` starts): the
 * contract, then what only this adapter has. Every run uses its own index,
 * deleted by the last test.
 */

import assert from "node:assert/strict";
import { Client } from "@elastic/elasticsearch";
import { SpanKind } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { tokenize } from "../text/tokenize.ts";
import { configureTracing, inSpan, serviceTracer } from "../trace/tracing.ts";
import {
  ElasticsearchSearchIndex,
  type ElasticsearchSearchIndexOptions,
  SearchIndexWriteError,
} from "./elasticsearch_search_index.ts";
import {
  randomDigits,
  runSearchIndexContract,
  tweet as contractTweet,
} from "./search_index_contract.ts";
import type { TweetDocument } from "./search_index.ts";

const ELASTICSEARCH_URL = Deno.env.get("ELASTICSEARCH_URL") ?? "http://127.0.0.1:9200";
const RUN = `${Date.now()}-${randomDigits(6)}`;
const INDEX = `twitter-index-test-${RUN}`;
/** Test indices older than this are left-overs of interrupted runs. */
const STALE_MS = 60 * 60 * 1000;
/** Quick retries, so that tests of back-off take milliseconds. */
const FAST_RETRIES: ElasticsearchSearchIndexOptions = { initialBackoffMs: 5, maxBackoffMs: 20 };
const T0 = Date.UTC(2024, 0, 1);

let reachable: Promise<void> | undefined;

/** Rejects with how to start Elasticsearch when it does not answer. */
function assertReachable(): Promise<void> {
  reachable ??= (async () => {
    try {
      const response = await fetch(`${ELASTICSEARCH_URL}/_cluster/health`, {
        signal: AbortSignal.timeout(5_000),
      });
      await response.body?.cancel();
      if (!response.ok) throw new Error(`it answered ${response.status}`);
    } catch (error) {
      throw new Error(
        `Elasticsearch is not reachable at ${ELASTICSEARCH_URL}: start it with \`deno task engines up elasticsearch\` (${
          error instanceof Error ? [error.message, error.cause].filter(Boolean).join(": ") : error
        })`,
      );
    }
  })();
  return reachable;
}

async function openIndex(
  options: ElasticsearchSearchIndexOptions = {},
  node = ELASTICSEARCH_URL,
): Promise<ElasticsearchSearchIndex> {
  await assertReachable();
  const index = new ElasticsearchSearchIndex(new Client({ node }), { index: INDEX, ...options });
  await index.open();
  return index;
}

/** Runs `body` with an adapter on this run's index and a plain client, closing both. */
async function withIndex(
  body: (index: ElasticsearchSearchIndex, client: Client) => Promise<void>,
): Promise<void> {
  const index = await openIndex();
  const client = new Client({ node: ELASTICSEARCH_URL });
  try {
    await body(index, client);
  } finally {
    await index.close();
    await client.close();
  }
}

runSearchIndexContract("ElasticsearchSearchIndex", () => openIndex());

Deno.test("ElasticsearchSearchIndex indexes exactly the terms of tokenize()", async () => {
  await withIndex(async (index, client) => {
    const userId = randomDigits(12);
    const texts = [
      "Cafe\u0301 na\u00efve \u6771\u4eac 42 Kafka's",
      // Upper-case Greek: tokenize() gives a final sigma, Java's lower-casing would not.
      "\u039f\u0394\u039f\u03a3 \u03bf\u03b4\u03bf\u03c2",
      "\u0130stanbul STRASSE stra\u00dfe",
      "snake_case x_2 3.14 e-mail @user #tag https://example.com/a?b=c",
      "emoji\u{1F600}split \u{1D400}bold \u0661\u0662\u0663 \u0915\u094d\u0937",
      "tabs\tand\nnew\u00a0lines\u2003and\u200bzero width",
    ];
    const documents = texts.map((text, i) => tweet({ userId, text, createdAt: T0 + i }));
    await index.upsert(documents);
    await index.refresh();
    for (const document of documents) {
      const vectors = await client.termvectors({
        index: INDEX,
        id: document.id,
        fields: ["terms"],
        term_statistics: false,
        field_statistics: false,
      });
      const indexed = Object.keys(vectors.term_vectors?.terms?.terms ?? {}).sort();
      const expected = [...new Set(tokenize(document.text))].sort();
      assert.deepEqual(indexed, expected, `terms of ${JSON.stringify(document.text)}`);
      for (const term of expected) {
        const page = await index.search({ userId, text: term, size: 10 });
        assert.ok(
          page.documents.some((found) => found.id === document.id),
          `${JSON.stringify(term)} finds ${JSON.stringify(document.text)}`,
        );
      }
      const whole = await index.search({ userId, text: document.text, size: 10 });
      assert.deepEqual(whole.documents.map((found) => found.id), [document.id]);
    }
    // Near misses: an accent is a mark of its own term; no stemming, no folding.
    for (const text of ["cafe\u0301s", "naive", "\u6771", "kafkas", "314", "strasse\u00df"]) {
      assert.equal(await index.count({ userId, text }), 0, JSON.stringify(text));
    }
    assert.equal(await index.count({ userId, text: "\u03bf\u03b4\u03bf\u03a3" }), 1);
  });
});

Deno.test("Elasticsearch's own lower-casing differs from tokenize(), so terms come pre-analysed", async () => {
  await assertReachable();
  const client = new Client({ node: ELASTICSEARCH_URL });
  try {
    const text = "\u039f\u0394\u039f\u03a3";
    const analysed = await client.indices.analyze({
      tokenizer: "standard",
      filter: ["lowercase"],
      text,
    });
    assert.deepEqual(analysed.tokens?.map((token) => token.token), ["\u03bf\u03b4\u03bf\u03c3"]);
    assert.deepEqual(tokenize(text), ["\u03bf\u03b4\u03bf\u03c2"]);
  } finally {
    await client.close();
  }
});

Deno.test("ElasticsearchSearchIndex upsert retries items rejected with 429 until all are stored", async () => {
  const proxy = bulkProxy((bulk) => bulk === 1 ? { rejectItems: (item) => item % 2 === 0 } : {});
  const index = await openIndex(FAST_RETRIES, proxy.url);
  try {
    const userId = randomDigits(12);
    const documents = Array.from({ length: 11 }, (_, i) => tweet({ userId, createdAt: T0 + i }));
    await index.upsert(documents);
    assert.deepEqual(proxy.bulkSizes, [11, 6], "the second bulk carries the rejected items");
    await index.refresh();
    assert.equal(await index.count({ userId }), documents.length);
    for (const document of documents) assert.deepEqual(await index.get(document.id), document);
  } finally {
    await index.close();
    await proxy.close();
  }
});

Deno.test("ElasticsearchSearchIndex upsert resends the whole bulk after 503 and 429", async () => {
  const proxy = bulkProxy((bulk) =>
    bulk === 1 ? { status: 503 } : bulk === 2 ? { status: 429 } : {}
  );
  const index = await openIndex(FAST_RETRIES, proxy.url);
  try {
    const userId = randomDigits(12);
    const documents = Array.from({ length: 3 }, (_, i) => tweet({ userId, createdAt: T0 + i }));
    await index.upsert(documents);
    assert.deepEqual(proxy.bulkSizes, [3, 3, 3]);
    await index.refresh();
    assert.equal(await index.count({ userId }), documents.length);
  } finally {
    await index.close();
    await proxy.close();
  }
});

Deno.test("ElasticsearchSearchIndex upsert rejects naming the documents still refused after its attempts", async () => {
  const documents = [tweet(), tweet(), tweet()];
  const refused = documents[1]!.id;
  const proxy = bulkProxy(() => ({ rejectItems: (_, id) => id === refused }));
  const index = await openIndex({ ...FAST_RETRIES, maxBulkAttempts: 3 }, proxy.url);
  try {
    await assert.rejects(index.upsert(documents), (error: unknown) => {
      assert.ok(error instanceof SearchIndexWriteError);
      assert.match(error.message, /after 3 attempts/);
      assert.ok(error.message.includes(refused), error.message);
      return true;
    });
    assert.deepEqual(proxy.bulkSizes, [3, 1, 1]);
  } finally {
    await index.close();
    await proxy.close();
  }
});

Deno.test("ElasticsearchSearchIndex upsert rejects a document the mapping refuses, naming it", async () => {
  await withIndex(async (index) => {
    const userId = randomDigits(12);
    const good = tweet({ userId });
    // A keyword over Lucene's 32,766-byte term limit: Elasticsearch answers 400 for the item.
    const bad = tweet({ userId, source: "x".repeat(40_000) });
    await assert.rejects(index.upsert([good, bad]), (error: unknown) => {
      assert.ok(error instanceof SearchIndexWriteError);
      assert.match(error.message, new RegExp(`document ${bad.id}: 400 \\w+`));
      assert.ok(!error.message.includes(good.id), error.message);
      assert.ok(error.message.length < 1_000, "the reason is cut short");
      return true;
    });
    await index.refresh();
    assert.equal(await index.get(bad.id), undefined);
  });
});

Deno.test("ElasticsearchSearchIndex upsert keeps the last of documents sharing an id", async () => {
  // One write per id: a retried first version could otherwise overwrite the last.
  const proxy = bulkProxy((bulk) =>
    bulk === 1 ? { rejectItems: (position) => position === 1 } : {}
  );
  const index = await openIndex(FAST_RETRIES, proxy.url);
  try {
    const first = tweet({ text: "first version" });
    const last = { ...first, text: "last version", createdAt: T0 + 1 };
    await index.upsert([first, tweet(), last]);
    assert.deepEqual(proxy.bulkSizes, [2, 1]);
    assert.deepEqual(await index.get(first.id), last);
  } finally {
    await index.close();
    await proxy.close();
  }
});

Deno.test("ElasticsearchSearchIndex keeps 64-bit ids as strings end to end", async () => {
  await withIndex(async (index, client) => {
    const userId = "9223372036854775807";
    // Larger than any signed 64-bit id, and one with leading zeros.
    const documents = [
      tweet({ id: "18446744073709551615", userId, createdAt: T0 + 1 }),
      tweet({ id: "00000000000000000042", userId, createdAt: T0 + 1 }),
    ];
    await index.upsert(documents);
    await index.refresh();
    for (const document of documents) {
      assert.deepEqual(await index.get(document.id), document);
      const raw = await client.get<Record<string, unknown>>({ index: INDEX, id: document.id });
      assert.equal(raw._source?.id, document.id);
      assert.equal(raw._source?.userId, userId);
    }
    const first = await index.search({ userId, size: 1 });
    assert.deepEqual(first.documents, [documents[0]]);
    assert.deepEqual(first.next, { createdAt: T0 + 1, id: "18446744073709551615" });
    const second = await index.search({ userId, size: 1, after: first.next });
    assert.deepEqual(second.documents, [documents[1]]);
    assert.equal(second.next, undefined);
  });
});

Deno.test("ElasticsearchSearchIndex creates its index idempotently, with a strict mapping", async () => {
  await assertReachable();
  const name = `${INDEX}-open`;
  const client = new Client({ node: ELASTICSEARCH_URL });
  try {
    const opened = [1, 2, 3].map(() =>
      new ElasticsearchSearchIndex(new Client({ node: ELASTICSEARCH_URL }), { index: name })
    );
    await Promise.all(opened.map((index) => index.open()));
    await opened[0]!.open();
    await Promise.all(opened.map((index) => index.close()));
    await assert.rejects(
      client.index({ index: name, id: "1", document: { id: "1", unknown: true } }),
      /strict_dynamic_mapping_exception/,
    );
  } finally {
    await client.indices.delete({ index: name }, { ignore: [404] });
    await client.close();
  }
});

Deno.test("ElasticsearchSearchIndex sets its refresh interval on a new and on an existing index", async () => {
  await assertReachable();
  const name = `${INDEX}-refresh`;
  const client = new Client({ node: ELASTICSEARCH_URL });
  const intervalOf = async () => {
    const settings = await client.indices.getSettings({ index: name, flat_settings: true });
    return settings[name]?.settings?.["index.refresh_interval"];
  };
  const opened = async (options: ElasticsearchSearchIndexOptions) => {
    const index = new ElasticsearchSearchIndex(new Client({ node: ELASTICSEARCH_URL }), {
      index: name,
      ...options,
    });
    await index.open();
    await index.close();
  };
  try {
    await opened({});
    assert.equal(await intervalOf(), "500ms");
    await opened({ refreshIntervalMs: 250 });
    assert.equal(await intervalOf(), "250ms");
    assert.throws(
      () => new ElasticsearchSearchIndex(client, { refreshIntervalMs: 0 }),
      /refreshIntervalMs/,
    );
  } finally {
    await client.indices.delete({ index: name }, { ignore: [404] });
    await client.close();
  }
});

Deno.test("ElasticsearchSearchIndex returns an empty page for a text without terms without asking", async () => {
  // Nothing listens on port 1: any request would fail.
  const index = new ElasticsearchSearchIndex(new Client({ node: "http://127.0.0.1:1" }));
  try {
    assert.deepEqual(await index.search({ text: "?!", size: 5 }), { documents: [], total: 0 });
    assert.equal(await index.count({ text: " " }), 0);
  } finally {
    await index.close();
  }
});

Deno.test("ElasticsearchSearchIndex rejects ping and upsert with the reason when unreachable", async () => {
  const index = new ElasticsearchSearchIndex(new Client({ node: "http://127.0.0.1:1" }), {
    ...FAST_RETRIES,
    maxBulkAttempts: 2,
  });
  try {
    await assert.rejects(index.ping(), /Cannot ping the search index twitter-index: \w+/);
    await assert.rejects(
      index.upsert([tweet()]),
      /Cannot upsert documents: the bulk request for 1 document\(s\) failed after 2 attempt\(s\): ConnectionError/,
    );
  } finally {
    await index.close();
  }
});

Deno.test("ElasticsearchSearchIndex makes its bulk write and its search client spans of the caller", async () => {
  const exporter = new InMemorySpanExporter();
  configureTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const tracer = serviceTracer("indexer");
  const index = await openIndex({ tracer, serverUrl: ELASTICSEARCH_URL });
  try {
    const traceId = await inSpan(tracer, "twitter-topic process", {}, async (parent) => {
      await index.upsert([contractTweet({ text: "traced write", createdAt: T0 })]);
      await index.refresh();
      await index.search({ text: "traced", size: 5 });
      return parent.spanContext().traceId;
    });
    const spans = exporter.getFinishedSpans().filter((span) =>
      span.spanContext().traceId === traceId && span.kind === SpanKind.CLIENT
    );
    const bulk = spans.find((span) => span.name === `bulk ${INDEX}`);
    const search = spans.find((span) => span.name === `search ${INDEX}`);
    const port = Number(new URL(ELASTICSEARCH_URL).port);
    assert.deepEqual(bulk?.attributes, {
      "db.system.name": "elasticsearch",
      "db.collection.name": INDEX,
      "server.address": new URL(ELASTICSEARCH_URL).hostname,
      "server.port": port,
      "db.operation.name": "bulk",
      "db.operation.batch.size": 1,
    });
    assert.equal(search?.attributes["db.operation.name"], "search");
    assert.equal(search?.attributes["db.system.name"], "elasticsearch");
  } finally {
    await index.close();
    configureTracing();
  }
});

Deno.test("ElasticsearchSearchIndex test index is deleted at the end of the run", async () => {
  await assertReachable();
  const client = new Client({ node: ELASTICSEARCH_URL });
  try {
    await client.indices.delete({ index: INDEX }, { ignore: [404] });
    // Left-overs of interrupted runs.
    const indices = await client.cat.indices({
      index: "twitter-index-test-*",
      h: ["index", "creation.date"],
      format: "json",
    });
    for (const entry of indices) {
      const created = Number(entry["creation.date"]);
      if (entry.index !== undefined && Date.now() - created > STALE_MS) {
        await client.indices.delete({ index: entry.index }, { ignore: [404] });
      }
    }
    assert.equal(await client.indices.exists({ index: INDEX }), false);
  } finally {
    await client.close();
  }
});

interface BulkFault {
  /** Answer the whole request with this status instead of forwarding it. */
  readonly status?: number;
  /** Items (by position from 0, or id) answered 429 without reaching Elasticsearch. */
  readonly rejectItems?: (position: number, id: string) => boolean;
}

interface BulkProxy {
  readonly url: string;
  /** Documents in each `_bulk` request received, in order. */
  readonly bulkSizes: number[];
  close(): Promise<void>;
}

/**
 * A real HTTP proxy to Elasticsearch on a free loopback port that injects
 * `fault(n)` into the n-th `_bulk` request (from 1). Rejected items never
 * reach Elasticsearch, so only a retry can store them.
 */
function bulkProxy(fault: (bulk: number) => BulkFault): BulkProxy {
  const bulkSizes: number[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const path = new URL(request.url).pathname;
    if (!path.endsWith("/_bulk")) return forward(request);
    return bulk(request);
  });

  async function bulk(request: Request): Promise<Response> {
    const lines = (await request.text()).split("\n").filter((line) => line !== "");
    const items = Array.from({ length: lines.length / 2 }, (_, i) => {
      const action = lines[2 * i]!;
      const { index } = JSON.parse(action) as { index: { _index: string; _id: string } };
      return { action, document: lines[2 * i + 1]!, index: index._index, id: index._id };
    });
    bulkSizes.push(items.length);
    const { status, rejectItems = () => false } = fault(bulkSizes.length);
    if (status !== undefined) {
      return Response.json({ error: { type: "injected", reason: `injected ${status}` }, status }, {
        status,
        headers: { "x-elastic-product": "Elasticsearch" },
      });
    }
    const rejected = items.map((item, i) => rejectItems(i, item.id));
    const kept = items.filter((_, i) => !rejected[i]);
    const forwarded = kept.length === 0
      ? { took: 0, errors: false, items: [] }
      : await (await forward(
        request,
        kept.map((item) => `${item.action}\n${item.document}\n`).join(""),
      )).json();
    let next = 0;
    const answers = items.map((item, i) =>
      rejected[i]
        ? {
          index: {
            _index: item.index,
            _id: item.id,
            status: 429,
            error: { type: "es_rejected_execution_exception", reason: "injected rejection" },
          },
        }
        : forwarded.items[next++]
    );
    return Response.json({ ...forwarded, errors: true, items: answers }, {
      headers: { "x-elastic-product": "Elasticsearch" },
    });
  }

  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    bulkSizes,
    close: () => server.shutdown(),
  };
}

/** Sends `request` (with `body` instead of its own, if given) on to Elasticsearch. */
async function forward(request: Request, body?: string): Promise<Response> {
  const url = new URL(request.url);
  const headers = new Headers(request.headers);
  for (const name of ["host", "content-length", "accept-encoding"]) headers.delete(name);
  const hasBody = request.method !== "GET" && request.method !== "HEAD";
  const response = await fetch(`${ELASTICSEARCH_URL}${url.pathname}${url.search}`, {
    method: request.method,
    headers,
    ...(hasBody ? { body: body ?? await request.arrayBuffer() } : {}),
  });
  const responseHeaders = new Headers(response.headers);
  for (const name of ["content-length", "content-encoding"]) responseHeaders.delete(name);
  return new Response(await response.arrayBuffer(), {
    status: response.status,
    headers: responseHeaders,
  });
}

function tweet(fields: Partial<TweetDocument> = {}): TweetDocument {
  return contractTweet({ text: "adapter test", source: "test", ...fields });
}
