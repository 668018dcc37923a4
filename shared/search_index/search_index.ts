/**
 * The search index port: the CQRS read model of tweets. Adapters:
 * `MemorySearchIndex` (embedded) and, later, an Elasticsearch one. Every
 * adapter must pass `search_index_contract.ts`.
 */

/** A tweet as stored in the index. Ids are decimal strings of 64-bit integers. */
export interface TweetDocument {
  readonly id: string;
  readonly userId: string;
  readonly text: string;
  /** Epoch milliseconds, UTC. */
  readonly createdAt: number;
  /** Where the tweet came from (for example `mock`); `unknown` for old events. */
  readonly source: string;
}

/** Position after the last document of a page, in newest-first order. */
export interface SearchCursor {
  readonly createdAt: number;
  readonly id: string;
}

export interface SearchFilter {
  /**
   * Full-text match: the text is analysed like indexed text (lower-cased,
   * split on runs of Unicode non-word characters) and every resulting term
   * must occur in the document. A text with no terms matches nothing.
   */
  readonly text?: string;
  readonly userId?: string;
  /** Inclusive lower bound on `createdAt`, epoch milliseconds. */
  readonly from?: number;
  /** Inclusive upper bound on `createdAt`, epoch milliseconds. */
  readonly to?: number;
  /**
   * Only documents the reader may see: every document when absent or when
   * `all` is true; otherwise those whose id is in `tweetIds` or whose
   * `userId` is in `authorIds` (none when both are empty). Applied inside
   * the search, so totals and cursors never count a hidden document.
   */
  readonly visibleTo?: Visibility;
}

/** What one reader may see; see `SearchFilter.visibleTo`. */
export interface Visibility {
  readonly all: boolean;
  readonly tweetIds: readonly string[];
  readonly authorIds: readonly string[];
}

/** Most ids of each kind a `Visibility` may list (Elasticsearch's `terms` limit). */
export const MAX_VISIBILITY_IDS = 65_536;

/** Whether `visibility` lets its reader see `document`. */
export function isVisible(document: TweetDocument, visibility: Visibility | undefined): boolean {
  return visibility === undefined || visibility.all ||
    visibility.tweetIds.includes(document.id) || visibility.authorIds.includes(document.userId);
}

export interface SearchQuery extends SearchFilter {
  /** Page size, at least 1. */
  readonly size: number;
  /** Continue after this position (from a previous page's `next`). */
  readonly after?: SearchCursor;
}

export interface SearchPage {
  /** Newest first: `createdAt` descending, then `id` descending (code-unit order). */
  readonly documents: TweetDocument[];
  /** Number of documents matching the filter, over all pages. */
  readonly total: number;
  /** Present when more documents follow this page. */
  readonly next?: SearchCursor;
}

export interface SearchIndex {
  /**
   * Prepares the index for use (Elasticsearch: creates it with its mapping
   * when missing). Idempotent and safe from several processes at once; call
   * it, retrying while the engine is down, before the first read or write.
   */
  open(): Promise<void>;
  /**
   * Inserts or replaces documents by id. Resolves only when every document is
   * durably stored; rejects (storing possibly a part) otherwise, so callers
   * retry the whole set. Replacing with an identical document is a no-op.
   */
  upsert(documents: readonly TweetDocument[]): Promise<void>;
  get(id: string): Promise<TweetDocument | undefined>;
  search(query: SearchQuery): Promise<SearchPage>;
  count(filter?: SearchFilter): Promise<number>;
  /** Makes every stored document visible to search (Elasticsearch refresh). */
  refresh(): Promise<void>;
  /** Resolves when the index is reachable; rejects with the reason otherwise. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
