/**
 * The console's pages, rendered on the server with Hono's `html` template
 * helper (every interpolated value is escaped). Each page works without
 * JavaScript; `/static/console.js` only keeps the live parts current.
 */
import { html, raw } from "hono/html";
import type { HtmlEscapedString } from "hono/utils/html";
import type { LogEntry } from "../../shared/log/log_reader.ts";
import type { TraceSpan } from "../../shared/trace/trace_span.ts";
import type { SignedInUser } from "./sessions.ts";
import type { InstanceView } from "./system.ts";

export type Html = HtmlEscapedString | Promise<HtmlEscapedString>;

export interface Viewer {
  readonly user: SignedInUser | undefined;
  readonly csrfToken: string | undefined;
  readonly isAdmin: boolean;
}

const NAV = [
  ["/search", "Search"],
  ["/live", "Live"],
  ["/words", "Words"],
  ["/system", "System"],
  ["/traces", "Traces"],
  ["/permissions", "Permissions"],
] as const;

export function layout(viewer: Viewer, title: string, current: string, body: Html): Html {
  const links = viewer.user === undefined
    ? []
    : NAV.filter(([path]) => path !== "/permissions" || viewer.isAdmin).map(([path, label]) =>
      html`
        <a href="${path}" ${raw(path === current ? ' aria-current="page"' : "")}>${label}</a>
      `
    );
  return html`
    <!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>${title} &middot; TwitterAPI console</title>
        <link rel="stylesheet" href="/static/console.css">
        <script type="module" src="/static/console.js"></script>
      </head>
      <body>
        <header><a class="brand" href="/">TwitterAPI console</a>
    <nav aria-label="Pages">${links}</nav>
    ${viewer.user === undefined
      ? html`<a class="button" href="/login">Sign in</a>`
      : html`<form method="post" action="/logout" class="signout">${csrfField(viewer)}
<span>${viewer.user.username}</span> <button type="submit">Sign out</button></form>`}
        </header>
        <main id="main"><h1>${title}</h1>${body}</main>
      </body>
    </html>
  `;
}

export function csrfField(viewer: Viewer): Html {
  return html`<input type="hidden" name="csrf" value="${viewer.csrfToken ?? ""}">`;
}

export function landingPage(viewer: Viewer): Html {
  return layout(
    viewer,
    "Welcome",
    "/",
    html`<p>Search the tweets, watch them arrive, follow the words, and see every service at work:
its health, its traces and its logs.</p>
<p><a class="button" href="/login">Sign in</a> with your account of the realm.</p>`,
  );
}

export function homePage(viewer: Viewer): Html {
  return layout(
    viewer,
    `Hello, ${viewer.user?.username}`,
    "/",
    html`<p>Your roles: ${viewer.user?.roles.join(", ") || "none"}.</p>
<ul>${
      NAV.filter(([path]) => path !== "/permissions" || viewer.isAdmin).map(([path, label]) =>
        html`<li><a href="${path}">${label}</a></li>`
      )
    }</ul>`,
  );
}

export interface ProblemView {
  readonly status: number;
  readonly title: string;
  readonly detail?: string | undefined;
  readonly traceId?: string | undefined;
}

export function traceLink(traceId: string | undefined): Html {
  return traceId === undefined
    ? html``
    : html`<a class="trace" href="/traces/${traceId}">trace ${traceId.slice(0, 12)}&hellip;</a>`;
}

export function problemBox(problem: ProblemView): Html {
  return html`<div class="problem" role="alert"><h2>${problem.title}</h2>
<p>${problem.detail ?? ""} (HTTP ${problem.status})</p>
${problem.traceId === undefined ? "" : html`<p>Trace id: ${traceLink(problem.traceId)}</p>`}</div>`;
}

export function problemPage(viewer: Viewer, problem: ProblemView): Html {
  return layout(viewer, problem.title, "", problemBox(problem));
}

export interface SearchForm {
  readonly text: string;
  readonly userId: string;
  readonly from: string;
  readonly to: string;
  readonly version: "v1" | "v2";
}

export interface Tweet {
  readonly id: string;
  readonly userId: string;
  readonly text: string;
  readonly createdAt: string;
}

