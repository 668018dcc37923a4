/**
 * The two public representations of tweets. v1 is flat and pages through
 * headers; v2 carries an author object, hypermedia links and a paging
 * envelope. Ids are strings (64-bit integers do not fit a JSON number) and
 * times are ISO-8601 UTC.
 */
import { z } from "../../shared/http/openapi.ts";
import { encodeCursor } from "../../shared/search_index/cursor.ts";
import type { SearchPage, TweetDocument } from "../../shared/search_index/search_index.ts";
import { isoTime } from "./iso_time.ts";
import { WordCountsSchema } from "./word_counts.ts";

export type ApiVersion = "v1" | "v2";

export const MEDIA_TYPES: Readonly<Record<ApiVersion, string>> = {
  v1: "application/vnd.twitterapi.v1+json",
  v2: "application/vnd.twitterapi.v2+json",
};

const Id = z.string().regex(/^\d{1,19}$/).openapi({
  description: "A 64-bit id as its decimal string",
  example: "1000000000000000020",
});
const Time = z.iso.datetime().openapi({ example: "2026-11-24T10:00:20.000Z" });
/** A path on this API, with its query when it has one. */
const Path = z.string().openapi({ format: "uri-reference", example: "/api/v2/tweets/1" });

export const TweetV1Schema = z.object({
  id: Id,
  userId: Id,
  text: z.string(),
  createdAt: Time,
}).openapi("TweetV1", { description: "A tweet in the deprecated v1 representation" });

export type TweetV1 = z.infer<typeof TweetV1Schema>;

export function tweetV1(document: TweetDocument): TweetV1 {
  return {
    id: document.id,
    userId: document.userId,
    text: document.text,
    createdAt: isoTime(document.createdAt),
  };
}

export const TweetV2Schema = z.object({
  id: Id,
  text: z.string(),
  createdAt: Time,
  source: z.string().openapi({ description: "Where the tweet came from", example: "mock" }),
  author: z.object({ id: Id, links: z.object({ tweets: Path }) }),
  links: z.object({ self: Path }),
}).openapi("TweetV2", { description: "A tweet with its author and hypermedia links" });

export type TweetV2 = z.infer<typeof TweetV2Schema>;

/** `collection` is the path the client used, e.g. `/api/v2/tweets`. */
export function tweetV2(document: TweetDocument, collection: string): TweetV2 {
  return {
    id: document.id,
    text: document.text,
    createdAt: isoTime(document.createdAt),
    source: document.source,
    author: {
      id: document.userId,
      links: { tweets: `${collection}?userId=${document.userId}` },
    },
    links: { self: `${collection}/${document.id}` },
  };
}

export const SearchResultV2Schema = z.object({
  data: z.array(TweetV2Schema).openapi({ description: "Newest first" }),
  page: z.object({
    size: z.int().min(1).openapi({ description: "The page size asked for" }),
    total: z.int().min(0).openapi({ description: "Matching tweets over all pages" }),
    nextCursor: z.string().nullable().openapi({
      description: "The `cursor` of the next page; null on the last page",
    }),
  }),
  links: z.object({ self: Path, next: Path.nullable() }),
  wordCounts: WordCountsSchema.optional().openapi({
    description: "How often each word of `text` was seen; present when `text` is given",
  }),
}).openapi("SearchResultV2", { description: "One page of a search" });

export type SearchResultV2 = z.infer<typeof SearchResultV2Schema>;

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
