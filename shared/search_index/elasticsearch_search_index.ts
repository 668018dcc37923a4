/**
 * The search index on Elasticsearch 8: one index of tweets, searched with
 * filters only (no scoring), newest first.
 *
 * Text matching: the adapter indexes `tokenize(text)` itself, as a keyword
 * array `terms`, and looks up `tokenize(query.text)` there. Elasticsearch's
 * own analysis cannot match `tokenize()` exactly: Java lower-cases code point
 * by code point (`\u03a3` at the end of a word becomes `\u03c3`, where
 * JavaScript gives the final `\u03c2`; `\u0130` differs too), Java's Unicode
 * tables lag V8's, and the minimal distribution the engines run has no
 * `pattern` tokenizer at all. Keyword terms are equal to `tokenize()`'s by
 * construction, on any Elasticsearch. The text itself is kept, not indexed.
 *
 * Writes: one `_bulk` request per upsert. Every item is checked; items that
 * Elasticsearch rejected for load (429) or a server fault (5xx) are sent again
 * with exponential back-off, as is the whole request on a connection error,
 * a timeout, 429 or 5xx. An item rejected for any other reason fails the call
 * with its id and reason. The index keeps the default `request` translog
 * durability, so an acknowledged item is on disk.
 *
 * Searchable: a write becomes visible to searches at the index's next
 * refresh, so its refresh interval bounds how fresh a search is. The adapter
 * sets it (500 ms by default, where Elasticsearch's is 1 s) whenever it opens
 * the index; a shorter interval costs more, smaller segments.
 */

import { type Client, errors } from "@elastic/elasticsearch";
import { SpanKind, trace } from "@opentelemetry/api";
import { inSpan, type Tracer } from "../trace/tracing.ts";
import { tokenize } from "../text/tokenize.ts";
import {
  checkDocument,
  DOCUMENT_ID,
  InvalidQueryError,
  SearchIndexClosedError,
} from "./documents.ts";
import {
  MAX_VISIBILITY_IDS,
  type SearchFilter,
  type SearchIndex,
  type SearchPage,
  type SearchQuery,
  type TweetDocument,
} from "./search_index.ts";

export interface ElasticsearchSearchIndexOptions {
  /**
   * The index name; created with the adapter's settings and mapping when
   * missing.
   * @default "twitter-index"
   */
  readonly index?: string;
  /**
   * Primary shards of a created index.
   * @default 1
   */
  readonly shards?: number;
  /**
   * Replicas of a created index: 0 suits a single-node cluster.
   * @default 0
   */
  readonly replicas?: number;
  /**
   * Longest time from an acknowledged write to its being searchable: the
   * index's `refresh_interval`, set at every `open()`. A positive integer of
   * milliseconds.
   * @default 500
   */
  readonly refreshIntervalMs?: number;
  /**
   * Bulk requests sent per upsert at most, the first included, before the
   * call rejects with the documents still unstored. A positive integer.
   * @default 8
   */
  readonly maxBulkAttempts?: number;
  /**
   * Back-off before the first retry, in milliseconds; doubled for each
   * further retry, with jitter.
   * @default 100
   */
  readonly initialBackoffMs?: number;
  /**
   * Longest back-off between two attempts, in milliseconds.
   * @default 5_000
   */
  readonly maxBackoffMs?: number;
  /**
   * The calling service's tracer: every bulk write, search, get and count is
   * a CLIENT span of it.
   * @default the API's global tracer (a no-op unless one is registered)
   */
  readonly tracer?: Tracer;
  /** The cluster's address, for the spans' `server.address` and `server.port`. */
  readonly serverUrl?: string;
}

type SpanAttributes = Record<string, string | number | boolean>;

export const DEFAULT_INDEX = "twitter-index";
const DEFAULT_REFRESH_INTERVAL_MS = 500;
const DEFAULT_MAX_BULK_ATTEMPTS = 8;
const DEFAULT_INITIAL_BACKOFF_MS = 100;
const DEFAULT_MAX_BACKOFF_MS = 5_000;
/** Ids must fit a cursor (see `cursor.ts`). */
/**
 * `size + 1` hits are asked for, and Elasticsearch's default result window is
 * 10,000.
 */
const MAX_PAGE_SIZE = 9_999;
/**
 * Terms longer than this (in UTF-16 code units) are not indexed, so a search
 * for one finds nothing: Lucene refuses a term over 32,766 bytes of UTF-8,
 * and 8,191 code units take at most 24,573.
 */