export interface SearchResult {
  readonly tweets: readonly Tweet[];
  readonly total: number | undefined;
  readonly nextCursor: string | undefined;
  /** Undefined without `text`; null when analytics cannot answer. */
  readonly wordCounts: Readonly<Record<string, number | null>> | null | undefined;
  readonly traceId: string | undefined;
}

function field(label: string, name: string, value: string, type = "text", extra = ""): Html {
  return html`<label>${label}<input type="${type}" name="${name}" value="${value}"${
    raw(extra)
  }></label>`;
}

export function searchPage(
  viewer: Viewer,
  form: SearchForm,
  result: SearchResult | undefined,
  problem: ProblemView | undefined,
): Html {
  const query = (cursor: string) => {
    const params = new URLSearchParams({ ...form, cursor });
    return `/search?${params}`;
  };
  const counts = result?.wordCounts;
  const wordCounts = result === undefined || counts === undefined
    ? html``
    : counts === null
    ? html`<p class="unavailable" role="status" id="word-counts">Word counts unavailable: analytics
cannot answer right now. The results below are complete.</p>`
    : html`<p id="word-counts" role="status">Word counts: ${
      Object.entries(counts).map(([word, count]) =>
        html`
          <span class="count"><a href="/words/${encodeURIComponent(
            word,
          )}">${word}</a>: ${count === null ? "not counted yet" : count.toLocaleString("en")}</span>
        `
      )
    }</p>`;
  return layout(
    viewer,
    "Search",
    "/search",
    html`<form method="get" action="/search" class="search" role="search">
${field("Text", "text", form.text)}${
      field("Author id", "userId", form.userId, "text", ' inputmode="numeric"')
    }
${field("From", "from", form.from, "text", ' placeholder="2026-11-24 or ISO time"')}${
      field("To", "to", form.to, "text", ' placeholder="2026-11-24 or ISO time"')
    }
<fieldset><legend>API version</legend>
<label class="inline"><input type="radio" name="version" value="v2"${
      raw(form.version === "v2" ? " checked" : "")
    }> v2</label>
<label class="inline"><input type="radio" name="version" value="v1"${
      raw(form.version === "v1" ? " checked" : "")
    }> v1</label></fieldset>
<button type="submit">Search</button></form>
${problem === undefined ? "" : problemBox(problem)}
${
      result === undefined ? "" : html`${wordCounts}
<p>${result.total === undefined ? "" : `${result.total} tweets. `}${traceLink(result.traceId)}</p>
${
        result.tweets.length === 0
          ? html`<p role="status">No tweets match (or none is visible to you).</p>`
          : html`
            <div class="scroll">
              <table>
                <caption>Results, newest first</caption>
                <thead>
                  <tr>
                    <th scope="col">Created</th>
                    <th scope="col">Author</th>
                    <th scope="col">Text</th>
                    <th scope="col">Id</th>
                  </tr>
                </thead>
                <tbody>${result.tweets.map((tweet) =>
                  html`
                    <tr>
                      <td>${tweet.createdAt}</td>
                      <td>${tweet.userId}</td>
                      <td>${tweet.text}</td>
                      <td>${tweet.id}</td>
                    </tr>
                  `
                )}</tbody>
              </table>
            </div>
          `
      }
${
        result.nextCursor === undefined
          ? ""
          : html`<p><a rel="next" href="${query(result.nextCursor)}">Next page</a></p>`
      }`
    }`,
  );
}

function number(value: number | undefined, digits = 1): string {
  return value === undefined ? "-" : value.toFixed(digits);
}

