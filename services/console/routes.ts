/**
 * What the console's routes are, as `/openapi.json` describes them: HTML
 * pages and fragments, redirects to sign in and after a form, form bodies,
 * the static assets and the live event stream. Its parameters are forgiving
 * on purpose (a page shows what is wrong, to a person): the schemas take any
 * text, and the pages say what they make of it.
 */
import {
  createRoute,
  problemResponses,
  ProblemSchema,
  type RouteConfig,
  serverSentEventSchema,
  z,
} from "../../shared/http/openapi.ts";
import { PROBLEM_CONTENT_TYPE } from "../../shared/http/problem.ts";

const HTML = "text/html; charset=UTF-8";
const text = { schema: { type: "string" } } as const;
const Page = z.string().openapi("Page", { description: "An HTML page" });
const Fragment = z.string().openapi("Fragment", {
  description: "An HTML fragment the page's script puts in place",
});

const page = (description: string) => ({ description, content: { [HTML]: { schema: Page } } });
const fragment = (description: string) => ({
  description,
  content: { [HTML]: { schema: Fragment } },
});
const redirect = (description: string, cookie = false) => ({
  description,
  headers: {
    Location: { description: "Where the browser goes next", ...text },
    ...(cookie ? { "Set-Cookie": { description: "The console's session cookie", ...text } } : {}),
  },
});

/**
 * A page, or the problem of Hono's validators when they refuse the request
 * before the page (a repeated parameter, a body of another type).
 */
const pageOrProblem = (description: string) => ({
  description,
  content: { [HTML]: { schema: Page }, [PROBLEM_CONTENT_TYPE]: { schema: ProblemSchema } },
});

const TO_SIGN_IN = redirect("Not signed in: to `/login`, coming back here afterwards");
const REFUSED = page("Not signed in, or the form carried no valid CSRF token");
const SHOWN = "The system refused or failed: its problem, shown as a page";
/** The system's problems a page shows, with the status the gateway answered. */
const UPSTREAM = {
  ...Object.fromEntries(
    [401, 403, 404, 429, 500, 502, 503, 504].map((status) => [status, page(SHOWN)]),
  ),
  ...Object.fromEntries([400, 413, 415].map((status) => [status, pageOrProblem(SHOWN)])),
};
/** Hono's validators refuse a repeated parameter or a body of another type before the page. */
const MALFORMED = problemResponses(400);
const FORM_MALFORMED = problemResponses(400, 413, 415);

const optional = (description: string, example?: string) =>
  z.string().optional().openapi(example === undefined ? { description } : { description, example });

function form<T extends z.ZodRawShape>(shape: T) {
  return {
    required: false,
    content: {
      "application/x-www-form-urlencoded": {
        schema: z.object({ csrf: optional("The session's CSRF token, from the page"), ...shape }),
      },
    },
  } as const;
}

const PAGES = ["console pages"];
const ASSETS = ["console assets"];
const SIGN_IN = ["console sign-in"];

function get<const R extends Omit<RouteConfig, "method">>(route: R) {
  return createRoute({ method: "get", ...route });
}

function asset(path: string, type: string, summary: string) {
  return get({
    path,
    operationId: path === "/static/console.js" ? "consoleScript" : "consoleStyle",
    summary,
    tags: ASSETS,
    responses: {
      200: {
        description: summary,
        headers: { "Cache-Control": { description: "`no-cache`", ...text } },
        content: { [type]: { schema: z.string() } },
      },
    },
  });
}