const MAX_TERM_LENGTH = 8_191;
/** What a bulk answer is read for: each item's status and error. */
const BULK_ANSWER_FIELDS = ["items.*.status", "items.*.error"];
/** Reasons quoted in errors are cut to this many characters. */
const MAX_REASON_LENGTH = 300;

/** The index's mapping: unknown fields are rejected. */
export const MAPPINGS = {
  dynamic: "strict",
  properties: {
    id: { type: "keyword" },
    // 64-bit ids stay strings: a JSON number would lose digits on the way.
    userId: { type: "keyword" },
    text: { type: "text", index: false },
    terms: { type: "keyword", ignore_above: MAX_TERM_LENGTH },
    createdAt: { type: "date", format: "epoch_millis" },
    source: { type: "keyword" },
  },
} as const;

/** A document as stored in Elasticsearch: the tweet and its terms. */
interface IndexedDocument extends TweetDocument {
  readonly terms: readonly string[];
}

export class SearchIndexWriteError extends Error {
  readonly code = "search-index-write";
  constructor(detail: string, options?: ErrorOptions) {
    super(`Cannot upsert documents: ${detail}`, options);
    this.name = "SearchIndexWriteError";
  }
}

export class ElasticsearchSearchIndex implements SearchIndex {
  readonly #client: Client;
  readonly #index: string;
  readonly #shards: number;
  readonly #replicas: number;
  readonly #refreshInterval: string;
  readonly #maxBulkAttempts: number;
  readonly #initialBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #tracer: Tracer;
  readonly #spanAttributes: SpanAttributes;
  #closed = false;

