/**
 * The tweet read API (CQRS query side). The version is chosen by path
 * (`/api/v1/...`, `/api/v2/...`) or, on `/api/tweets...`, by media type.
 */
import type { Context } from "hono";
import type { AccessToken } from "../../shared/auth/jwt_verifier.ts";
import {
  bearerSecurity,
  createRoute,
  mountRoute,
  type OpenAPIHono,
  problemResponses,
  serverSentEventSchema,
  z,
} from "../../shared/http/openapi.ts";
import { notAcceptable, notFound } from "../../shared/http/problem.ts";
import {
  isVisible,
  type SearchIndex,
  type Visibility,
} from "../../shared/search_index/search_index.ts";
import { requestUrl } from "../../shared/http/service_app.ts";
import { negotiate } from "./negotiation.ts";
import {
  type ApiVersion,
  MEDIA_TYPES,
  nextPageLink,
  searchResultV2,
  SearchResultV2Schema,
  tweetV1,
  TweetV1Schema,
  tweetV2,
  TweetV2Schema,
} from "./representation.ts";
import {
  entityId,
  type PagingLimits,
  searchQuerySchema,
  streamQuerySchema,
} from "./search_params.ts";
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

const TweetIdParams = z.object({
  id: entityId("a tweet id").openapi({
    param: { description: "The tweet's id", example: "1000000000000000020" },
  }),
});

const text = { schema: { type: "string" } } as const;

/** Headers of v1 responses, and of every response `Accept` chose. */
const V1_HEADERS = {
  Deprecation: {
    description: "When v1 was deprecated (RFC 9745): `@` and epoch seconds",
    ...text,
  },
  Link: {
    description: 'The v2 successor (`rel="successor-version"`) and, on a search, ' +
      'the next page (`rel="next"`)',
    ...text,
  },
};
const VARY = { Vary: { description: "`Accept` on the negotiated paths", ...text } };
const V1_SEARCH_HEADERS = {
  ...V1_HEADERS,
  "X-Total-Count": {
    description: "Matching tweets over all pages",
    schema: { type: "integer", minimum: 0 },
  },
  "Word-Counts": {
    description: "With `text`: each counted word (URI-encoded) and its count, `none` when " +
      "never counted (`kafka=1234, unicorn=none`), or `unavailable`",
    ...text,
  },
};

const v1Search = { schema: z.array(TweetV1Schema).openapi({ description: "Newest first" }) };

interface Variant {
  readonly path: string;
  readonly version: "v1" | "v2" | "negotiated";
}

const VARIANTS: readonly Variant[] = [
  { path: "/api/v1/tweets", version: "v1" },
  { path: "/api/v2/tweets", version: "v2" },
  { path: "/api/tweets", version: "negotiated" },
];

function variantWords(variant: Variant) {
  return variant.version === "negotiated"
    ? {
      suffix: "",
      tag: "tweets",
      how: `The representation is chosen by \`Accept\`: ${MEDIA_TYPES.v2} (also for ` +
        `${JSON_TYPE} and wildcards) or ${MEDIA_TYPES.v1}.`,
    }
    : {
      suffix: variant.version.toUpperCase(),
      tag: `tweets ${variant.version}`,
      how: variant.version === "v1"
        ? `Deprecated: use /api/v2. Answered as ${MEDIA_TYPES.v1}, with \`Deprecation\` and \`Link\` headers.`
        : `Answered as ${MEDIA_TYPES.v2}.`,
    };
}

function searchRoute(variant: Variant, limits: PagingLimits) {
  const { suffix, tag, how } = variantWords(variant);
  const content = variant.version === "v1"
    ? { [MEDIA_TYPES.v1]: v1Search }
    : variant.version === "v2"
    ? { [MEDIA_TYPES.v2]: { schema: SearchResultV2Schema } }
    : { [MEDIA_TYPES.v2]: { schema: SearchResultV2Schema }, [MEDIA_TYPES.v1]: v1Search };
  return createRoute({
    method: "get",
    path: variant.path,
    operationId: `searchTweets${suffix}`,
    summary: "Search tweets",
    description: "The tweets the token's holder may see that match every given parameter, " +
      `newest first, one page at a time. ${how}`,
    tags: [tag],
    deprecated: variant.version === "v1",
    security: bearerSecurity,
    request: { query: searchQuerySchema(limits) },
    responses: {
      200: {
        description: "One page of matching tweets",
        headers: variant.version === "v1"
          ? V1_SEARCH_HEADERS
          : variant.version === "v2"
          ? {}
          : { ...VARY, ...V1_SEARCH_HEADERS },
        content,
      },
      ...problemResponses(400, 401, 406, 503),
    },
  });
}

