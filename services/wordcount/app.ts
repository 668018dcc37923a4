/**
 * The interactive queries of the word counts. Each instance answers for the
 * repartition partitions it has restored; a word of another instance's
 * partition is forwarded to that instance (found by its registry metadata),
 * and trending merges every instance's top words. A partition nobody has
 * restored right now is a 503 with Retry-After, never a wrong zero. Every
 * route is declared with the schemas that validate it and that
 * `/openapi.json` shows.
 */
import type { Context } from "hono";
import type {
  ServiceDiscovery,
  ServiceInstance,
} from "../../shared/discovery/service_discovery.ts";
import {
  bearerSecurity,
  createRoute,
  mountRoute,
  type OpenAPIHono,
  problemResponses,
  z,
} from "../../shared/http/openapi.ts";
import { ProblemError } from "../../shared/http/problem.ts";
import { tracedFetch } from "../../shared/http/traced_fetch.ts";
import type { Tracer } from "../../shared/trace/tracing.ts";
import { tokenize } from "../../shared/text/tokenize.ts";
import {
  topWords,
  type TrendingWord,
  type WindowSize,
  type WordCountProcessor,
} from "./word_counts.ts";

/** Registry metadata key listing the restored partitions of an instance, e.g. `0,2`. */
export const PARTITIONS_METADATA = "wordcount-partitions";
/** Marks a request one instance forwarded to another, so it is never forwarded again. */
const FORWARDED_HEADER = "x-wordcount-forwarded";
const RETRY_AFTER_SECONDS = 1;
const FORWARD_TIMEOUT_MS = 5000;
const TRENDING_LIMIT = { default: 10, max: 100 } as const;
const LIMIT_DETAIL = `must be an integer from 1 to ${TRENDING_LIMIT.max}`;

export interface WordCountRoutesOptions {
  readonly processor: WordCountProcessor;
  readonly windows: readonly WindowSize[];
  readonly partitions: number;
  readonly discovery: ServiceDiscovery;
  /** The service's name in the registry. */
  readonly service: string;
  readonly instanceId: string;
  /** The service's tracer: a forwarded query is a client span of the caller's trace. */
  readonly tracer: Tracer;
}

/** Restored partitions an instance publishes in its registry metadata. */
export function partitionsOf(instance: ServiceInstance): number[] {
  const value = instance.metadata[PARTITIONS_METADATA] ?? "";
  return value === "" ? [] : value.split(",").map(Number);
}

function unavailable(detail: string): ProblemError {
  return new ProblemError({
    status: 503,
    code: "partition-unavailable",
    title: "Word counts temporarily unavailable",
    detail,
    headers: { "retry-after": String(RETRY_AFTER_SECONDS) },
  });
}

function forwardHeaders(c: Context): Record<string, string> {
  const authorization = c.req.header("authorization");
  return {
    accept: "application/json",
    [FORWARDED_HEADER]: "1",
    ...(authorization === undefined ? {} : { authorization }),
  };
}

/** The instance's answer, passed through as it is (status, problem body, headers). */
async function forward(
  c: Context,
  tracer: Tracer,
  service: string,
  url: string,
): Promise<Response> {
  let response: Response;
  try {
    response = await tracedFetch(tracer, url, {
      peerService: service,
      headers: forwardHeaders(c),
      signal: AbortSignal.timeout(FORWARD_TIMEOUT_MS),
    });
  } catch (error) {
    throw unavailable(`The instance owning the word does not answer: ${String(error)}`);
  }
  const headers = new Headers();
  for (const name of ["content-type", "retry-after"]) {
    const value = response.headers.get(name);
    if (value !== null) headers.set(name, value);
  }
  return new Response(await response.arrayBuffer(), { status: response.status, headers });
}

const Word = z.string().openapi({ description: "The normalised word", example: "kafka" });
const Count = z.int().min(0);
const WindowStart = z.iso.datetime().openapi({
  description: "Start of the current window",
  example: "2026-11-24T10:00:00.000Z",
});

const WordCountsSchema = z.object({
  word: Word,
  count: Count.openapi({ description: "All-time count", example: 1234 }),
  windows: z.record(z.string(), z.object({ start: WindowStart, count: Count })).openapi({
    description: "The count in the current window of each configured size (WORDCOUNT_WINDOWS)",
    example: { "1m": { start: "2026-11-24T10:00:00.000Z", count: 3 } },
  }),
}).openapi("WordCounts", { description: "A word's live counts" });

const TrendingSchema = z.object({
  window: z.string().openapi({ description: "The window size", example: "1m" }),
  start: WindowStart,
  words: z.array(z.object({ word: Word, count: Count })).openapi({
    description: "Highest count in the current window first",
  }),
  partitions: z.array(z.int().min(0)).optional().openapi({
    description: "Only on a forwarded request: the partitions this instance answered for",
  }),
}).openapi("TrendingWords");

const ForwardedHeaders = z.object({
  [FORWARDED_HEADER]: z.string().optional().openapi({
    description: "Set by an instance asking another: answer from this instance's own " +
      "partitions only, never forward again",
  }),
});

const UNAVAILABLE = "A partition has no restored owner right now (a problem with Retry-After)";
const json = <T>(schema: T) => ({ "application/json": { schema } });

