/**
 * The analytics read API: the latest count of a word, its history, and the
 * words with the highest counts. A word is normalised as it was counted
 * (`tokenize()`); a word never counted is 404, not a zero. Every route is
 * declared with the schemas that validate it and that `/openapi.json` shows.
 */
import {
  bearerSecurity,
  createRoute,
  type OpenAPIHono,
  problemResponses,
  z,
} from "../../shared/http/openapi.ts";
import { notFound } from "../../shared/http/problem.ts";
import { refineTimeRange, TIME_RANGE_PARAMETERS } from "../../shared/http/time_range.ts";
import { tokenize } from "../../shared/text/tokenize.ts";
import type { WordCountStore, WordCountUpdate } from "./word_count_store.ts";

export interface AnalyticsRoutesOptions {
  readonly store: WordCountStore;
}

const TOP_LIMIT = { default: 10, max: 100 } as const;
const LIMIT_DETAIL = `must be an integer from 1 to ${TOP_LIMIT.max}`;

/** The `word` path parameter, normalised to the one token it must be. */
const WordParams = z.object({
  word: z.string().transform((raw, context) => {
    const tokens = tokenize(raw);
    if (tokens.length === 1) return tokens[0]!;
    context.addIssue({
      code: "custom",
      message: "must be exactly one word: letters, digits or '_', without separators",
      input: raw,
    });
    return z.NEVER;
  }).openapi({
    param: {
      description: "One word, normalised as it was counted (lower case)",
      example: "kafka",
    },
  }),
});

const Word = z.string().openapi({ description: "The normalised word", example: "kafka" });
const Count = z.int().min(0).openapi({ description: "All-time count", example: 1234 });
const UpdatedAt = z.iso.datetime().openapi({
  description: "Creation time of the newest tweet counted",
  example: "2026-11-24T10:00:04.000Z",
});

const WordCountSchema = z.object({ word: Word, count: Count, updatedAt: UpdatedAt })
  .openapi("WordCount", { description: "The latest count of a word" });

const WordHistorySchema = z.object({
  word: Word,
  history: z.array(z.object({ count: Count, updatedAt: UpdatedAt })).openapi({
    description:
      "Oldest first; the newest updates of the word, as many as ANALYTICS_HISTORY_PER_WORD",
  }),
}).openapi("WordHistory");

const TopWordsSchema = z.object({
  words: z.array(WordCountSchema).openapi({ description: "Highest count first" }),
}).openapi("TopWords");

const json = <T>(schema: T) => ({ "application/json": { schema } });
const TAGS = ["analytics"];

const wordRoute = createRoute({
  method: "get",
  path: "/api/v1/analytics/words/{word}",
  operationId: "getWordCount",
  summary: "The latest count of a word",
  tags: TAGS,
  security: bearerSecurity,
  request: { params: WordParams },
  responses: {
    200: { description: "The word's latest count", content: json(WordCountSchema) },
    ...problemResponses(400, 401, 404),
  },
});

const historyRoute = createRoute({
  method: "get",
  path: "/api/v1/analytics/words/{word}/history",
  operationId: "getWordHistory",
  summary: "The recorded counts of a word over time",
  tags: TAGS,
  security: bearerSecurity,
  request: {
    params: WordParams,
    query: z.object(TIME_RANGE_PARAMETERS).superRefine(refineTimeRange),
  },
  responses: {
    200: {
      description: "The word's counts updated within the time range",
      content: json(WordHistorySchema),
    },
    ...problemResponses(400, 401, 404),
  },
});

const topRoute = createRoute({
  method: "get",
  path: "/api/v1/analytics/top",
  operationId: "getTopWords",
  summary: "The words with the highest counts",
  tags: TAGS,
  security: bearerSecurity,
  request: {
    query: z.object({
      limit: z.coerce.number({ error: LIMIT_DETAIL }).int({ error: LIMIT_DETAIL })
        .min(1, { error: LIMIT_DETAIL }).max(TOP_LIMIT.max, { error: LIMIT_DETAIL })
        .default(TOP_LIMIT.default).openapi({ description: "How many words", example: 10 }),
    }),
  },
  responses: {
    200: { description: "The top words", content: json(TopWordsSchema) },
    ...problemResponses(400, 401),
  },
});

function wordCountBody(update: WordCountUpdate) {
  return {
    word: update.word,
    count: update.count,
    updatedAt: new Date(update.updatedAt).toISOString(),
  };
}

export function addAnalyticsRoutes(app: OpenAPIHono, options: AnalyticsRoutesOptions): OpenAPIHono {
  const { store } = options;

  async function latestOf(word: string): Promise<WordCountUpdate> {
    const latest = await store.latest(word);
    if (latest === undefined) throw notFound(`No count has been recorded for the word '${word}'`);
    return latest;
  }

  app.openapi(wordRoute, async (c) => {
    const { word } = c.req.valid("param");
    return c.json(wordCountBody(await latestOf(word)), 200);
  });

  app.openapi(historyRoute, async (c) => {
    const { word } = c.req.valid("param");
    const { from, to } = c.req.valid("query");
    await latestOf(word);
    const history = await store.history(word, {
      ...(from === undefined ? {} : { from }),
      ...(to === undefined ? {} : { to }),
    });
    return c.json({
      word,
      history: history.map((entry) => ({
        count: entry.count,
        updatedAt: new Date(entry.updatedAt).toISOString(),
      })),
    }, 200);
  });

  app.openapi(topRoute, async (c) => {
    const { limit } = c.req.valid("query");
    return c.json({ words: (await store.top(limit)).map(wordCountBody) }, 200);
  });

  return app;
}