function byIdRoute(variant: Variant) {
  const { suffix, tag, how } = variantWords(variant);
  const content = variant.version === "v1"
    ? { [MEDIA_TYPES.v1]: { schema: TweetV1Schema } }
    : variant.version === "v2"
    ? { [MEDIA_TYPES.v2]: { schema: TweetV2Schema } }
    : {
      [MEDIA_TYPES.v2]: { schema: TweetV2Schema },
      [MEDIA_TYPES.v1]: { schema: TweetV1Schema },
    };
  return createRoute({
    method: "get",
    path: `${variant.path}/{id}`,
    operationId: `getTweet${suffix}`,
    summary: "A tweet by id",
    description: `A hidden tweet is answered like a missing one (404). ${how}`,
    tags: [tag],
    deprecated: variant.version === "v1",
    security: bearerSecurity,
    request: { params: TweetIdParams },
    responses: {
      200: {
        description: "The tweet",
        headers: variant.version === "v1"
          ? V1_HEADERS
          : variant.version === "v2"
          ? {}
          : { ...VARY, ...V1_HEADERS },
        content,
      },
      ...problemResponses(400, 401, 404, 406, 503),
    },
  });
}

function streamRoute(limits: PagingLimits) {
  return createRoute({
    method: "get",
    path: "/api/v2/tweets/stream",
    operationId: "streamTweets",
    summary: "Follow a search as server-sent events",
    description: "The search's newest page, oldest first, then every newer matching tweet as " +
      "it is indexed, each as an `event: tweet` whose `id` is the tweet's id and whose " +
      "`data` is the tweet in the v2 representation (TweetV2). A comment line " +
      "(`: nothing new`) is sent when a read of the index finds nothing new. The stream " +
      "does not end on its own.",
    tags: ["tweets v2"],
    security: bearerSecurity,
    request: { query: streamQuerySchema(limits) },
    responses: {
      200: {
        description: "The event stream",
        headers: { "Cache-Control": { description: "`no-store`", ...text } },
        content: {
          "text/event-stream": {
            schema: serverSentEventSchema({
              events: ["tweet"],
              data: TweetV2Schema,
              id: "The tweet's id",
            }),
          },
        },
      },
      ...problemResponses(400, 401, 503),
    },
  });
}

export function addQueryRoutes(app: OpenAPIHono, options: QueryRoutesOptions): OpenAPIHono {
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

  function search(variant: Variant, select: VersionSelector) {
    mountRoute(app, searchRoute(variant, options), async (c) => {
      const choice = select(c.req.header("accept"));
      const url = requestUrl(c);
      const query = c.req.valid("query");
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
    });
  }

  function byId(variant: Variant, select: VersionSelector) {
    mountRoute(app, byIdRoute(variant), async (c) => {
      const choice = select(c.req.header("accept"));
      const { id } = c.req.valid("param");
      const [document, visibility] = await Promise.all([
        index.get(id),
        options.visibility(accessTokenOf(c)),
      ]);
      // A hidden tweet is answered exactly like a missing one.
      if (document === undefined || !isVisible(document, visibility)) {
        throw notFound(`No tweet has the id ${id}`);
      }
      const path = requestUrl(c).pathname;
      const links = versionHeaders(c, choice, path);
      if (choice.version === "v2") {
        return c.body(JSON.stringify(tweetV2(document, path.slice(0, path.lastIndexOf("/")))));
      }
      c.header("link", links.join(", "));
      return c.body(JSON.stringify(tweetV1(document)));
    });
  }

  /**
   * `GET /api/v2/tweets/stream`: the search's matching tweets as server-sent
   * events (`event: tweet`, the v2 representation), the newest page first and
   * every newer tweet as it is indexed. The index is read only when the
   * client has taken the previous events (a pull stream without a buffer),
   * so a slow client slows its own reading and nothing piles up here.
   */
  mountRoute(app, streamRoute(options), async (c) => {
    const query = c.req.valid("query");
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

  for (const variant of VARIANTS) {
    const select = variant.version === "negotiated" ? negotiated : pinned(variant.version);
    search(variant, select);
    byId(variant, select);
  }
  return app;
}
