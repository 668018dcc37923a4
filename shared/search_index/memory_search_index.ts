/**
 * The embedded search index: everything in process memory, for dev runs and
 * tests. Writes are visible to search immediately.
 *
 * Layout: the documents by id, an inverted index (term to documents),
 * documents by user, and every document in newest-first order.
 *
 * A search with posting sets walks that order from the page's start, keeping
 * the documents in every set: a page of a common term takes a few hundred
 * steps. When the matches turn out to be sparse it selects the page from the
 * smallest posting set instead, so no search sorts the whole match set.
 *
 * Posting sets hold the stored document objects rather than ids: membership
 * is an identity check and intersecting needs no lookup by id, which made
 * counting a common term within a time range five times faster.
 */

import { tokenize } from "../text/tokenize.ts";
import {
  MAX_VISIBILITY_IDS,
  type SearchCursor,
  type SearchFilter,
  type SearchIndex,
  type SearchPage,
  type SearchQuery,
  type TweetDocument,
  type Visibility,
} from "./search_index.ts";
import { checkDocument, InvalidQueryError, SearchIndexClosedError } from "./documents.ts";

export interface MemorySearchIndexOptions {
  /**
   * Most documents kept. This bounds the embedded index's memory during long
   * dev runs: beyond it the oldest documents by `createdAt` are evicted, and
   * counted by `MemorySearchIndex.evicted`. Checked after each upsert call,
   * so one larger batch may briefly exceed it. A positive integer.
   * @default 1_000_000
   */
  readonly maxDocuments?: number;
}

const DEFAULT_MAX_DOCUMENTS = 1_000_000;
export class MemorySearchIndex implements SearchIndex {
  readonly #maxDocuments: number;
  readonly #documents = new Map<string, TweetDocument>();
  readonly #byTerm: Postings = new Map();
  readonly #byUser: Postings = new Map();
  readonly #newestFirst = new NewestFirstList();
  #evicted = 0;
  #closed = false;

  constructor(options: MemorySearchIndexOptions = {}) {
    const maxDocuments = options.maxDocuments ?? DEFAULT_MAX_DOCUMENTS;
    if (!Number.isSafeInteger(maxDocuments) || maxDocuments < 1) {
      throw new RangeError(
        `Cannot create MemorySearchIndex: maxDocuments must be a positive integer, got ${maxDocuments}`,
      );
    }
    this.#maxDocuments = maxDocuments;
  }

  /** Documents evicted so far because the index held more than `maxDocuments`. */
  get evicted(): number {
    return this.#evicted;
  }