function trendingRoute(windows: readonly string[]) {
  const windowDetail = (issue: { input?: unknown }) =>
    `must be one of ${windows.join(", ")}, got '${String(issue.input)}'`;
  return createRoute({
    method: "get",
    path: "/api/v1/words/trending",
    operationId: "getTrendingWords",
    summary: "The words with the highest counts in the current window",
    description: "Merges every instance's partitions; 503 while a partition has no owner.",
    tags: ["words"],
    security: bearerSecurity,
    request: {
      headers: ForwardedHeaders,
      query: z.object({
        window: z.enum(windows as [string, ...string[]], { error: windowDetail })
          .default(windows[0]!).openapi({ description: "The window size (WORDCOUNT_WINDOWS)" }),
        limit: z.coerce.number({ error: LIMIT_DETAIL }).int({ error: LIMIT_DETAIL })
          .min(1, { error: LIMIT_DETAIL }).max(TRENDING_LIMIT.max, { error: LIMIT_DETAIL })
          .default(TRENDING_LIMIT.default).openapi({ description: "How many words", example: 10 }),
      }),
    },
    responses: {
      200: { description: "The trending words", content: json(TrendingSchema) },
      ...problemResponses(400, 401),
      503: { ...problemResponses(503)[503], description: UNAVAILABLE },
    },
  });
}

const wordRoute = createRoute({
  method: "get",
  path: "/api/v1/words/{word}",
  operationId: "getWordCounts",
  summary: "A word's all-time count and its count in each current window",
  description: "Answered by the instance owning the word's partition (forwarded there). " +
    "The word `trending` cannot be looked up: its path is the trending words.",
  tags: ["words"],
  security: bearerSecurity,
  request: {
    headers: ForwardedHeaders,
    params: z.object({
      word: z.string().transform((raw, context) => {
        const terms = tokenize(raw);
        if (terms.length === 1) return terms[0]!;
        context.addIssue({
          code: "custom",
          message: `must be exactly one word (letters, digits, marks, '_'), got '${raw}'`,
          input: raw,
        });
        return z.NEVER;
      }).openapi({
        param: { description: "One word, normalised as it is counted", example: "kafka" },
      }),
    }),
  },
  responses: {
    200: { description: "The word's counts", content: json(WordCountsSchema) },
    ...problemResponses(400, 401),
    503: { ...problemResponses(503)[503], description: UNAVAILABLE },
  },
});

export function addWordCountRoutes(app: OpenAPIHono, options: WordCountRoutesOptions): void {
  const { processor, windows, discovery } = options;
  const byName = new Map(windows.map((size) => [size.name, size]));

  const others = async (): Promise<ServiceInstance[]> =>
    (await discovery.instances(options.service)).filter((instance) =>
      instance.instanceId !== options.instanceId
    );

  app.openapi(trendingRoute(windows.map((size) => size.name)), async (c) => {
    const query = c.req.valid("query");
    const size = byName.get(query.window)!;
    const limit = query.limit;
    const local = {
      partitions: processor.ownedPartitions(),
      words: processor.trending(size, limit),
    };
    const start = new Date(processor.currentWindowStart(size)).toISOString();
    if (c.req.header(FORWARDED_HEADER) !== undefined) {
      return c.json({ window: size.name, start, ...local }, 200);
    }
    const covered = new Set(local.partitions);
    const words: TrendingWord[] = [...local.words];
    const peers = (await others()).filter((instance) => partitionsOf(instance).length > 0);
    const answers = await Promise.all(peers.map(async (instance) => {
      const url = `${instance.baseUrl}/api/v1/words/trending?window=${
        encodeURIComponent(size.name)
      }&limit=${limit}`;
      try {
        const response = await tracedFetch(options.tracer, url, {
          peerService: options.service,
          headers: forwardHeaders(c),
          signal: AbortSignal.timeout(FORWARD_TIMEOUT_MS),
        });
        if (!response.ok) {
          await response.body?.cancel();
          return undefined;
        }
        return await response.json() as { partitions: number[]; words: TrendingWord[] };
      } catch {
        return undefined;
      }
    }));
    for (const answer of answers) {
      if (answer === undefined) continue;
      for (const partition of answer.partitions) covered.add(partition);
      words.push(...answer.words);
    }
    if (covered.size < options.partitions) {
      throw unavailable(
        `${options.partitions - covered.size} of ${options.partitions} partitions have no ` +
          "restored owner right now",
      );
    }
    return c.json({ window: size.name, start, words: topWords(words, limit) }, 200);
  });

  // Passes another instance's answer through as it is: any of the described ones.
  mountRoute(app, wordRoute, async (c) => {
    const { word } = c.req.valid("param");
    const counts = processor.counts(word);
    if (counts !== undefined) {
      const windowsJson: Record<string, { start: string; count: number }> = {};
      for (const [name, window] of Object.entries(counts.windows)) {
        windowsJson[name] = { start: new Date(window.start).toISOString(), count: window.count };
      }
      return c.json({ word, count: counts.count, windows: windowsJson }, 200);
    }
    const partition = processor.partitionOf(word);
    if (c.req.header(FORWARDED_HEADER) !== undefined) {
      throw unavailable(`Partition ${partition} is not restored on this instance any more`);
    }
    const owner = (await others()).find((instance) => partitionsOf(instance).includes(partition));
    if (owner === undefined) {
      throw unavailable(`Partition ${partition} has no restored owner right now`);
    }
    return await forward(
      c,
      options.tracer,
      options.service,
      `${owner.baseUrl}/api/v1/words/${encodeURIComponent(word)}`,
    );
  });
}
