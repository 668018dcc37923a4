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

  for (const version of ["v1", "v2"] as const) {
    app.get(`/api/${version}/tweets`, search(pinned(version)));
    app.get(`/api/${version}/tweets/:id`, byId(pinned(version)));
  }
  app.get("/api/tweets", search(negotiated));
  app.get("/api/tweets/:id", byId(negotiated));
  return app;
}
