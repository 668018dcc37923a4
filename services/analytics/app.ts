/**
 * The analytics read API: the latest count of a word, its history, and the
 * words with the highest counts. A word is normalised as it was counted
 * (`tokenize()`); a word never counted is 404, not a zero.
 */
import type { Hono } from "hono";
import { invalidParameters, notFound, type ParameterError } from "../../shared/http/problem.ts";
import { parseTimeRange } from "../../shared/http/time_range.ts";
import { tokenize } from "../../shared/text/tokenize.ts";
import type { WordCountStore, WordCountUpdate } from "./word_count_store.ts";

export interface AnalyticsRoutesOptions {
  readonly store: WordCountStore;
}

const TOP_LIMIT = { default: 10, max: 100 } as const;

const WORD_ERROR: ParameterError = {
  parameter: "word",
  detail: "must be exactly one word: letters, digits or '_', without separators",
};

/** The one token `raw` normalises to; otherwise undefined, with the error added to `errors`. */
function wordOf(raw: string, errors: ParameterError[]): string | undefined {
  const tokens = tokenize(raw);
  if (tokens.length === 1) return tokens[0];
  errors.push(WORD_ERROR);
  return undefined;
}

/** The one token `raw` normalises to; 400 when it is not exactly one. */
function normalisedWord(raw: string): string {
  const word = wordOf(raw, []);
  if (word === undefined) throw invalidParameters([WORD_ERROR]);
  return word;
}

function wordCountBody(update: WordCountUpdate) {
  return {
    word: update.word,
    count: update.count,
    updatedAt: new Date(update.updatedAt).toISOString(),
  };
}

function parseLimit(params: URLSearchParams): number {
  const limit = params.get("limit");
  if (limit === null) return TOP_LIMIT.default;
  const parsed = Number(limit);
  if (!/^\d+$/.test(limit) || parsed < 1 || parsed > TOP_LIMIT.max) {
    throw invalidParameters([{
      parameter: "limit",
      detail: `must be an integer from 1 to ${TOP_LIMIT.max}`,
    }]);
  }
  return parsed;
}

export function addAnalyticsRoutes(app: Hono, options: AnalyticsRoutesOptions): Hono {
  const { store } = options;

  async function latestOf(word: string): Promise<WordCountUpdate> {
    const latest = await store.latest(word);
    if (latest === undefined) throw notFound(`No count has been recorded for the word '${word}'`);
    return latest;
  }

  app.get("/api/v1/analytics/words/:word", async (c) => {
    const word = normalisedWord(c.req.param("word"));
    return c.json(wordCountBody(await latestOf(word)));
  });

  app.get("/api/v1/analytics/words/:word/history", async (c) => {
    const errors: ParameterError[] = [];
    const word = wordOf(c.req.param("word"), errors);
    const range = parseTimeRange(new URL(c.req.url).searchParams, errors);
    if (word === undefined || errors.length > 0) throw invalidParameters(errors);
    await latestOf(word);
    const history = await store.history(word, range);
    return c.json({
      word,
      history: history.map((entry) => ({
        count: entry.count,
        updatedAt: new Date(entry.updatedAt).toISOString(),
      })),
    });
  });

  app.get("/api/v1/analytics/top", async (c) => {
    const limit = parseLimit(new URL(c.req.url).searchParams);
    return c.json({ words: (await store.top(limit)).map(wordCountBody) });
  });

  return app;
}
