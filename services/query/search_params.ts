/**
 * The tweet search parameters, as the schema that validates them and that
 * `/openapi.json` describes. Every invalid parameter is reported at once, by
 * name, as a 400 problem.
 */
import { z } from "../../shared/http/openapi.ts";
import { refineTimeRange, TIME_RANGE_PARAMETERS } from "../../shared/http/time_range.ts";
import {
  BASE64URL,
  decodeCursor,
  MAX_CURSOR_LENGTH,
  MIN_CURSOR_LENGTH,
} from "../../shared/search_index/cursor.ts";
import type { SearchCursor, SearchQuery } from "../../shared/search_index/search_index.ts";
import { tokenize } from "../../shared/text/tokenize.ts";

export interface PagingLimits {
  readonly defaultPageSize: number;
  readonly maxPageSize: number;
}

const MAX_ID = 2n ** 63n - 1n;
const MAX_TEXT_LENGTH = 500;
const ENTITY_ID_PATTERN = /^\d{1,19}$/;
export const ENTITY_ID_DETAIL = "a decimal integer from 0 to 9223372036854775807";

/** True for the decimal form of a non-negative 64-bit signed integer. */
export function isEntityId(value: string): boolean {
  return ENTITY_ID_PATTERN.test(value) && BigInt(value) <= MAX_ID;
}

/** A 64-bit id as its decimal string (it does not fit a JSON number); `what` names it in errors. */
export function entityId(what: string) {
  const error = `must be ${what}: ${ENTITY_ID_DETAIL}`;
  return z.string().regex(ENTITY_ID_PATTERN, { error, abort: true }).refine(isEntityId, { error })
    .openapi({ description: `${what[0]!.toUpperCase()}${what.slice(1)}: ${ENTITY_ID_DETAIL}` });
}

function searchParameters(limits: PagingLimits) {
  // A function: the largest page follows the refreshable configuration.
  const sizeDetail = () => `must be an integer from 1 to ${limits.maxPageSize}`;
  return {
    text: z.string().max(MAX_TEXT_LENGTH, {
      error: `must be at most ${MAX_TEXT_LENGTH} characters`,
    })
      .refine((text) => text.trim() !== "", { error: "must not be empty", abort: true })
      // Not a pattern: one needs \p{L}, which Swagger UI's check (a RegExp without the `u`
      // flag) reads as literal text, and /docs would refuse every search.
      .refine((text) => tokenize(text).length > 0, {
        error: "must contain at least one letter or digit",
      }).optional().openapi({
        description: "Words the tweet's text contains (all of them); their counts are given too",
        example: "kafka",
      }),
    // No example on a filter (userId, from, to): "Try it out" at the gateway's /docs sends each
    // parameter's example, and an example author or day narrows a first search to no tweets.
    userId: entityId("a user id").optional().openapi({
      description: `Only the tweets of this author: ${ENTITY_ID_DETAIL}`,
    }),
    ...TIME_RANGE_PARAMETERS,
    size: z.coerce.number({ error: sizeDetail }).int({ error: sizeDetail })
      .min(1, { error: sizeDetail })
      .refine((size) => size <= limits.maxPageSize, { error: sizeDetail })
      .optional().openapi({
        description: "Tweets per page: from 1 to the configured largest page " +
          `(QUERY_MAX_PAGE_SIZE, ${limits.maxPageSize} at start); ` +
          `default QUERY_DEFAULT_PAGE_SIZE (${limits.defaultPageSize} at start)`,
        maximum: limits.maxPageSize,
        example: 20,
      }),
  };
}

const CURSOR_DETAIL = "must be a cursor returned by a previous page of this search";

// Its length and alphabet as the schema's, so the description states them; the rest is opaque.
const CURSOR = z.string().min(MIN_CURSOR_LENGTH, { error: CURSOR_DETAIL, abort: true })
  .max(MAX_CURSOR_LENGTH, { error: CURSOR_DETAIL, abort: true })
  .regex(BASE64URL, { error: CURSOR_DETAIL, abort: true }).transform((value, context) => {
    try {
      return decodeCursor(value);
    } catch {
      context.addIssue({
        code: "custom",
        message: CURSOR_DETAIL,
        input: value,
      });
      return z.NEVER;
    }
  }).optional().openapi({
    description: "Where the page starts: the `nextCursor` of the previous page",
  });

interface SearchParams {
  readonly text?: string | undefined;
  readonly userId?: string | undefined;
  readonly from?: number | undefined;
  readonly to?: number | undefined;
  readonly size?: number | undefined;
  readonly cursor?: SearchCursor | undefined;
}

function validated<T extends z.ZodType<SearchParams>>(params: T, limits: PagingLimits) {
  return params.superRefine(refineTimeRange).transform((valid): SearchQuery => ({
    size: valid.size ?? limits.defaultPageSize,
    ...(valid.text === undefined ? {} : { text: valid.text }),
    ...(valid.userId === undefined ? {} : { userId: valid.userId }),
    ...(valid.from === undefined ? {} : { from: valid.from }),
    ...(valid.to === undefined ? {} : { to: valid.to }),
    ...(valid.cursor === undefined ? {} : { after: valid.cursor }),
  }));
}

/** The query parameters of a search, validated into the index's query. */
export function searchQuerySchema(limits: PagingLimits) {
  return validated(z.object({ ...searchParameters(limits), cursor: CURSOR }), limits);
}

/** The query parameters of a streaming search: a search without `cursor`. */
export function streamQuerySchema(limits: PagingLimits) {
  return validated(z.object(searchParameters(limits)), limits);
}