  /**
   * The adapter over `client`, without any request: call `open()` before
   * use. `close()` closes the client.
   */
  constructor(client: Client, options: ElasticsearchSearchIndexOptions = {}) {
    this.#client = client;
    this.#index = options.index ?? DEFAULT_INDEX;
    this.#shards = positiveInteger("shards", options.shards ?? 1);
    this.#replicas = nonNegativeInteger("replicas", options.replicas ?? 0);
    this.#refreshInterval = `${
      positiveInteger("refreshIntervalMs", options.refreshIntervalMs ?? DEFAULT_REFRESH_INTERVAL_MS)
    }ms`;
    this.#maxBulkAttempts = positiveInteger(
      "maxBulkAttempts",
      options.maxBulkAttempts ?? DEFAULT_MAX_BULK_ATTEMPTS,
    );
    this.#initialBackoffMs = nonNegativeInteger(
      "initialBackoffMs",
      options.initialBackoffMs ?? DEFAULT_INITIAL_BACKOFF_MS,
    );
    this.#maxBackoffMs = nonNegativeInteger(
      "maxBackoffMs",
      options.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS,
    );
    this.#tracer = options.tracer ?? trace.getTracer("twitterapi");
    const server = options.serverUrl === undefined ? undefined : new URL(options.serverUrl);
    this.#spanAttributes = {
      "db.system.name": "elasticsearch",
      "db.collection.name": this.#index,
      ...(server === undefined ? {} : {
        "server.address": server.hostname,
        "server.port": Number(server.port || (server.protocol === "https:" ? 443 : 80)),
      }),
    };
    if (this.#index === "" || this.#index !== this.#index.toLowerCase()) {
      throw new RangeError(
        `Cannot create ElasticsearchSearchIndex: index must be a non-empty lower-case name, got "${this.#index}"`,
      );
    }
  }

  /** The index name. */
  get index(): string {
    return this.#index;
  }

  /**
   * Creates the index with the adapter's settings and mapping when it is
   * missing; otherwise checks that its mapping agrees (adding fields a
   * previous version lacked) and sets its refresh interval. Idempotent, and
   * safe when several processes call it at once.
   */
  async open(): Promise<void> {
    this.#assertOpen("create the search index");
    try {
      await this.#client.indices.create({
        index: this.#index,
        settings: {
          number_of_shards: this.#shards,
          number_of_replicas: this.#replicas,
          refresh_interval: this.#refreshInterval,
          // The default, stated: an acknowledged write is fsynced.
          "index.translog.durability": "request",
        },
        mappings: MAPPINGS,
      });
    } catch (error) {
      if (errorType(error) !== "resource_already_exists_exception") {
        throw new Error(`Cannot create the search index ${this.#index}: ${describe(error)}`, {
          cause: error,
        });
      }
      // An index created before (or with another interval) gets this one.
      try {
        await this.#client.indices.putSettings({
          index: this.#index,
          settings: { refresh_interval: this.#refreshInterval },
        });
      } catch (error) {
        throw new Error(
          `Cannot set the refresh interval of the search index ${this.#index}: ${describe(error)}`,
          { cause: error },
        );
      }
    }
    try {
      await this.#client.indices.putMapping({ index: this.#index, ...MAPPINGS });
    } catch (error) {
      throw new Error(
        `Cannot use the search index ${this.#index}: its mapping disagrees with the adapter's: ${
          describe(error)
        }`,
        { cause: error },
      );
    }
  }

  async upsert(documents: readonly TweetDocument[]): Promise<void> {
    this.#assertOpen("upsert documents");
    // Validate the whole batch first, so that a rejected call sends nothing.
    // One write per id, the batch's last: a retried earlier version of a
    // document must not overwrite a later one that was stored.
    const byId = new Map(documents.map((document) => [document.id, toIndexedDocument(document)]));
    let pending = [...byId.values()];
    for (let attempt = 1; pending.length > 0; attempt++) {
      if (attempt > 1) await delay(this.#backoff(attempt - 1));
      const last = attempt >= this.#maxBulkAttempts;
      let items: BulkItem[];
      try {
        items = await this.#bulk(pending);
      } catch (error) {
        if (!last && isTransient(error)) continue;
        throw new SearchIndexWriteError(
          `the bulk request for ${pending.length} document(s) failed after ${attempt} attempt(s): ${
            describe(error)
          }`,
          { cause: error },
        );
      }
      const retry: IndexedDocument[] = [];
      const rejected: string[] = [];
      pending.forEach((document, position) => {
        const item = items[position];
        if (item === undefined) {
          retry.push(document);
        } else if (item.error !== undefined || item.status < 200 || item.status > 299) {
          if (item.status === 429 || item.status >= 500) retry.push(document);
          else rejected.push(`document ${document.id}: ${item.status} ${reason(item.error)}`);
        }
      });
      if (rejected.length > 0) {
        throw new SearchIndexWriteError(
          `Elasticsearch rejected ${rejected.length} of ${pending.length} document(s): ${
            rejected.slice(0, 5).join("; ")
          }${rejected.length > 5 ? "; ..." : ""}`,
        );
      }
      if (retry.length > 0 && last) {
        throw new SearchIndexWriteError(
          `${retry.length} document(s) were still rejected as transient after ${attempt} attempts (${
            retry.slice(0, 5).map((document) => document.id).join(", ")
          }${retry.length > 5 ? ", ..." : ""})`,
        );
      }
      pending = retry;
    }
  }

  async get(id: string): Promise<TweetDocument | undefined> {
    this.#assertOpen("get a document");
    // No stored document has another kind of id.
    if (typeof id !== "string" || !DOCUMENT_ID.test(id)) return undefined;
    const response = await this.#traced(
      "get",
      {},
      () => this.#client.get<IndexedDocument>({ index: this.#index, id }, { ignore: [404] }),
    );
    return response.found && response._source !== undefined
      ? toTweetDocument(response._source)
      : undefined;
  }

  async search(query: SearchQuery): Promise<SearchPage> {
    const action = "search documents";
    this.#assertOpen(action);
    const { size, after } = query;
    if (!Number.isSafeInteger(size) || size < 1 || size > MAX_PAGE_SIZE) {
      throw new InvalidQueryError(
        action,
        `size must be an integer from 1 to ${MAX_PAGE_SIZE}, got ${size}`,
      );
    }
    if (
      after !== undefined &&
      (typeof after.createdAt !== "number" || Number.isNaN(after.createdAt) ||
        typeof after.id !== "string")
    ) {
      throw new InvalidQueryError(action, "after must be a cursor of createdAt and id");
    }
    const filter = toFilter(action, query);
    if (filter === undefined) return { documents: [], total: 0 };
    const searchAfter = after === undefined ? undefined : toSearchAfter(after);
    const response = await this.#traced("search", {}, () =>
      this.#client.search<IndexedDocument>({
        index: this.#index,
        query: { bool: { filter } },
        sort: [{ createdAt: "desc" }, { id: "desc" }],
        size: size + 1,
        track_total_hits: true,
        ...(searchAfter === undefined ? {} : { search_after: searchAfter }),
      }));
    const totalHits = response.hits.total;
    const total = typeof totalHits === "number" ? totalHits : totalHits?.value ?? 0;
    if (total === 0) return { documents: [], total: 0 };
    const found = response.hits.hits.flatMap((hit) =>
      hit._source === undefined ? [] : [toTweetDocument(hit._source)]
    );
    const documents = found.slice(0, size);
    const last = documents[documents.length - 1];
    if (found.length <= size || last === undefined) return { documents, total };
    return { documents, total, next: { createdAt: last.createdAt, id: last.id } };
  }

  async count(filter: SearchFilter = {}): Promise<number> {
    const action = "count documents";
    this.#assertOpen(action);
    const clauses = toFilter(action, filter);
    if (clauses === undefined) return 0;
    const response = await this.#traced(
      "count",
      {},
      () => this.#client.count({ index: this.#index, query: { bool: { filter: clauses } } }),
    );
    return response.count;
  }

  async refresh(): Promise<void> {
    this.#assertOpen("refresh the search index");
    await this.#client.indices.refresh({ index: this.#index });
  }

  async ping(): Promise<void> {
    const action = "ping the search index";
    this.#assertOpen(action);
    let health;
    try {
      health = await this.#client.cluster.health({
        index: this.#index,
        wait_for_status: "yellow",
        timeout: "1s",
      }, { ignore: [408], maxRetries: 0 });
    } catch (error) {
      throw new Error(`Cannot ${action} ${this.#index}: ${describe(error)}`, { cause: error });
    }
    if (health.timed_out || health.status === "red") {
      throw new Error(
        `Cannot ${action} ${this.#index}: the index is ${health.status}${
          health.timed_out ? " (it did not become yellow within 1 s)" : ""
        }`,
      );
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#client.close();
  }

  #assertOpen(action: string): void {
    if (this.#closed) throw new SearchIndexClosedError(action);
  }

  /** One `_bulk` request; the items answer the documents in order. */
  async #bulk(documents: readonly IndexedDocument[]): Promise<BulkItem[]> {
    const operations = documents.flatMap((document) => [
      { index: { _index: this.#index, _id: document.id } },
      document,
    ]);
    // The back-off here replaces the client's own retries; each attempt is its own span.
    const response = await this.#traced(
      "bulk",
      { "db.operation.batch.size": documents.length },
      () =>
        this.#client.bulk(
          // Each item's status and error are all it reads: the rest of an
          // answer (ids, versions, shards) was most of what the indexer parsed.
          { operations, refresh: false, filter_path: BULK_ANSWER_FIELDS },
          { maxRetries: 0 },
        ),
    );
    return response.items.map((item) => {
      const result = item.index;
      return result === undefined
        ? { status: 500, error: { type: "missing_item", reason: "no index result" } }
        : result.error === undefined
        ? { status: result.status }
        : { status: result.status, error: result.error };
    });
  }

  /** One call to Elasticsearch as a CLIENT span named `<operation> <index>`. */
  #traced<T>(operation: string, attributes: SpanAttributes, call: () => Promise<T>): Promise<T> {
    return inSpan(this.#tracer, `${operation} ${this.#index}`, {
      kind: SpanKind.CLIENT,
      attributes: {
        ...this.#spanAttributes,
        "db.operation.name": operation,
        ...attributes,
      },
    }, call);
  }

  /** Milliseconds to wait before retry number `retry` (from 1): doubling, with jitter. */
  #backoff(retry: number): number {
    const ceiling = Math.min(this.#maxBackoffMs, this.#initialBackoffMs * 2 ** (retry - 1));
    return ceiling / 2 + Math.random() * ceiling / 2;
  }
}

