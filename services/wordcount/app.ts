/**
 * The interactive queries of the word counts. Each instance answers for the
 * repartition partitions it has restored; a word of another instance's
 * partition is forwarded to that instance (found by its registry metadata),
 * and trending merges every instance's top words. A partition nobody has
 * restored right now is a 503 with Retry-After, never a wrong zero.
 */
import type { Context, Hono } from "hono";
import type {
  ServiceDiscovery,
  ServiceInstance,
} from "../../shared/discovery/service_discovery.ts";
import { invalidParameters, ProblemError } from "../../shared/http/problem.ts";
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

export function addWordCountRoutes(app: Hono, options: WordCountRoutesOptions): void {
  const { processor, windows, discovery } = options;
  const byName = new Map(windows.map((size) => [size.name, size]));

  const others = async (): Promise<ServiceInstance[]> =>
    (await discovery.instances(options.service)).filter((instance) =>
      instance.instanceId !== options.instanceId
    );

  app.get("/api/v1/words/trending", async (c) => {
    const windowName = c.req.query("window") ?? windows[0]!.name;
    const size = byName.get(windowName);
    const limitText = c.req.query("limit") ?? "10";
    const limit = /^[0-9]{1,3}$/.test(limitText) ? Number(limitText) : NaN;
    const errors = [];
    if (size === undefined) {
      errors.push({
        parameter: "window",
        detail: `must be one of ${[...byName.keys()].join(", ")}, got '${windowName}'`,
      });
    }
    if (!(limit >= 1 && limit <= 100)) {
      errors.push({ parameter: "limit", detail: `must be an integer from 1 to 100` });
    }
    if (size === undefined || errors.length > 0) throw invalidParameters(errors);
    const local = {
      partitions: processor.ownedPartitions(),
      words: processor.trending(size, limit),
    };
    const start = new Date(processor.currentWindowStart(size)).toISOString();
    if (c.req.header(FORWARDED_HEADER) !== undefined) {
      return c.json({ window: size.name, start, ...local });
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
    return c.json({ window: size.name, start, words: topWords(words, limit) });
  });

  app.get("/api/v1/words/:word", async (c) => {
    const raw = c.req.param("word");
    const terms = tokenize(raw);
    if (terms.length !== 1) {
      throw invalidParameters([{
        parameter: "word",
        detail: `must be exactly one word (letters, digits, marks, '_'), got '${raw}'`,
      }]);
    }
    const word = terms[0]!;
    const counts = processor.counts(word);
    if (counts !== undefined) {
      const windowsJson: Record<string, { start: string; count: number }> = {};
      for (const [name, window] of Object.entries(counts.windows)) {
        windowsJson[name] = { start: new Date(window.start).toISOString(), count: window.count };
      }
      return c.json({ word, count: counts.count, windows: windowsJson });
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
