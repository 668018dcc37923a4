/**
 * The two public representations of tweets. v1 is flat and pages through
 * headers; v2 carries an author object, hypermedia links and a paging
 * envelope. Ids are strings (64-bit integers do not fit a JSON number) and
 * times are ISO-8601 UTC.
 */
import { encodeCursor } from "../../shared/search_index/cursor.ts";
import type { SearchPage, TweetDocument } from "../../shared/search_index/search_index.ts";

export type ApiVersion = "v1" | "v2";

export const MEDIA_TYPES: Readonly<Record<ApiVersion, string>> = {
  v1: "application/vnd.twitterapi.v1+json",
  v2: "application/vnd.twitterapi.v2+json",
};

export interface TweetV1 {
  readonly id: string;
  readonly userId: string;
  readonly text: string;
  readonly createdAt: string;
}

export function tweetV1(document: TweetDocument): TweetV1 {
  return {
    id: document.id,
    userId: document.userId,
    text: document.text,
    createdAt: new Date(document.createdAt).toISOString(),
  };
}

export interface TweetV2 {
  readonly id: string;
  readonly text: string;
  readonly createdAt: string;
  readonly source: string;
  readonly author: { readonly id: string; readonly links: { readonly tweets: string } };
  readonly links: { readonly self: string };
}

/** `collection` is the path the client used, e.g. `/api/v2/tweets`. */
export function tweetV2(document: TweetDocument, collection: string): TweetV2 {
  return {
    id: document.id,
    text: document.text,
    createdAt: new Date(document.createdAt).toISOString(),
    source: document.source,
    author: {
      id: document.userId,
      links: { tweets: `${collection}?userId=${document.userId}` },
    },
    links: { self: `${collection}/${document.id}` },
  };
}

export interface SearchResultV2 {
  readonly data: TweetV2[];
  readonly page: {
    readonly size: number;
    readonly total: number;
    readonly nextCursor: string | null;
  };
  readonly links: { readonly self: string; readonly next: string | null };
}

/** The link to the page after `page`, keeping the other parameters. */
export function nextPageLink(url: URL, page: SearchPage): string | null {
  if (page.next === undefined) return null;
  const params = new URLSearchParams(url.search);
  params.set("cursor", encodeCursor(page.next));
  return `${url.pathname}?${params}`;
}

export function searchResultV2(page: SearchPage, url: URL, size: number): SearchResultV2 {
  return {
    data: page.documents.map((document) => tweetV2(document, url.pathname)),
    page: {
      size,
      total: page.total,
      nextCursor: page.next === undefined ? null : encodeCursor(page.next),
    },
    links: { self: `${url.pathname}${url.search}`, next: nextPageLink(url, page) },
  };
}
