/**
 * Opaque page cursors for the HTTP API: base64url (no padding) of the JSON
 * `[createdAt, id]`. Clients send them back verbatim, so decoding trusts
 * nothing and validates the shape fully.
 */

import { DOCUMENT_ID } from "./documents.ts";
import type { SearchCursor } from "./search_index.ts";

/** Longer than any valid cursor (about 56 characters); bounds decoding work. */
export const MAX_CURSOR_LENGTH = 128;
export const BASE64URL = /^[A-Za-z0-9_-]*$/;
/** A decimal 64-bit id, signed or unsigned, is at most 20 digits. */

export class InvalidCursorError extends Error {
  readonly code = "invalid-cursor";
  constructor(detail: string, options?: ErrorOptions) {
    super(`Cannot decode cursor: ${detail}`, options);
    this.name = "InvalidCursorError";
  }
}

export function encodeCursor(cursor: SearchCursor): string {
  // The JSON of a number and a decimal id is ASCII: btoa takes it as it is
  // (a TextEncoder and a spread of its bytes cost five times as much).
  return btoa(JSON.stringify([cursor.createdAt, cursor.id]))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
}

/** The shortest cursor `encodeCursor` makes: shorter text is never one. */
export const MIN_CURSOR_LENGTH = encodeCursor({ createdAt: 0, id: "0" }).length;

/** Throws `InvalidCursorError` unless `text` is a cursor made by `encodeCursor`. */
export function decodeCursor(text: string): SearchCursor {
  const json = decodeBase64Url(text);
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (error) {
    throw new InvalidCursorError("it is not JSON", { cause: error });
  }
  if (!Array.isArray(value) || value.length !== 2) {
    throw new InvalidCursorError("it is not a [createdAt, id] pair");
  }
  const [createdAt, id] = value as [unknown, unknown];
  if (typeof createdAt !== "number" || !Number.isSafeInteger(createdAt) || createdAt < 0) {
    throw new InvalidCursorError("createdAt is not a non-negative integer");
  }
  if (typeof id !== "string" || !DOCUMENT_ID.test(id)) {
    throw new InvalidCursorError("id is not a decimal string of 1 to 20 digits");
  }
  return { createdAt, id };
}

function decodeBase64Url(text: string): string {
  if (text.length > MAX_CURSOR_LENGTH) {
    throw new InvalidCursorError(`it is longer than ${MAX_CURSOR_LENGTH} characters`);
  }
  // A length of 1 modulo 4 cannot come from whole bytes.
  if (!BASE64URL.test(text) || text.length % 4 === 1) {
    throw new InvalidCursorError("it is not base64url");
  }
  const base64 = text.replaceAll("-", "+").replaceAll("_", "/") +
    "=".repeat((4 - (text.length % 4)) % 4);
  const binary = atob(base64);
  const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (error) {
    throw new InvalidCursorError("it is not UTF-8", { cause: error });
  }
}