export function systemTable(instances: readonly InstanceView[]): Html {
  return html`
    <table id="system-table">
      <caption>Every instance the registry lists</caption>
      <thead>
        <tr>
          <th scope="col">Service</th>
          <th scope="col">Instance</th>
          <th scope="col">State</th>
          <th scope="col">Version</th>
          <th scope="col">Uptime s</th>
          <th scope="col">Req/s</th>
          <th scope="col">Errors %</th>
          <th scope="col">p99 ms</th>
          <th scope="col">Consumer lag</th>
          <th scope="col">Breakers</th>
        </tr>
      </thead>
      <tbody>${instances.map((instance) =>
        html`
          <tr class="state-${instance.state}" data-service="${instance.service}">
            <td>${instance.service}</td>
            <td>${instance.instanceId}</td>
            <td><span class="badge">${instance.state}</span></td>
            <td>${instance.version}</td>
            <td>${instance.uptimeSeconds ?? "-"}</td>
            <td>${number(instance.requestsPerSecond)}</td>
            <td>${instance.errorRatio === undefined
              ? "-"
              : (instance.errorRatio * 100).toFixed(1)}</td>
            <td>${instance.p99Seconds === undefined
              ? "-"
              : Math.round(instance.p99Seconds * 1000)}</td>
            <td>${Object.entries(instance.lag).map(([partition, lag]) => `${partition}: ${lag}`)
              .join(", ") || "-"}</td>
            <td>${Object.entries(instance.breakers).map(([service, state]) =>
              `${service}: ${state}`
            ).join(", ") || "-"}</td>
          </tr>
        `
      )}</tbody>
    </table>
  `;
}

export function systemPage(viewer: Viewer, instances: readonly InstanceView[]): Html {
  return layout(
    viewer,
    "System",
    "/system",
    html`<p>Health from each instance's <code>/health</code>, rates and p99 from its <code>/metrics</code>
(p99 since start, rates between two readings). Updates every 2 seconds.</p>
<div class="scroll" data-live="/system/table" data-every="2000">${systemTable(instances)}</div>`,
  );
}

export function tracePage(
  viewer: Viewer,
  traceId: string,
  spans: readonly TraceSpan[] | undefined,
  logs: readonly LogEntry[],
): Html {
  if (spans === undefined || spans.length === 0) {
    return layout(
      viewer,
      "Trace",
      "/traces",
      html`<p role="status">No spans of trace ${traceId} are known (yet). Spans arrive within a few
seconds of a request; <a href="/traces/${traceId}">reload</a>.</p>${logTable(logs)}`,
    );
  }
  const start = Math.min(...spans.map((span) => span.timestamp));
  const end = Math.max(...spans.map((span) => span.timestamp + span.duration));
  const total = Math.max(1, end - start);
  const services = [...new Set(spans.map((span) => span.localEndpoint.serviceName ?? "?"))];
  const depth = new Map<string, number>();
  for (const span of spans) {
    depth.set(span.id, span.parentId === undefined ? 0 : (depth.get(span.parentId) ?? 0) + 1);
  }
  return layout(
    viewer,
    `Trace ${traceId.slice(0, 12)}...`,
    "/traces",
    html`<p>${spans.length} spans across ${services.length} services: ${services.join(", ")};
${(total / 1000).toFixed(1)} ms.</p>
<ol class="waterfall" aria-label="Spans by start time">${
      spans.map((span) => {
        const left = ((span.timestamp - start) / total) * 100;
        const width = Math.max(0.5, (span.duration / total) * 100);
        const service = span.localEndpoint.serviceName ?? "?";
        return html`
          <li class="span"
            data-service="${service}"><span class="label" style="padding-left:${raw(
              String((depth.get(span.id) ?? 0) * 0.8),
            )}rem"><b>${service}</b> ${span.name}${span.kind === undefined
              ? ""
              : ` (${span.kind.toLowerCase()})`}</span>
          <span class="bar-track"><span class="bar service-${raw(
            String(services.indexOf(service) % 6),
          )}${raw(span.tags.error !== undefined ? " error" : "")}" style="margin-left:${raw(
            left.toFixed(2),
          )}%;width:${raw(width.toFixed(2))}%"></span></span>
          <span class="duration">${(span.duration / 1000).toFixed(2)} ms</span></li>
        `;
      })
    }</ol>
<h2>Log lines of this trace</h2>${logTable(logs)}`,
  );
}

function logTable(logs: readonly LogEntry[]): Html {
  if (logs.length === 0) return html`<p role="status">No log lines of this trace (yet).</p>`;
  return html`
    <div class="scroll">
      <table id="trace-logs">
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Level</th>
            <th scope="col">Service</th>
            <th scope="col">Message</th>
          </tr>
        </thead>
        <tbody>${[...logs].reverse().map((entry) =>
          html`
            <tr class="level-${entry.level}">
              <td>${new Date(entry.timestamp).toISOString()}</td>
              <td>${entry.level}</td>
              <td>${entry.service ?? entry.logger}</td>
              <td>${entry.message}${entry.error === undefined ? "" : html`
                <code>${entry.error.type}: ${entry.error.message}</code>
              `}</td>
            </tr>
          `
        )}</tbody>
      </table>
    </div>
  `;
}