  /** Nothing to prepare: the index exists from construction. */
  open(): Promise<void> {
    return settle(() => this.#assertOpen("open the search index"));
  }

  upsert(documents: readonly TweetDocument[]): Promise<void> {
    return settle(() => {
      this.#assertOpen("upsert documents");
      // Validate the whole batch first, so that a rejected call stores nothing.
      const stored = documents.map(toStoredDocument);
      for (const document of stored) this.#put(document);
      // Evicting after the batch keeps the newest documents of old and new
      // together; evicting during it could drop one the batch later outdates.
      while (this.#documents.size > this.#maxDocuments) this.#evictOldest();
    });
  }

  get(id: string): Promise<TweetDocument | undefined> {
    return settle(() => {
      this.#assertOpen("get a document");
      return this.#documents.get(id);
    });
  }

  search(query: SearchQuery): Promise<SearchPage> {
    return settle(() => {
      const action = "search documents";
      this.#assertOpen(action);
      const { size, after } = query;
      if (!Number.isSafeInteger(size) || size < 1) {
        throw new InvalidQueryError(action, `size must be a positive integer, got ${size}`);
      }
      if (
        after !== undefined &&
        (typeof after.createdAt !== "number" || Number.isNaN(after.createdAt) ||
          typeof after.id !== "string")
      ) {
        throw new InvalidQueryError(action, "after must be a cursor of createdAt and id");
      }
      const plan = this.#plan(action, query);
      const total = plan === undefined ? 0 : this.#count(plan);
      if (plan === undefined || total === 0) return { documents: [], total: 0 };
      const found = this.#page(plan, size + 1, after);
      const documents = found.slice(0, size);
      const last = documents[documents.length - 1];
      if (found.length <= size || last === undefined) return { documents, total };
      return { documents, total, next: { createdAt: last.createdAt, id: last.id } };
    });
  }

  count(filter: SearchFilter = {}): Promise<number> {
    return settle(() => {
      const action = "count documents";
      this.#assertOpen(action);
      const plan = this.#plan(action, filter);
      return plan === undefined ? 0 : this.#count(plan);
    });
  }

  refresh(): Promise<void> {
    return settle(() => this.#assertOpen("refresh the search index"));
  }

  ping(): Promise<void> {
    return settle(() => this.#assertOpen("ping the search index"));
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#documents.clear();
    this.#byTerm.clear();
    this.#byUser.clear();
    this.#newestFirst.clear();
    return Promise.resolve();
  }

  #assertOpen(action: string): void {
    if (this.#closed) throw new SearchIndexClosedError(action);
  }

  #put(document: TweetDocument): void {
    const existing = this.#documents.get(document.id);
    if (existing !== undefined) {
      if (sameDocument(existing, document)) return;
      this.#delete(existing);
    }
    this.#documents.set(document.id, document);
    this.#newestFirst.insert(document);
    addPosting(this.#byUser, document.userId, document);
    for (const term of new Set(tokenize(document.text))) addPosting(this.#byTerm, term, document);
  }

  #delete(document: TweetDocument): void {
    this.#documents.delete(document.id);
    this.#newestFirst.remove(document);
    removePosting(this.#byUser, document.userId, document);
    for (const term of new Set(tokenize(document.text))) {
      removePosting(this.#byTerm, term, document);
    }
  }

  /** Deletes the last document of the order; the index must not be empty. */
  #evictOldest(): void {
    this.#delete(this.#newestFirst.oldest()!);
    this.#evicted++;
  }

  /** Resolves the filter to posting sets and bounds; undefined when nothing can match. */
  #plan(action: string, filter: SearchFilter): Plan | undefined {
    const from = bound(action, "from", filter.from, -Infinity);
    const to = bound(action, "to", filter.to, Infinity);
    const sets: Set<TweetDocument>[] = [];
    if (filter.text !== undefined) {
      const terms = new Set(tokenize(filter.text));
      if (terms.size === 0) return undefined;
      for (const term of terms) {
        const documents = this.#byTerm.get(term);
        if (documents === undefined) return undefined;
        sets.push(documents);
      }
    }
    if (filter.userId !== undefined) {
      const documents = this.#byUser.get(filter.userId);
      if (documents === undefined) return undefined;
      sets.push(documents);
    }
    const visibility = filter.visibleTo;
    if (visibility !== undefined && !visibility.all) {
      const visible = this.#visible(action, visibility);
      if (visible.size === 0) return undefined;
      sets.push(visible);
    }
    if (from > to) return undefined;
    // Intersections start from the smallest set.
    sets.sort((a, b) => a.size - b.size);
    return { sets, from, to };
  }

  /** The stored documents a reader may see: one more posting set for the plan. */
  #visible(action: string, visibility: Visibility): Set<TweetDocument> {
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
    const visible = new Set<TweetDocument>();
    for (const id of tweetIds) {
      const document = this.#documents.get(id);
      if (document !== undefined) visible.add(document);
    }
    for (const authorId of authorIds) {
      for (const document of this.#byUser.get(authorId) ?? []) visible.add(document);
    }
    return visible;
  }

  #count(plan: Plan): number {
    const { sets, from, to } = plan;
    const [smallest, ...others] = sets;
    if (smallest === undefined) {
      const list = this.#newestFirst;
      const start = list.rank(list.seek((document) => document.createdAt <= to));
      const end = list.rank(list.seek((document) => document.createdAt < from));
      return end - start;
    }
    const bounded = from > -Infinity || to < Infinity;
    if (others.length === 0 && !bounded) return smallest.size;
    let total = 0;
    for (const document of smallest) {
      if (bounded && (document.createdAt < from || document.createdAt > to)) continue;
      if (others.every((set) => set.has(document))) total++;
    }
    return total;
  }

  /** The first `limit` matches strictly after `after`, newest first. */
  #page(plan: Plan, limit: number, after: SearchCursor | undefined): TweetDocument[] {
    const { sets, from, to } = plan;
    const [smallest] = sets;
    const start = this.#newestFirst.seek((document) =>
      document.createdAt <= to && (after === undefined || precedes(after, document))
    );
    // Walking the order costs about limit / density steps; past the size of
    // the smallest set, selecting from that set is cheaper.
    let budget = smallest?.size ?? Infinity;
    let walked = true;
    const found: TweetDocument[] = [];
    this.#newestFirst.scan(start, (document) => {
      if (document.createdAt < from) return false;
      if (budget-- <= 0) {
        walked = false;
        return false;
      }
      if (!sets.every((set) => set.has(document))) return true;
      found.push(document);
      return found.length < limit;
    });
    if (walked || smallest === undefined) return found;

