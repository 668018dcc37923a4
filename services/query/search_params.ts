/**
 * Validation of the tweet search parameters. Every invalid parameter is
 * reported at once, by name, as a 400 problem.
 */
import { invalidParameters, type ParameterError } from "../../shared/http/problem.ts";
import { parseTimeRange } from "../../shared/http/time_range.ts";
import { decodeCursor } from "../../shared/search_index/cursor.ts";
import type { SearchQuery } from "../../shared/search_index/search_index.ts";
import { tokenize } from "../../shared/text/tokenize.ts";

export interface PagingLimits {
  readonly defaultPageSize: number;
  readonly maxPageSize: number;
}

const MAX_ID = 2n ** 63n - 1n;
const MAX_TEXT_LENGTH = 500;

/** True for the decimal form of a non-negative 64-bit signed integer. */
export function isEntityId(value: string): boolean {
  return /^\d{1,19}$/.test(value) && BigInt(value) <= MAX_ID;
}

/** Parses `text`, `userId`, `from`, `to`, `size` and `cursor`. */
export function parseSearchParams(params: URLSearchParams, limits: PagingLimits): SearchQuery {
  const errors: ParameterError[] = [];
  const query: { -readonly [K in keyof SearchQuery]: SearchQuery[K] } = {
    size: limits.defaultPageSize,
  };

  const text = params.get("text");
  if (text !== null) {
    if (text.trim() === "") {
      errors.push({ parameter: "text", detail: "must not be empty" });
    } else if (text.length > MAX_TEXT_LENGTH) {
      errors.push({ parameter: "text", detail: `must be at most ${MAX_TEXT_LENGTH} characters` });
    } else if (tokenize(text).length === 0) {
      errors.push({ parameter: "text", detail: "must contain at least one letter or digit" });
    } else {
      query.text = text;
    }
  }

  const userId = params.get("userId");
  if (userId !== null) {
    if (isEntityId(userId)) query.userId = userId;
    else {
      errors.push({
        parameter: "userId",
        detail: "must be a user id: a decimal integer from 0 to 9223372036854775807",
      });
    }
  }

  const range = parseTimeRange(params, errors);
  if (range.from !== undefined) query.from = range.from;
  if (range.to !== undefined) query.to = range.to;

  const size = params.get("size");
  if (size !== null) {
    const parsed = Number(size);
    if (!/^\d+$/.test(size) || parsed < 1 || parsed > limits.maxPageSize) {
      errors.push({
        parameter: "size",
        detail: `must be an integer from 1 to ${limits.maxPageSize}`,
      });
    } else {
      query.size = parsed;
    }
  }

  const cursor = params.get("cursor");
  if (cursor !== null) {
    try {
      query.after = decodeCursor(cursor);
    } catch {
      errors.push({
        parameter: "cursor",
        detail: "must be a cursor returned by a previous page of this search",
      });
    }
  }

  if (errors.length > 0) throw invalidParameters(errors);
  return query;
}
