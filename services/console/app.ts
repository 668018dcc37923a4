/**
 * The console's routes: sign-in and sign-out, the pages, and the fragments
 * the pages' script reloads. Every call into the system goes through the
 * gateway with the signed-in user's own access token, so the console shows
 * exactly what that user may see; admin pages are refused here too (403),
 * not only hidden.
 */
import type { Context } from "hono";
import { getCookie, setCookie } from "hono/cookie";
import { html } from "hono/html";
import { mountRoute, type OpenAPIHono } from "../../shared/http/openapi.ts";
import type { LogReader } from "../../shared/log/log_reader.ts";
import type { Logger } from "../../shared/log/log.ts";
import { checkTraceId, type TraceReader } from "../../shared/trace/trace_reader.ts";
import { type OidcClient, SignInError } from "./oidc.ts";
import {
  historyChart,
  homePage,
  type Html,
  landingPage,
  layout,
  livePage,
  type PermissionGrant,
  permissionsPage,
  problemBox,
  problemPage,
  type ProblemView,
  type SearchForm,
  searchPage,
  type SearchResult,
  type StreamState,
  systemPage,
  systemTable,
  tracePage,
  tracesPage,
  trendingList,
  type Tweet,
  type Viewer,
  type WordCount,
  wordsPage,
} from "./pages.ts";
import { CONSOLE_ROUTES } from "./routes.ts";
import type { ConsoleSession, SessionStore } from "./sessions.ts";
import type { SystemView } from "./system.ts";

const COOKIE = "console_session";

/** A form's fields as the route's schema validated them (each form has a `csrf`). */
type Form = Readonly<Record<string, string | undefined>>;

/** The form of a POST route; its schema makes every field optional, so the page can say what is missing. */
const formOf = (c: Context): Form => c.req.valid("form" as never) as Form;
const ADMIN_ROLES = ["app_admin_role", "app_super_user_role"];
/** The access token is refreshed when it has less than this left. */
const REFRESH_MARGIN_MS = 30_000;

export interface ConsoleRoutesOptions {
  readonly sessions: SessionStore;
  readonly oidc: OidcClient;
  /** Calls the gateway (found through the registry) with a path and init. */
  readonly gateway: (path: string, init: RequestInit) => Promise<Response>;
  readonly system: SystemView;
  readonly traces: TraceReader;
  readonly logs: LogReader;
  readonly logger: Logger;
  /** The console's origin in the browser; undefined: the request's. */
  readonly publicUrl: string | undefined;
  readonly wordWindows: readonly string[];
  readonly script: string;
  readonly style: string;
  readonly now?: () => number;
}

const SECURITY_HEADERS = {
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self' " +
    "'unsafe-inline'; img-src 'self'; connect-src 'self'; form-action 'self' http: https:; " +
    "frame-ancestors 'none'; base-uri 'none'",
  "x-frame-options": "DENY",
  "referrer-policy": "same-origin",
  "x-content-type-options": "nosniff",
};

function traceIdOf(response: Response): string | undefined {
  return /^00-([0-9a-f]{32})-/.exec(response.headers.get("traceresponse") ?? "")?.[1];
}

/** A problem answer (problem+json or not) as something a person can read. */
async function problemOf(response: Response): Promise<ProblemView> {
  const traceId = traceIdOf(response);
  const text = await response.text();
  let body: {
    title?: unknown;
    detail?: unknown;
    errors?: { parameter?: string; detail?: string }[];
  } = {};
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON: the status says it.
  }
  const errors = Array.isArray(body.errors)
    ? body.errors.map((error) => `${error.parameter}: ${error.detail}`).join("; ")
    : undefined;
  return {
    status: response.status,
    title: typeof body.title === "string" ? body.title : `The system answered ${response.status}`,
    detail: errors || (typeof body.detail === "string" ? body.detail : undefined),
    traceId,
  };
}