export function tracesPage(viewer: Viewer, recent: readonly TraceSpan[][]): Html {
  return layout(
    viewer,
    "Traces",
    "/traces",
    html`<form method="get" action="/traces/lookup">${field("Trace id", "traceId", "")}
<button type="submit">Open</button></form>
<h2>Recent requests through the gateway</h2>
${
      recent.length === 0
        ? html`<p role="status">No traces yet.</p>`
        : html`<ul>${
          recent.map((spans) => {
            const root = spans.find((span) => span.parentId === undefined) ?? spans[0]!;
            return html`<li><a href="/traces/${root.traceId}">${root.name}</a> &middot; ${spans.length} spans &middot; ${
              (root.duration / 1000).toFixed(1)
            } ms &middot; ${new Date(root.timestamp / 1000).toISOString()}</li>`;
          })
        }</ul>`
    }`,
  );
}

export interface WordCount {
  readonly word: string;
  readonly count: number;
}

export function trendingList(
  window: string,
  trending: readonly WordCount[] | ProblemView,
  top: readonly WordCount[] | ProblemView,
): Html {
  const list = (words: readonly WordCount[] | ProblemView) =>
    "status" in words
      ? problemBox(words)
      : words.length === 0
      ? html`<p role="status">No words counted yet.</p>`
      : html`<ol>${
        words.map((entry) =>
          html`<li><a href="/words/${encodeURIComponent(entry.word)}">${entry.word}</a> ${
            entry.count.toLocaleString("en")
          }</li>`
        )
      }</ol>`;
  return html`
    <div class="columns">
      <section><h2>Trending in the current ${window} window</h2>${list(trending)}</section>
      <section><h2>All time (analytics)</h2>${list(top)}</section>
    </div>
  `;
}

export function wordsPage(
  viewer: Viewer,
  window: string,
  windows: readonly string[],
  content: Html,
): Html {
  return layout(
    viewer,
    "Words",
    "/words",
    html`
      <form method="get"
        action="/words"><label>Window <select name="window">${windows.map((name) =>
          html`
            <option value="${name}" ${raw(name === window ? " selected" : "")}>${name}</option>
          `
        )}</select></label> <button type="submit">Show</button></form>
      <div data-live="/words/fragment?window=${encodeURIComponent(
        window,
      )}" data-every="3000">${content}</div>
    `,
  );
}

/** A word's count over time as an SVG line chart (drawn here: no chart library to ship). */
export function historyChart(history: readonly { count: number; updatedAt: string }[]): Html {
  if (history.length === 0) return html`<p role="status">No history yet.</p>`;
  const width = 640;
  const height = 240;
  const pad = 40;
  const times = history.map((point) => Date.parse(point.updatedAt));
  const t0 = Math.min(...times);
  const t1 = Math.max(t0 + 1, Math.max(...times));
  const maxCount = Math.max(1, ...history.map((point) => point.count));
  const minCount = Math.min(...history.map((point) => point.count));
  const x = (t: number) => pad + ((t - t0) / (t1 - t0)) * (width - 2 * pad);
  const y = (count: number) =>
    height - pad - ((count - minCount) / Math.max(1, maxCount - minCount)) * (height - 2 * pad);
  const points = history.map((point, i) =>
    `${x(times[i]!).toFixed(1)},${y(point.count).toFixed(1)}`
  )
    .join(" ");
  return html`
    <svg class="chart" viewBox="0 0 ${width} ${height}" role="img"
      aria-label="Count from ${minCount} to ${maxCount} between ${history[0]!
        .updatedAt} and ${history.at(-1)!.updatedAt}">
      <line x1="${pad}" y1="${height - pad}" x2="${width - pad}" y2="${height -
        pad}" class="axis" />
      <line x1="${pad}" y1="${pad}" x2="${pad}" y2="${height - pad}" class="axis" />
      <text x="${pad - 4}" y="${pad}" text-anchor="end">${maxCount}</text>
      <text x="${pad - 4}" y="${height - pad}" text-anchor="end">${minCount}</text>
      <text x="${pad}" y="${height - pad + 16}">${history[0]!.updatedAt.slice(11, 19)}</text>
      <text x="${width - pad}" y="${height - pad + 16}" text-anchor="end">${history.at(-1)!
        .updatedAt.slice(11, 19)}</text>
      <polyline points="${points}" class="line" />
    </svg>
  `;
}

