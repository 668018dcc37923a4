/**
 * The tweet read API (CQRS query side). The version is chosen by path
 * (`/api/v1/...`, `/api/v2/...`) or, on `/api/tweets...`, by media type.
 */
import type { Context, Hono } from "hono";
import type { AccessToken } from "../../shared/auth/jwt_verifier.ts";
import { invalidParameters, notAcceptable, notFound } from "../../shared/http/problem.ts";
import {
  isVisible,
  type SearchIndex,
  type Visibility,
} from "../../shared/search_index/search_index.ts";
import { negotiate } from "./negotiation.ts";
import {
  type ApiVersion,
  MEDIA_TYPES,
  nextPageLink,
  searchResultV2,
  tweetV1,
  tweetV2,
} from "./representation.ts";
import { isEntityId, type PagingLimits, parseSearchParams } from "./search_params.ts";
import { countedWords, type WordCountLookup, wordCountsHeader } from "./word_counts.ts";

export interface QueryRoutesOptions extends PagingLimits {
  readonly index: SearchIndex;
  /**
   * What the token's holder may see; undefined for everything (super users).
   * Applied inside every search and to every read by id.
   */
  readonly visibility: (token: AccessToken) => Promise<Visibility | undefined>;
  /** Counts of the searched words. */
  readonly wordCounts: WordCountLookup;
  /** Announced in the v1 `Deprecation` header (epoch milliseconds). */
  readonly v1DeprecatedAt: number;
  /** How often a streaming search reads the index for newer tweets. @default 500 */
  readonly streamPollMs?: number;
}

const JSON_TYPE = "application/json";

interface VersionChoice {
  readonly version: ApiVersion;
  /** Whether the version came from `Accept` rather than from the path. */
  readonly negotiated: boolean;
}

/** Chooses the representation for a route, or fails with 406. */
type VersionSelector = (accept: string | undefined) => VersionChoice;

function pinned(version: ApiVersion): VersionSelector {
  const offers = [MEDIA_TYPES[version], JSON_TYPE];
  return (accept) => {
    if (negotiate(accept, offers) === undefined) {
      throw notAcceptable(
        `The /api/${version} resources are only available as ${
          MEDIA_TYPES[version]
        } or ${JSON_TYPE}`,
        offers,
      );
    }
    return { version, negotiated: false };
  };
}

const NEGOTIATED_OFFERS = [MEDIA_TYPES.v2, MEDIA_TYPES.v1, JSON_TYPE];

function negotiated(accept: string | undefined): VersionChoice {
  const chosen = negotiate(accept, NEGOTIATED_OFFERS);
  if (chosen === undefined) {
    throw notAcceptable(
      `No representation matches Accept '${accept}'; ask for ${MEDIA_TYPES.v2} or ${MEDIA_TYPES.v1}`,
      NEGOTIATED_OFFERS,
    );
  }
  return { version: chosen === MEDIA_TYPES.v1 ? "v1" : "v2", negotiated: true };
}

/** The token `bearerAuth` verified; the routes are only mounted behind it. */
function accessTokenOf(c: Context): AccessToken {
  const token: AccessToken | undefined = c.get("accessToken");
  if (token === undefined) throw new Error("The query routes need bearerAuth in front of them");
  return token;
}