    const selection = new NewestSelection(limit);
    for (const document of smallest) {
      if (
        document.createdAt < from || document.createdAt > to ||
        (after !== undefined && !precedes(after, document)) ||
        !sets.every((set) => set === smallest || set.has(document))
      ) continue;
      selection.offer(document);
    }
    return selection.newestFirst();
  }
}

interface Plan {
  /** Posting sets every match belongs to, smallest first. */
  readonly sets: readonly Set<TweetDocument>[];
  /** Inclusive bounds on `createdAt`. */
  readonly from: number;
  readonly to: number;
}

/** Whether `a` comes before `b` newest first: `createdAt` descending, then `id` descending. */
function precedes(a: SearchCursor, b: SearchCursor): boolean {
  return a.createdAt > b.createdAt || (a.createdAt === b.createdAt && a.id > b.id);
}

/** Runs `work` now; a throw becomes a rejection, as callers of a port expect. */
function settle<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error);
  }
}

function bound(action: string, name: string, value: number | undefined, absent: number): number {
  if (value === undefined) return absent;
  if (typeof value !== "number" || Number.isNaN(value)) {
    throw new InvalidQueryError(action, `${name} must be a number, got ${value}`);
  }
  return value;
}

/** A frozen copy with only the document's fields, so callers cannot change stored state. */
function toStoredDocument(document: TweetDocument): TweetDocument {
  return Object.freeze(checkDocument(document));
}

function sameDocument(a: TweetDocument, b: TweetDocument): boolean {
  return a.id === b.id && a.userId === b.userId && a.text === b.text &&
    a.createdAt === b.createdAt && a.source === b.source;
}

/** Stored documents by term or user id. */
type Postings = Map<string, Set<TweetDocument>>;

function addPosting(postings: Postings, key: string, document: TweetDocument): void {
  const documents = postings.get(key);
  if (documents === undefined) postings.set(key, new Set([document]));
  else documents.add(document);
}

/** Removes a document that `addPosting` added under `key`. */
function removePosting(postings: Postings, key: string, document: TweetDocument): void {
  const documents = postings.get(key)!;
  documents.delete(document);
  // Dropping empty sets keeps evicted terms from accumulating.
  if (documents.size === 0) postings.delete(key);
}

/** A position in a `NewestFirstList`; `chunk` equal to the chunk count is the end. */
interface Position {
  readonly chunk: number;
  readonly offset: number;
}

/** Chunks of at most this many documents; a longer chunk is split in two. */
const MAX_CHUNK = 1024;

/**
 * Documents in newest-first order, as a list of sorted chunks: inserting,
 * removing and seeking cost a binary search plus a copy of one small chunk,
 * instead of a copy of the whole list.
 */
class NewestFirstList {
  #chunks: TweetDocument[][] = [];