export interface PermissionGrant {
  readonly userId: string;
  readonly scope: string;
  readonly target?: string;
  readonly level: string;
  readonly grantedAt: string;
}

export function permissionsPage(
  viewer: Viewer,
  userId: string,
  grants: readonly PermissionGrant[] | undefined,
  message: Html | undefined,
): Html {
  const select = (name: string, label: string, options: readonly string[]) =>
    html`<label>${label}<select name="${name}">${
      options.map((option) => html`<option>${option}</option>`)
    }</select></label>`;
  return layout(
    viewer,
    "Permissions",
    "/permissions",
    html`${message ?? ""}
<form method="get" action="/permissions">${field("User id (subject)", "userId", userId)}
<button type="submit">Show grants</button></form>
${
      grants === undefined
        ? ""
        : grants.length === 0
        ? html`<p role="status">No grants for ${userId}.</p>`
        : html`
          <div class="scroll">
            <table id="grants">
              <caption>Grants of ${userId}</caption>
              <thead>
                <tr>
                  <th scope="col">Scope</th>
                  <th scope="col">Target</th>
                  <th scope="col">Level</th>
                  <th scope="col">Granted</th>
                </tr>
              </thead>
              <tbody>${grants.map((grant) =>
                html`
                  <tr>
                    <td>${grant.scope}</td>
                    <td>${grant.target ?? "-"}</td>
                    <td>${grant.level}</td>
                    <td>${grant.grantedAt}</td>
                  </tr>
                `
              )}</tbody>
            </table>
          </div>
        `
    }
<h2>Grant or revoke</h2>
<form method="post" action="/permissions" id="grant-form">${csrfField(viewer)}
${field("User id (subject)", "userId", userId, "text", " required")}
${select("scope", "Scope", ["tweet", "author", "all"])}
${field("Target (tweet id or author id; empty for all)", "target", "")}
${select("level", "Level", ["READ", "WRITE", "ADMIN"])}
<button type="submit" name="action" value="grant">Grant</button>
<button type="submit" name="action" value="revoke">Revoke</button></form>`,
  );
}

export interface StreamState {
  readonly state: string;
  readonly produced: number;
  readonly ratePerSecond: number;
  readonly achievedPerSecond: number;
}

export function livePage(viewer: Viewer, stream: StreamState | ProblemView | undefined): Html {
  const controls = stream === undefined ? "" : "status" in stream ? problemBox(stream) : html`
    <section aria-labelledby="stream-controls">
      <h2 id="stream-controls">Stream controls</h2>
      <p>The stream is <b id="stream-state">${stream.state}</b>: ${stream
        .produced} tweets produced; ${stream.achievedPerSecond}/s over the last five seconds, of
    ${stream.ratePerSecond}/s asked for.</p>
      <form method="post" action="/live/stream" class="inline-form">${csrfField(viewer)}
    <button type="submit" name="action" value="pause">Pause</button>
    <button type="submit" name="action" value="resume">Resume</button></form>
      <form method="post" action="/live/stream" class="inline-form">${csrfField(viewer)}
    <label>Tweets per second<input type="number" name="perSecond" min="1" value="${stream
      .ratePerSecond}"></label>
    <button type="submit" name="action" value="rate">Set rate</button></form>
    </section>
  `;
  return layout(
    viewer,
    "Live",
    "/live",
    html`${controls}
<p>New tweets appear here as they are indexed (<span id="live-count">0</span> so far).</p>
<noscript><p>This page needs JavaScript for its live list; <a href="/search">Search</a> works without.</p></noscript>
<ol id="live-tweets" data-events="/live/events" aria-live="polite"></ol>`,
  );
}