interface BulkItem {
  readonly status: number;
  readonly error?: ErrorReason;
}

interface ErrorReason {
  readonly type: string;
  readonly reason?: string | null;
}

type Clause = Record<string, unknown>;

/**
 * The filter clauses of `filter`, or undefined when it can match nothing
 * (a text without terms, bounds that exclude every valid `createdAt`).
 */
function toFilter(action: string, filter: SearchFilter): Clause[] | undefined {
  const clauses: Clause[] = [];
  if (filter.text !== undefined) {
    const terms = new Set(tokenize(filter.text));
    if (terms.size === 0) return undefined;
    for (const term of terms) {
      if (term.length > MAX_TERM_LENGTH) return undefined;
      clauses.push({ term: { terms: term } });
    }
  }
  if (filter.userId !== undefined) clauses.push({ term: { userId: filter.userId } });
  const visibility = filter.visibleTo;
  if (visibility !== undefined && !visibility.all) {
    const { tweetIds, authorIds } = visibility;
    if (
      !Array.isArray(tweetIds) || !Array.isArray(authorIds) ||
      tweetIds.length > MAX_VISIBILITY_IDS || authorIds.length > MAX_VISIBILITY_IDS
    ) {
      throw new InvalidQueryError(
        action,
        `visibleTo must list at most ${MAX_VISIBILITY_IDS} tweet ids and author ids`,
      );
    }
    if (tweetIds.length === 0 && authorIds.length === 0) return undefined;
    const should: Clause[] = [];
    if (tweetIds.length > 0) should.push({ terms: { id: tweetIds } });
    if (authorIds.length > 0) should.push({ terms: { userId: authorIds } });
    clauses.push({ bool: { should, minimum_should_match: 1 } });
  }
  const from = bound(action, "from", filter.from);
  const to = bound(action, "to", filter.to);
  // Stored createdAt values are safe integers from 0 on.
  const gte = from === undefined || from <= 0 ? undefined : Math.ceil(from);
  const lte = to === undefined || to >= Number.MAX_SAFE_INTEGER ? undefined : Math.floor(to);
  if (
    (gte !== undefined && gte > Number.MAX_SAFE_INTEGER) || (lte !== undefined && lte < 0) ||
    (gte !== undefined && lte !== undefined && gte > lte)
  ) return undefined;
  if (gte !== undefined || lte !== undefined) {
    clauses.push({
      range: {
        createdAt: { ...(gte === undefined ? {} : { gte }), ...(lte === undefined ? {} : { lte }) },
      },
    });
  }
  return clauses;
}