export function addConsoleRoutes(app: OpenAPIHono, options: ConsoleRoutesOptions): OpenAPIHono {
  const { sessions, oidc, logger } = options;
  const now = options.now ?? Date.now;

  const originOf = (c: Context) => options.publicUrl ?? new URL(c.req.url).origin;
  const sessionOf = (c: Context) => sessions.get(getCookie(c, COOKIE));
  const viewerOf = (session: ConsoleSession | undefined): Viewer => ({
    user: session?.user,
    csrfToken: session?.csrfToken,
    isAdmin: session?.user?.roles.some((role) => ADMIN_ROLES.includes(role)) ?? false,
  });
  const render = (c: Context, page: Html, status = 200) => {
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) c.header(name, value);
    c.header("cache-control", "no-store");
    return c.html(page, status as 200);
  };
  const setSessionCookie = (c: Context, session: ConsoleSession) =>
    setCookie(c, COOKIE, session.id, {
      httpOnly: true,
      sameSite: "Lax",
      path: "/",
      secure: originOf(c).startsWith("https:"),
    });

  /** The session's access token, refreshed first when it is about to expire. */
  async function accessToken(session: ConsoleSession): Promise<string | undefined> {
    const tokens = session.tokens;
    if (tokens === undefined) return undefined;
    if (tokens.expiresAt - now() > REFRESH_MARGIN_MS) return tokens.accessToken;
    if (tokens.refreshToken === undefined) return undefined;
    try {
      const refreshed = await oidc.refresh(tokens.refreshToken);
      session.tokens = refreshed.tokens;
      session.user = refreshed.user;
      return refreshed.tokens.accessToken;
    } catch (error) {
      logger.info("Session of {username} ended: {reason}", {
        username: session.user?.username ?? "?",
        reason: (error as Error).message,
      });
      delete session.tokens;
      delete session.user;
      return undefined;
    }
  }

  /** A gateway call as the session's user; undefined when the session has no valid token left. */
  async function asUser(
    session: ConsoleSession,
    path: string,
    init: RequestInit = {},
  ): Promise<Response | undefined> {
    const token = await accessToken(session);
    if (token === undefined) return undefined;
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${token}`);
    try {
      return await options.gateway(path, { ...init, headers });
    } catch (error) {
      logger.warn("Cannot reach the gateway for {path}", { path, error });
      return new Response(
        JSON.stringify({
          title: "The gateway cannot be reached",
          detail: (error as Error).message,
        }),
        { status: 503, headers: { "content-type": "application/problem+json" } },
      );
    }
  }

  type Handler = (c: Context, session: ConsoleSession, viewer: Viewer) => Promise<Response>;

  /** Pages for signed-in users; anonymous visitors are sent to sign in, and come back. */
  function signedIn(handler: Handler, adminOnly = false) {
    return async (c: Context) => {
      const session = sessionOf(c);
      if (session?.user === undefined) {
        if (c.req.method !== "GET") {
          return render(c, problemPage(viewerOf(session), FORBIDDEN), 403);
        }
        return c.redirect(
          `/login?returnTo=${encodeURIComponent(c.req.path + new URL(c.req.url).search)}`,
        );
      }
      const viewer = viewerOf(session);
      if (c.req.method === "POST") {
        const form = formOf(c);
        if (form.csrf !== session.csrfToken) {
          logger.warn("Refused a form without its CSRF token: {path}", { path: c.req.path });
          return render(c, problemPage(viewer, CSRF_REFUSED), 403);
        }
      }
      if (adminOnly && !viewer.isAdmin) return render(c, problemPage(viewer, ADMINS_ONLY), 403);
      const response = await handler(c, session, viewer);
      if (session.user === undefined) return c.redirect("/login");
      return response;
    };
  }

  mountRoute(app, CONSOLE_ROUTES.script, (c) => {
    c.header("cache-control", "no-cache");
    return c.body(options.script, 200, { "content-type": "text/javascript; charset=utf-8" });
  });
  mountRoute(app, CONSOLE_ROUTES.style, (c) => {
    c.header("cache-control", "no-cache");
    return c.body(options.style, 200, { "content-type": "text/css; charset=utf-8" });
  });

  mountRoute(app, CONSOLE_ROUTES.home, (c) => {
    const session = sessionOf(c);
    const viewer = viewerOf(session);
    return render(c, viewer.user === undefined ? landingPage(viewer) : homePage(viewer));
  });

  mountRoute(app, CONSOLE_ROUTES.login, async (c) => {
    const requested = c.req.query("returnTo") ?? "/search";
    // Only a path of this console: never an open redirect.
    const returnTo = /^\/(?!\/)/.test(requested) ? requested : "/search";
    const session = sessions.create();
    try {
      const { pending, location } = await oidc.startSignIn(`${originOf(c)}/callback`, returnTo);
      session.pending = pending;
      setSessionCookie(c, session);
      return c.redirect(location);
    } catch (error) {
      sessions.delete(session.id);
      logger.error("Cannot start a sign-in", { error });
      return render(
        c,
        problemPage(viewerOf(undefined), {
          status: 503,
          title: "Cannot sign in right now",
          detail: (error as Error).message,
        }),
        503,
      );
    }
  });

  mountRoute(app, CONSOLE_ROUTES.callback, async (c) => {
    const session = sessionOf(c);
    const pending = session?.pending;
    const fail = (detail: string, status = 400) =>
      render(
        c,
        problemPage(viewerOf(undefined), { status, title: "Sign-in failed", detail }),
        status,
      );
    if (session === undefined || pending === undefined) {
      return fail("This sign-in expired or was started elsewhere; sign in again.");
    }
    delete session.pending;
    if (c.req.query("state") !== pending.state) return fail("The sign-in's state does not match.");
    const error = c.req.query("error");
    if (error !== undefined) return fail(`${error}: ${c.req.query("error_description") ?? ""}`);
    const code = c.req.query("code");
    if (code === undefined) return fail("The issuer sent no code.");
    try {
      const { tokens, user } = await oidc.finishSignIn(pending, code, `${originOf(c)}/callback`);
      // A fresh session id once signed in (no fixation of an id seen before).
      sessions.delete(session.id);
      const signedInSession = sessions.create();
      signedInSession.tokens = tokens;
      signedInSession.user = user;
      setSessionCookie(c, signedInSession);
      logger.info("{username} signed in to the console", { username: user.username });
      return c.redirect(pending.returnTo);
    } catch (error) {
      if (!(error instanceof SignInError)) throw error;
      return fail(error.message, 502);
    }
  });

  mountRoute(app, CONSOLE_ROUTES.logout, async (c) => {
    const session = sessionOf(c);
    if (session === undefined || c.req.valid("form").csrf !== session.csrfToken) {
      return render(c, problemPage(viewerOf(session), CSRF_REFUSED), 403);
    }
    sessions.delete(session.id);
    setCookie(c, COOKIE, "", { httpOnly: true, sameSite: "Lax", path: "/", maxAge: 0 });
    logger.info("{username} signed out of the console", {
      username: session.user?.username ?? "?",
    });
    return c.redirect(await oidc.logoutLocation(session.tokens?.idToken, `${originOf(c)}/`), 303);
  });

  mountRoute(
    app,
    CONSOLE_ROUTES.search,
    signedIn(async (c, session, viewer) => {
      const query = c.req.query();
      const form: SearchForm = {
        text: query.text ?? "",
        userId: query.userId ?? "",
        from: query.from ?? "",
        to: query.to ?? "",
        version: query.version === "v1" ? "v1" : "v2",
      };
      const asked = Object.keys(query).some((key) =>
        ["text", "userId", "from", "to"].includes(key)
      );
      if (!asked) return render(c, searchPage(viewer, form, undefined, undefined));
      const params = new URLSearchParams();
      for (const key of ["text", "userId", "from", "to", "cursor"] as const) {
        const value = (key === "cursor" ? query.cursor : form[key]) ?? "";
        if (value.trim() !== "") params.set(key, value.trim());
      }
      params.set("size", "20");
      const response = await asUser(session, `/api/${form.version}/tweets?${params}`, {
        headers: { accept: `application/vnd.twitterapi.${form.version}+json` },
      });
      if (response === undefined) return c.redirect("/login");
      if (!response.ok) {
        const problem = await problemOf(response);
        return render(c, searchPage(viewer, form, undefined, problem), problem.status);
      }
      const traceId = traceIdOf(response);
      let result: SearchResult;
      if (form.version === "v2") {
        const body = await response.json() as {
          data: { id: string; text: string; createdAt: string; author: { id: string } }[];
          page: { total: number; nextCursor?: string | null };
          wordCounts?: { status: string; counts?: Record<string, number | null> };
        };
        result = {
          tweets: body.data.map((tweet) => ({
            id: tweet.id,
            userId: tweet.author.id,
            text: tweet.text,
            createdAt: tweet.createdAt,
          })),
          total: body.page.total,
          nextCursor: body.page.nextCursor ?? undefined,
          wordCounts: body.wordCounts === undefined
            ? undefined
            : body.wordCounts.status === "ok"
            ? body.wordCounts.counts ?? {}
            : null,
          traceId,
        };
      } else {
        const tweets = await response.json() as Tweet[];
        const next = /<([^>]+)>;\s*rel="next"/.exec(response.headers.get("link") ?? "")?.[1];
        const header = response.headers.get("word-counts");
        let wordCounts: SearchResult["wordCounts"];
        if (header === "unavailable") wordCounts = null;
        else if (header !== null) {
          wordCounts = Object.fromEntries(
            header.split(",").map((item) => {
              const [word, count] = item.trim().split("=");
              return [decodeURIComponent(word!), count === "none" ? null : Number(count)];
            }),
          );
        }
        result = {
          tweets,
          total: Number(response.headers.get("x-total-count") ?? tweets.length),
          nextCursor: next === undefined
            ? undefined
            : new URL(next, "http://x").searchParams.get("cursor") ?? undefined,
          wordCounts,
          traceId,
        };
      }
      return render(c, searchPage(viewer, form, result, undefined));
    }),
  );

  mountRoute(
    app,
    CONSOLE_ROUTES.system,
    signedIn(async (c, _session, viewer) => {
      try {
        return render(c, systemPage(viewer, await options.system.instances()));
      } catch (error) {
        return render(c, problemPage(viewer, REGISTRY_DOWN(error)), 503);
      }
    }),
  );
  mountRoute(
    app,
    CONSOLE_ROUTES.systemTable,
    signedIn(async (c) => {
      try {
        return render(c, systemTable(await options.system.instances()));
      } catch (error) {
        return render(c, problemBox(REGISTRY_DOWN(error)), 503);
      }
    }),
  );

  mountRoute(
    app,
    CONSOLE_ROUTES.traces,
    signedIn(async (c, _session, viewer) => {
      const recent = await options.traces.recentTraces({ serviceName: "gateway", limit: 20 })
        .catch(() => []);
      return render(c, tracesPage(viewer, recent));
    }),
  );
  mountRoute(
    app,
    CONSOLE_ROUTES.traceLookup,
    signedIn((c) => {
      const traceId = (c.req.query("traceId") ?? "").trim().toLowerCase();
      return Promise.resolve(c.redirect(`/traces/${encodeURIComponent(traceId)}`));
    }),
  );
  mountRoute(
    app,
    CONSOLE_ROUTES.trace,
    signedIn(async (c, _session, viewer) => {
      const traceId = c.req.param("traceId") ?? "";
      try {
        checkTraceId(traceId);
      } catch (error) {
        return render(
          c,
          problemPage(viewer, {
            status: 400,
            title: "Not a trace id",
            detail: (error as Error).message,
          }),
          400,
        );
      }
      const [spans, logs] = await Promise.all([
        options.traces.trace(traceId).catch(() => undefined),
        options.logs.search({ traceId, limit: 200 }).catch(() => []),
      ]);
      return render(c, tracePage(viewer, traceId, spans, logs));
    }),
  );

  async function wordLists(session: ConsoleSession, window: string): Promise<Html | undefined> {
    const read = async (
      path: string,
      key: "words",
    ): Promise<WordCount[] | ProblemView | undefined> => {
      const response = await asUser(session, path);
      if (response === undefined) return undefined;
      if (!response.ok) return await problemOf(response);
      return (await response.json())[key];
    };
    const [trending, top] = await Promise.all([
      read(`/api/v1/words/trending?window=${encodeURIComponent(window)}&limit=10`, "words"),
      read("/api/v1/analytics/top?limit=10", "words"),
    ]);
    if (trending === undefined || top === undefined) return undefined;
    return trendingList(window, trending, top);
  }
  const windowOf = (c: Context) => {
    const asked = c.req.query("window");
    return asked !== undefined && options.wordWindows.includes(asked)
      ? asked
      : options.wordWindows[0]!;
  };
  mountRoute(
    app,
    CONSOLE_ROUTES.words,
    signedIn(async (c, session, viewer) => {
      const window = windowOf(c);
      const content = await wordLists(session, window);
      if (content === undefined) return c.redirect("/login");
      return render(c, wordsPage(viewer, window, options.wordWindows, content));
    }),
  );
  mountRoute(
    app,
    CONSOLE_ROUTES.wordsFragment,
    signedIn(async (c, session) => {
      const content = await wordLists(session, windowOf(c));
      return content === undefined ? c.body(null, 401) : render(c, content);
    }),
  );
  mountRoute(
    app,
    CONSOLE_ROUTES.wordHistory,
    signedIn(async (c, session, viewer) => {
      const word = c.req.param("word") ?? "";
      const response = await asUser(
        session,
        `/api/v1/analytics/words/${encodeURIComponent(word)}/history`,
      );
      if (response === undefined) return c.redirect("/login");
      if (!response.ok) {
        const problem = await problemOf(response);
        return render(c, problemPage(viewer, problem), problem.status);
      }
      const traceId = traceIdOf(response);
      const body = await response.json() as { history: { count: number; updatedAt: string }[] };
      return render(
        c,
        layout(
          viewer,
          `History of "${word}"`,
          "/words",
          html`${historyChart(body.history)}
<p>${body.history.length} updates. <a href="/traces/${traceId ?? ""}">Trace of this read</a></p>`,
        ),
      );
    }),
  );

  const permissionsView = async (
    c: Context,
    session: ConsoleSession,
    viewer: Viewer,
    userId: string,
    message: Html | undefined,
    status = 200,
  ) => {
    let grants: PermissionGrant[] | undefined;
    if (userId !== "") {
      const response = await asUser(
        session,
        `/api/v1/permissions?userId=${encodeURIComponent(userId)}`,
      );
      if (response === undefined) return c.redirect("/login");
      if (response.ok) grants = (await response.json()).grants;
      else {
        const problem = await problemOf(response);
        message = html`${message ?? ""}${problemBox(problem)}`;
        status = Math.max(status, problem.status);
      }
    }
    return render(c, permissionsPage(viewer, userId, grants, message), status);
  };
  mountRoute(
    app,
    CONSOLE_ROUTES.permissions,
    signedIn(
      async (c, session, viewer) =>
        await permissionsView(c, session, viewer, c.req.query("userId") ?? "", undefined),
      true,
    ),
  );
  mountRoute(
    app,
    CONSOLE_ROUTES.changePermission,
    signedIn(async (c, session, viewer) => {
      const form = formOf(c);
      const userId = (form.userId ?? "").trim();
      const scope = form.scope ?? "";
      const target = (form.target ?? "").trim();
      const action = form.action === "revoke" ? "revoke" : "grant";
      const body = {
        userId,
        scope,
        ...(target === "" ? {} : { target }),
        ...(action === "grant" ? { level: form.level ?? "" } : {}),
      };
      const response = await asUser(session, "/api/v1/permissions", {
        method: action === "grant" ? "POST" : "DELETE",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      if (response === undefined) return c.redirect("/login");
      if (!response.ok) {
        const problem = await problemOf(response);
        return await permissionsView(
          c,
          session,
          viewer,
          userId,
          problemBox(problem),
          problem.status,
        );
      }
      await response.body?.cancel();
      const done = action === "grant"
        ? `Granted ${body.level} on ${scope}${target === "" ? "" : ` ${target}`} to ${userId}.`
        : `Revoked ${scope}${target === "" ? "" : ` ${target}`} from ${userId}.`;
      logger.info("{username}: {done}", { username: viewer.user?.username ?? "?", done });
      return await permissionsView(
        c,
        session,
        viewer,
        userId,
        html`<p class="done" role="status">${done}</p>`,
      );
    }, true),
  );

  mountRoute(
    app,
    CONSOLE_ROUTES.live,
    signedIn(async (c, session, viewer) => {
      let stream: StreamState | ProblemView | undefined;
      if (viewer.isAdmin) {
        const response = await asUser(session, "/api/v1/stream");
        if (response === undefined) return c.redirect("/login");
        stream = response.ok ? await response.json() : await problemOf(response);
      }
      return render(c, livePage(viewer, stream));
    }),
  );
  mountRoute(
    app,
    CONSOLE_ROUTES.controlStream,
    signedIn(async (c, session) => {
      const form = formOf(c);
      const action = form.action ?? "";
      const call = action === "rate"
        ? {
          path: "/api/v1/stream/rate",
          init: {
            method: "PUT",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ perSecond: Number(form.perSecond) }),
          },
        }
        : {
          path: `/api/v1/stream/${action === "pause" ? "pause" : "resume"}`,
          init: { method: "POST" },
        };
      const response = await asUser(session, call.path, call.init);
      if (response === undefined) return c.redirect("/login");
      if (!response.ok) {
        const problem = await problemOf(response);
        return render(c, problemPage(viewerOf(session), problem), problem.status);
      }
      await response.body?.cancel();
      return c.redirect("/live", 303);
    }, true),
  );

  /**
   * New tweets as server-sent events: query's streaming search through the
   * gateway, passed on as it arrives. Nothing is buffered on the way, so the
   * browser's reading paces the gateway's, and query's reading of the index.
   */
  mountRoute(
    app,
    CONSOLE_ROUTES.liveEvents,
    signedIn(async (c, session) => {
      const response = await asUser(session, "/api/v2/tweets/stream?size=20", {
        headers: { accept: "text/event-stream" },
        signal: c.req.raw.signal,
      });
      const headers = { "content-type": "text/event-stream", "cache-control": "no-store" };
      if (response === undefined) {
        return new Response("event: signed-out\ndata: {}\n\n", { headers });
      }
      if (!response.ok) {
        const problem = await problemOf(response);
        return new Response(`event: problem\ndata: ${JSON.stringify(problem)}\n\n`, { headers });
      }
      return new Response(response.body, { headers: { ...headers, "x-accel-buffering": "no" } });
    }),
  );

  return app;
}

const FORBIDDEN: ProblemView = { status: 403, title: "Sign in first" };
const CSRF_REFUSED: ProblemView = {
  status: 403,
  title: "Form refused",
  detail: "The form carried no valid CSRF token. Reload the page and send it again.",
};
const ADMINS_ONLY: ProblemView = {
  status: 403,
  title: "Admins only",
  detail: "This page needs the role app_admin_role or app_super_user_role.",
};
const REGISTRY_DOWN = (error: unknown): ProblemView => ({
  status: 503,
  title: "The registry cannot be read",
  detail: (error as Error).message,
});
