/**
 * What every search index adapter accepts and how it refuses the rest: the
 * document checks and the errors, shared so both adapters behave alike.
 */
import type { TweetDocument } from "./search_index.ts";

/** A document id: the decimal form of an unsigned 64-bit integer, as cursors carry it. */
export const DOCUMENT_ID = /^[0-9]{1,20}$/;

export class InvalidDocumentError extends Error {
  readonly code = "invalid-document";
  constructor(detail: string) {
    super(`Cannot upsert documents: ${detail}`);
    this.name = "InvalidDocumentError";
  }
}

export class InvalidQueryError extends Error {
  readonly code = "invalid-query";
  constructor(action: string, detail: string) {
    super(`Cannot ${action}: ${detail}`);
    this.name = "InvalidQueryError";
  }
}

export class SearchIndexClosedError extends Error {
  readonly code = "search-index-closed";
  constructor(action: string) {
    super(`Cannot ${action}: the search index is closed`);
    this.name = "SearchIndexClosedError";
  }
}

/**
 * A copy of `document` with only its own fields, after checking them: every
 * document must be reachable by a cursor. Throws `InvalidDocumentError`.
 */
export function checkDocument(document: TweetDocument): TweetDocument {
  const { id, userId, text, createdAt, source } = document;
  if (typeof id !== "string" || !DOCUMENT_ID.test(id)) {
    throw new InvalidDocumentError(`id must be a decimal string of 1 to 20 digits, got ${id}`);
  }
  if (!Number.isSafeInteger(createdAt) || createdAt < 0) {
    throw new InvalidDocumentError(
      `createdAt of document ${id} must be a non-negative integer, got ${createdAt}`,
    );
  }
  if (typeof userId !== "string" || typeof text !== "string" || typeof source !== "string") {
    throw new InvalidDocumentError(`userId, text and source of document ${id} must be strings`);
  }
  return { id, userId, text, createdAt, source };
}