export function addQueryRoutes(app: Hono, options: QueryRoutesOptions): Hono {
  const { index } = options;
  const deprecation = `@${Math.floor(options.v1DeprecatedAt / 1000)}`;

  /** Headers every response of the chosen version carries. */
  function versionHeaders(c: Context, choice: VersionChoice, successor: string): string[] {
    c.header("content-type", MEDIA_TYPES[choice.version]);
    if (choice.negotiated) c.header("vary", "Accept");
    if (choice.version === "v2") return [];
    c.header("deprecation", deprecation);
    return [
      choice.negotiated
        ? `<${successor}>; rel="successor-version"; type="${MEDIA_TYPES.v2}"`
        : `<${successor.replace("/api/v1/", "/api/v2/")}>; rel="successor-version"`,
    ];
  }

  function search(select: VersionSelector) {
    return async (c: Context) => {
      const choice = select(c.req.header("accept"));
      const url = new URL(c.req.url);
      const query = parseSearchParams(url.searchParams, options);
      const visibleTo = await options.visibility(accessTokenOf(c));
      const words = query.text === undefined ? [] : countedWords(query.text);
      const [page, wordCounts] = await Promise.all([
        index.search(visibleTo === undefined ? query : { ...query, visibleTo }),
        words.length === 0 ? undefined : options.wordCounts.countsOf(words),
      ]);
      const links = versionHeaders(c, choice, `${url.pathname}${url.search}`);
      if (choice.version === "v2") {
        const result = searchResultV2(page, url, query.size);
        return c.body(
          JSON.stringify(wordCounts === undefined ? result : { ...result, wordCounts }),
        );
      }
      if (wordCounts !== undefined) c.header("word-counts", wordCountsHeader(wordCounts));
      const next = nextPageLink(url, page);
      if (next !== null) links.push(`<${next}>; rel="next"`);
      c.header("link", links.join(", "));
      c.header("x-total-count", String(page.total));
      return c.body(JSON.stringify(page.documents.map(tweetV1)));
    };
  }

  function byId(select: VersionSelector) {
    return async (c: Context) => {
      const choice = select(c.req.header("accept"));
      const id = c.req.param("id") ?? "";
      if (!isEntityId(id)) {
        throw invalidParameters([{
          parameter: "id",
          detail: "must be a tweet id: a decimal integer from 0 to 9223372036854775807",
        }]);
      }
      const [document, visibility] = await Promise.all([
        index.get(id),
        options.visibility(accessTokenOf(c)),
      ]);
      // A hidden tweet is answered exactly like a missing one.
      if (document === undefined || !isVisible(document, visibility)) {
        throw notFound(`No tweet has the id ${id}`);
      }
      const path = new URL(c.req.url).pathname;
      const links = versionHeaders(c, choice, path);
      if (choice.version === "v2") {
        return c.body(JSON.stringify(tweetV2(document, path.slice(0, path.lastIndexOf("/")))));
      }
      c.header("link", links.join(", "));
      return c.body(JSON.stringify(tweetV1(document)));
    };
  }

  /**
   * `GET /api/v2/tweets/stream`: the search's matching tweets as server-sent
   * events (`event: tweet`, the v2 representation), the newest page first and
   * every newer tweet as it is indexed. The index is read only when the
   * client has taken the previous events (a pull stream without a buffer),
   * so a slow client slows its own reading and nothing piles up here.
   */
  app.get("/api/v2/tweets/stream", async (c) => {
    const url = new URL(c.req.url);
    const params = new URLSearchParams(url.searchParams);
    params.delete("cursor");
    const query = parseSearchParams(params, options);
    const visibleTo = await options.visibility(accessTokenOf(c));
    const filter = visibleTo === undefined ? query : { ...query, visibleTo };
    const collection = "/api/v2/tweets";
    const encoder = new TextEncoder();
    // Tweets at the newest time seen so far: a later read starts at that time again.
    let newest = -Infinity;
    let atNewest = new Set<string>();
    let first = true;
    const aborted = c.req.raw.signal;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (!first) {
          await new Promise((resolve) => setTimeout(resolve, options.streamPollMs ?? 500));
          if (aborted.aborted) return controller.close();
        }
        first = false;
        const page = await index.search(
          Number.isFinite(newest) ? { ...filter, from: newest } : filter,
        );
        const fresh = page.documents.filter((document) =>
          document.createdAt > newest || !atNewest.has(document.id)
        ).reverse();
        for (const document of fresh) {
          if (document.createdAt > newest) {
            newest = document.createdAt;
            atNewest = new Set();
          }
          atNewest.add(document.id);
        }
        controller.enqueue(encoder.encode(
          fresh.length === 0
            ? ": nothing new\n\n"
            : fresh.map((document) =>
              `event: tweet\nid: ${document.id}\ndata: ${
                JSON.stringify(tweetV2(document, collection))
              }\n\n`
            ).join(""),
        ));
      },
    }, { highWaterMark: 0 });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream",
        "cache-control": "no-store",
        "x-accel-buffering": "no",
      },
    });
  });

  for (const version of ["v1", "v2"] as const) {
    app.get(`/api/${version}/tweets`, search(pinned(version)));
    app.get(`/api/${version}/tweets/:id`, byId(pinned(version)));
  }
  app.get("/api/tweets", search(negotiated));
  app.get("/api/tweets/:id", byId(negotiated));
  return app;
}