  /**
   * The first position whose document satisfies `reached`, which must be
   * false up to some point of the order and true from there on.
   */
  seek(reached: (document: TweetDocument) => boolean): Position {
    const chunks = this.#chunks;
    let low = 0;
    let high = chunks.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      const chunk = chunks[middle]!;
      if (reached(chunk[chunk.length - 1]!)) high = middle;
      else low = middle + 1;
    }
    const chunk = chunks[low];
    if (chunk === undefined) return { chunk: low, offset: 0 };
    let first = 0;
    let last = chunk.length - 1;
    while (first < last) {
      const middle = (first + last) >>> 1;
      if (reached(chunk[middle]!)) last = middle;
      else first = middle + 1;
    }
    return { chunk: low, offset: first };
  }

  /** Number of documents before `position`. */
  rank(position: Position): number {
    let rank = position.offset;
    for (let index = 0; index < position.chunk; index++) rank += this.#chunks[index]!.length;
    return rank;
  }

  insert(document: TweetDocument): void {
    const chunks = this.#chunks;
    const position = this.seek((other) => !precedes(other, document));
    // Past the end, the document joins the last chunk.
    const index = Math.min(position.chunk, chunks.length - 1);
    const chunk = chunks[index];
    if (chunk === undefined) {
      chunks.push([document]);
      return;
    }
    chunk.splice(index === position.chunk ? position.offset : chunk.length, 0, document);
    if (chunk.length > MAX_CHUNK) chunks.splice(index + 1, 0, chunk.splice(chunk.length >>> 1));
  }

  /** Removes `document`, which must be in the list. */
  remove(document: TweetDocument): void {
    const position = this.seek((other) => !precedes(other, document));
    const chunk = this.#chunks[position.chunk]!;
    chunk.splice(position.offset, 1);
    if (chunk.length === 0) this.#chunks.splice(position.chunk, 1);
  }

  oldest(): TweetDocument | undefined {
    const chunk = this.#chunks[this.#chunks.length - 1];
    return chunk?.[chunk.length - 1];
  }

  /** Visits documents in order from `start` while `visit` returns true. */
  scan(start: Position, visit: (document: TweetDocument) => boolean): void {
    const chunks = this.#chunks;
    for (let index = start.chunk, offset = start.offset; index < chunks.length; index++) {
      const chunk = chunks[index]!;
      for (; offset < chunk.length; offset++) if (!visit(chunk[offset]!)) return;
      offset = 0;
    }
  }

  clear(): void {
    this.#chunks = [];
  }
}

/** Keeps the newest `capacity` documents offered: a heap with the oldest kept on top. */
class NewestSelection {
  readonly #heap: TweetDocument[] = [];
  readonly #capacity: number;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  offer(document: TweetDocument): void {
    const heap = this.#heap;
    if (heap.length < this.#capacity) {
      heap.push(document);
      this.#siftUp(heap.length - 1);
    } else if (precedes(document, heap[0]!)) {
      heap[0] = document;
      this.#siftDown(0);
    }
  }

  newestFirst(): TweetDocument[] {
    return [...this.#heap].sort((a, b) => precedes(a, b) ? -1 : 1);
  }

  #siftUp(index: number): void {
    const heap = this.#heap;
    while (index > 0) {
      const parent = (index - 1) >>> 1;
      if (!precedes(heap[parent]!, heap[index]!)) return;
      this.#swap(parent, index);
      index = parent;
    }
  }

  #siftDown(index: number): void {
    const heap = this.#heap;
    for (;;) {
      const left = 2 * index + 1;
      const right = left + 1;
      let oldest = index;
      if (left < heap.length && precedes(heap[oldest]!, heap[left]!)) oldest = left;
      if (right < heap.length && precedes(heap[oldest]!, heap[right]!)) oldest = right;
      if (oldest === index) return;
      this.#swap(oldest, index);
      index = oldest;
    }
  }

  #swap(a: number, b: number): void {
    const heap = this.#heap;
    [heap[a], heap[b]] = [heap[b]!, heap[a]!];
  }
}
