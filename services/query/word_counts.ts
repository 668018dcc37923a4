/**
 * How often each searched word was seen, for search responses (seed:
 * elastic-query-service's `getWordCount`, SPEC section 3.5 and section 8 item 14, which
 * counted the whole search text as one word). Each word of the `text`
 * parameter is looked up, from the analytics service (the latest count it
 * stored) or from the wordcount service (its live state), through the
 * load-balanced client with the query service's own token, behind a circuit
 * breaker. When the source cannot answer, the search still answers and says
 * the counts are unavailable; it never invents a zero.
 */
import type { TokenSource } from "../../shared/auth/client_credentials.ts";
import type { ServiceDiscovery } from "../../shared/discovery/service_discovery.ts";
import { type BalancedClient, UpstreamError } from "../../shared/http/balanced_client.ts";
import { Circuit, type CircuitOptions } from "../../shared/http/circuit_breaker.ts";
import { z } from "../../shared/http/openapi.ts";
import type { Logger } from "../../shared/log/log.ts";
import { tokenize } from "../../shared/text/tokenize.ts";

export const WORD_COUNT_SOURCES = ["analytics", "wordcount"] as const;
export type WordCountSourceName = typeof WORD_COUNT_SOURCES[number];

/** At most this many distinct words of a search are counted, the first ones. */
export const MAX_COUNTED_WORDS = 10;

/**
 * `counts` maps each counted word to its all-time count, or to null when the
 * source has not counted it yet (analytics has no row for it).
 */
export const WordCountsSchema = z.discriminatedUnion("status", [
  z.object({
    status: z.literal("ok"),
    counts: z.record(z.string(), z.int().min(0).nullable()).openapi({
      description:
        `Each counted word (normalised, at most the first ${MAX_COUNTED_WORDS}) and its count, ` +
        "null when it was never counted",
      example: { kafka: 1234, unicorn: null },
    }),
  }),
  z.object({ status: z.literal("unavailable") }),
]).openapi("WordCounts");

export type WordCounts = z.infer<typeof WordCountsSchema>;

export const UNAVAILABLE: WordCounts = { status: "unavailable" };

/** Looks up word counts; never rejects. */
export interface WordCountLookup {
  countsOf(words: readonly string[]): Promise<WordCounts>;
}

/** The distinct words of a search text that are counted, in order of appearance. */
export function countedWords(text: string): string[] {
  return [...new Set(tokenize(text))].slice(0, MAX_COUNTED_WORDS);
}

/** The `Word-Counts` header of v1 responses: `kafka=1234, unicorn=none` or `unavailable`. */
export function wordCountsHeader(wordCounts: WordCounts): string {
  if (wordCounts.status === "unavailable") return "unavailable";
  // Words may hold any letter; a header value must be ASCII.
  return Object.entries(wordCounts.counts)
    .map(([word, count]) => `${encodeURIComponent(word)}=${count ?? "none"}`)
    .join(", ");
}

export interface RemoteWordCountsOptions {
  readonly source: WordCountSourceName;
  /** Asked first, so that no token is fetched while no instance is known. */
  readonly discovery: ServiceDiscovery;
  readonly client: BalancedClient;
  readonly tokens: TokenSource;
  /** The whole lookup of one search's words fails after this long. */
  readonly timeoutMs: number;
  readonly breaker: Omit<CircuitOptions, "name" | "logger" | "timeoutMs" | "isNotFailure">;
  readonly logger: Logger;
  /**
   * Until the source first answers, and for at most this long after this
   * lookup was made, a failure is the source still starting (the services of
   * one process start together): logged at info. A failure after that, or
   * once the source has answered, is an outage: a warning.
   * @default 30_000
   */
  readonly startupGraceMs?: number;
}

class UnexpectedAnswer extends Error {
  constructor(source: string, path: string, readonly status: number) {
    super(`${source} answered ${status} to GET ${path}`);
    this.name = "UnexpectedAnswer";
  }
}