export const CONSOLE_ROUTES = {
  script: asset("/static/console.js", "text/javascript; charset=utf-8", "The pages' script"),
  style: asset("/static/console.css", "text/css; charset=utf-8", "The pages' style sheet"),
  home: get({
    path: "/",
    operationId: "home",
    summary: "The landing page, or the home page once signed in",
    tags: PAGES,
    responses: { 200: page("The page") },
  }),
  login: get({
    path: "/login",
    operationId: "login",
    summary: "Starts a sign-in at the issuer (code flow with PKCE)",
    tags: SIGN_IN,
    request: {
      query: z.object({
        returnTo: optional(
          "The console path to come back to; anything else comes back to /search",
          "/words",
        ),
      }),
    },
    responses: {
      302: redirect("To the issuer's sign-in page", true),
      ...MALFORMED,
      503: page("The issuer cannot be reached"),
    },
  }),
  callback: get({
    path: "/callback",
    operationId: "signInCallback",
    summary: "Where the issuer sends the browser back (OIDC redirect URI)",
    tags: SIGN_IN,
    request: {
      query: z.object({
        state: optional("The sign-in's state"),
        code: optional("The authorization code"),
        error: optional("The issuer's error code"),
        error_description: optional("The issuer's description of the error"),
      }),
    },
    responses: {
      302: redirect("Signed in: to the page the sign-in started from", true),
      400: pageOrProblem("The sign-in expired, does not match, or was refused"),
      502: page("The issuer refused the code or answered wrong"),
    },
  }),
  logout: createRoute({
    method: "post",
    path: "/logout",
    operationId: "logout",
    summary: "Signs out here and at the issuer",
    tags: SIGN_IN,
    request: { body: form({}) },
    responses: {
      303: redirect("To the issuer's sign-out, then back to the landing page", true),
      ...FORM_MALFORMED,
      403: REFUSED,
    },
  }),
  search: get({
    path: "/search",
    operationId: "searchPage",
    summary: "The tweet search page and its results",
    description: "Searches through the gateway (query v1 or v2) once any of text, userId, " +
      "from or to is given.",
    tags: PAGES,
    request: {
      query: z.object({
        text: optional("Words the tweets contain", "kafka"),
        userId: optional("The author's user id"),
        from: optional("Earliest creation time (ISO-8601 date or date-time)"),
        to: optional("Latest creation time (ISO-8601 date or date-time)"),
        version: optional("`v1` for the v1 API; anything else is v2", "v2"),
        cursor: optional("The next page's cursor"),
      }),
    },
    responses: { 200: page("The search page"), 302: TO_SIGN_IN, ...UPSTREAM },
  }),
  system: get({
    path: "/system",
    operationId: "systemPage",
    summary: "Every registered instance with its health and metrics",
    tags: PAGES,
    responses: {
      200: page("The system page"),
      302: TO_SIGN_IN,
      503: page("The registry cannot be read"),
    },
  }),
  systemTable: get({
    path: "/system/table",
    operationId: "systemTable",
    summary: "The system page's table, reloaded by its script",
    tags: PAGES,
    responses: {
      200: fragment("The table"),
      302: TO_SIGN_IN,
      503: fragment("The registry cannot be read"),
    },
  }),
  traces: get({
    path: "/traces",
    operationId: "tracesPage",
    summary: "The gateway's recent traces",
    tags: PAGES,
    responses: { 200: page("The traces page"), 302: TO_SIGN_IN },
  }),
  traceLookup: get({
    path: "/traces/lookup",
    operationId: "traceLookup",
    summary: "Goes to the trace of a trace id",
    tags: PAGES,
    request: { query: z.object({ traceId: optional("The trace id, any case") }) },
    responses: { 302: redirect("To the trace's page, or to sign in"), ...MALFORMED },
  }),
  trace: get({
    path: "/traces/{traceId}",
    operationId: "tracePage",
    summary: "One trace's spans and log lines",
    tags: PAGES,
    request: {
      params: z.object({
        traceId: z.string().openapi({
          param: {
            description: "32 lower-case hexadecimal digits; anything else is a 400 page",
            example: "4bf92f3577b34da6a3ce929d0e0e4736",
          },
        }),
      }),
    },
    responses: {
      200: page("The trace page"),
      302: TO_SIGN_IN,
      400: page("Not a trace id"),
    },
  }),
  words: get({
    path: "/words",
    operationId: "wordsPage",
    summary: "Trending words (wordcount) and top words (analytics)",
    tags: PAGES,
    request: {
      query: z.object({
        window: optional("A configured window size; anything else is the first one", "1m"),
      }),
    },
    responses: { 200: page("The words page"), 302: TO_SIGN_IN, ...MALFORMED },
  }),
  wordsFragment: get({
    path: "/words/fragment",
    operationId: "wordsFragment",
    summary: "The words page's lists, reloaded by its script",
    tags: PAGES,
    request: {
      query: z.object({ window: optional("A configured window size", "1m") }),
    },
    responses: {
      200: fragment("The lists"),
      302: TO_SIGN_IN,
      ...MALFORMED,
      401: { description: "The session has no valid token any more (no body)" },
    },
  }),
  wordHistory: get({
    path: "/words/{word}",
    operationId: "wordHistoryPage",
    summary: "A word's history of counts, as a chart",
    tags: PAGES,
    request: {
      params: z.object({
        word: z.string().openapi({ param: { description: "The word", example: "kafka" } }),
      }),
    },
    responses: { 200: page("The history page"), 302: TO_SIGN_IN, ...UPSTREAM },
  }),
  permissions: get({
    path: "/permissions",
    operationId: "permissionsPage",
    summary: "A user's grants, and the form to grant or revoke (admins)",
    tags: PAGES,
    request: { query: z.object({ userId: optional("The user whose grants are listed", "erin") }) },
    responses: {
      200: page("The permissions page"),
      302: TO_SIGN_IN,
      ...UPSTREAM,
      403: page("Admins only, or the permission API refused"),
    },
  }),
  changePermission: createRoute({
    method: "post",
    path: "/permissions",
    operationId: "changePermission",
    summary: "Grants or revokes, then shows the user's grants (admins)",
    tags: PAGES,
    request: {
      body: form({
        userId: optional("The user (token subject)"),
        scope: optional("tweet, author or all"),
        target: optional("The tweet id or author id; empty for all"),
        level: optional("READ, WRITE or ADMIN"),
        action: optional("`revoke` to revoke; anything else grants"),
      }),
    },
    responses: {
      200: page("Done: the user's grants"),
      ...UPSTREAM,
      403: page("Not signed in, no valid CSRF token, admins only, or the API refused"),
    },
  }),
  live: get({
    path: "/live",
    operationId: "livePage",
    summary: "New tweets as they are indexed; the stream's controls for admins",
    tags: PAGES,
    responses: { 200: page("The live page"), 302: TO_SIGN_IN },
  }),
  controlStream: createRoute({
    method: "post",
    path: "/live/stream",
    operationId: "controlStream",
    summary: "Pauses or resumes the stream, or sets its rate (admins)",
    tags: PAGES,
    request: {
      body: form({
        action: optional("`pause`, `resume` or `rate`"),
        perSecond: optional("Tweets per second, for `rate`"),
      }),
    },
    responses: {
      303: redirect("Done: back to the live page"),
      ...UPSTREAM,
      403: page("Not signed in, no valid CSRF token, admins only, or the API refused"),
    },
  }),
  liveEvents: get({
    path: "/live/events",
    operationId: "liveEvents",
    summary: "New tweets as server-sent events (query's streaming search, passed on)",
    description: "`event: tweet` blocks as query's stream sends them; `event: signed-out` " +
      "when the session has no valid token; `event: problem` with the problem when the " +
      "system refuses.",
    tags: PAGES,
    responses: {
      200: {
        description: "The event stream",
        content: {
          "text/event-stream": {
            schema: serverSentEventSchema({ events: ["tweet", "signed-out", "problem"] }),
          },
        },
      },
      302: TO_SIGN_IN,
    },
  }),
};