/**
 * `search_after` for a cursor; any number is a valid position, while
 * Elasticsearch wants a date in range. Integer positions map as they are.
 */
function toSearchAfter(after: { createdAt: number; id: string }): [number, string] | undefined {
  const { createdAt, id } = after;
  if (Number.isSafeInteger(createdAt)) return [createdAt, id];
  // Past every document: no position to skip.
  if (createdAt > Number.MAX_SAFE_INTEGER) return undefined;
  // Before every document of the floor's millisecond ("~" sorts after digits),
  // or before every document at all.
  return createdAt < 0 ? [-1, "~"] : [Math.floor(createdAt), "~"];
}

function bound(action: string, name: string, value: number | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || Number.isNaN(value)) {
    throw new InvalidQueryError(action, `${name} must be a number, got ${value}`);
  }
  return value;
}

/** The indexed form of a document with only the document's fields; throws when invalid. */
function toIndexedDocument(document: TweetDocument): IndexedDocument {
  const { id, userId, text, createdAt, source } = checkDocument(document);
  return { id, userId, text, terms: [...new Set(tokenize(text))], createdAt, source };
}

function toTweetDocument(stored: IndexedDocument): TweetDocument {
  const { id, userId, text, createdAt, source } = stored;
  return { id, userId, text, createdAt, source };
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(
      `Cannot create ElasticsearchSearchIndex: ${name} must be a positive integer, got ${value}`,
    );
  }
  return value;
}

function nonNegativeInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(
      `Cannot create ElasticsearchSearchIndex: ${name} must be a non-negative integer, got ${value}`,
    );
  }
  return value;
}

/** Whether the whole request may succeed when sent again. */
function isTransient(error: unknown): boolean {
  if (
    error instanceof errors.ConnectionError || error instanceof errors.TimeoutError ||
    error instanceof errors.NoLivingConnectionsError
  ) return true;
  if (error instanceof errors.ResponseError) {
    const status = error.statusCode ?? 0;
    return status === 429 || status >= 500;
  }
  return false;
}

function errorType(error: unknown): string | undefined {
  if (!(error instanceof errors.ResponseError)) return undefined;
  const body: unknown = error.body;
  if (typeof body !== "object" || body === null) return undefined;
  const cause = (body as { error?: { type?: unknown } }).error;
  return typeof cause?.type === "string" ? cause.type : undefined;
}

function describe(error: unknown): string {
  if (error instanceof errors.ResponseError) {
    const body: unknown = error.body;
    const cause = typeof body === "object" && body !== null
      ? (body as { error?: ErrorReason | string }).error
      : undefined;
    const detail = typeof cause === "string"
      ? cause
      : cause === undefined
      ? JSON.stringify(body)
      : reason(cause);
    return `Elasticsearch answered ${error.statusCode ?? "without a status"}: ${
      truncate(detail ?? "")
    }`;
  }
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

function reason(error: ErrorReason | undefined): string {
  if (error === undefined) return "no reason given";
  return truncate(`${error.type}: ${error.reason ?? "no reason given"}`);
}

function truncate(text: string): string {
  return text.length > MAX_REASON_LENGTH ? `${text.slice(0, MAX_REASON_LENGTH)}...` : text;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