/** A 503 answer: the source is up but not ready (analytics before its schema is migrated). */
function isStartingAnswer(error: unknown): boolean {
  return (error instanceof UnexpectedAnswer || error instanceof UpstreamError) &&
    error.status === 503;
}

export class RemoteWordCounts implements WordCountLookup {
  readonly #options: RemoteWordCountsOptions;
  readonly #circuit: Circuit<Record<string, number | null>>;
  #lastFailure = "";
  #answered = false;
  readonly #startingUntil: number;

  constructor(options: RemoteWordCountsOptions) {
    this.#options = options;
    this.#startingUntil = Date.now() + (options.startupGraceMs ?? 30_000);
    this.#circuit = new Circuit({
      ...options.breaker,
      name: options.source,
      logger: options.logger,
      // A source that says it is still starting (503) is not failing: its
      // circuit opening would keep the counts away for a reset timeout after
      // it is up. Any other failure counts, starting or not.
      isNotFailure: (error) => this.#starting() && isStartingAnswer(error),
    });
  }

  /** Within the start-up grace, and the source has not answered yet. */
  #starting(): boolean {
    return !this.#answered && Date.now() < this.#startingUntil;
  }

  async countsOf(words: readonly string[]): Promise<WordCounts> {
    if (words.length === 0) return { status: "ok", counts: {} };
    // Open: the answer is known without building the breaker's rejection
    // (two errors with their stacks, a tenth of a search's CPU while the
    // source is down). The opening itself was logged by the circuit.
    if (this.#circuit.state === "open") return UNAVAILABLE;
    try {
      const counts = await this.#circuit.fire(() => this.#lookUp(words));
      this.#lastFailure = "";
      this.#answered = true;
      return { status: "ok", counts };
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      const source = this.#options.source;
      if (this.#starting()) {
        // Not remembered as the last failure: if it lasts past the grace, it warns.
        this.#options.logger.info(
          "Word counts not available yet from {source} (starting): {error}",
          { source, error: message },
        );
        return UNAVAILABLE;
      }
      // Logged once per kind of failure, not on every search while it lasts.
      if (message !== this.#lastFailure) {
        this.#lastFailure = message;
        this.#options.logger.warn("Word counts unavailable from {source}: {error}", {
          source,
          error: message,
        });
      }
      return UNAVAILABLE;
    }
  }

  shutdown(): void {
    this.#circuit.shutdown();
  }

  async #lookUp(words: readonly string[]): Promise<Record<string, number | null>> {
    const { source, discovery, client, tokens, timeoutMs } = this.#options;
    if ((await discovery.instances(source)).length === 0) {
      throw new Error(`no ${source} instance is known`);
    }
    // The query service's own token is not the source's answer: the timeout
    // starts once it is in hand (the first one is fetched from the issuer).
    const authorization = `Bearer ${await tokens.token()}`;
    const signal = AbortSignal.timeout(timeoutMs);
    const counts = await Promise.all(words.map(async (word) => {
      const path = source === "analytics"
        ? `/api/v1/analytics/words/${encodeURIComponent(word)}`
        : `/api/v1/words/${encodeURIComponent(word)}`;
      const response = await client.fetch(source, path, {
        headers: { authorization, accept: "application/json" },
        signal,
      });
      if (response.status === 404 && source === "analytics") {
        await response.body?.cancel();
        return null;
      }
      if (response.status !== 200) {
        await response.body?.cancel();
        // A refused token is renewed for the next search.
        if (response.status === 401) tokens.invalidate();
        throw new UnexpectedAnswer(source, path, response.status);
      }
      const body = await response.json() as { count?: unknown };
      if (typeof body.count !== "number" || !Number.isSafeInteger(body.count)) {
        throw new Error(`${source} answered GET ${path} without an integer count`);
      }
      return body.count;
    }));
    return Object.fromEntries(words.map((word, i) => [word, counts[i] ?? null]));
  }
}
