/**
 * The HTTP kernel every service is built on: a Hono app with trace context,
 * request logging, metrics, body-size limits, problem+json errors, and the
 * operational endpoints `/health`, `/ready` and `/metrics`.
 */
import { type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Context, MiddlewareHandler } from "hono";
import type { BlankEnv } from "hono/types";
import { HTTPException } from "hono/http-exception";
import { logsAt } from "../log/log.ts";
import { PROMETHEUS_CONTENT_TYPE, registerProcessMetrics } from "../metrics/metrics.ts";
import type { ServiceContext } from "../service/service.ts";
import { requestLinesOf, withRequestLines } from "../trace/request_lines.ts";
import { extractTraceContext, inSpan, recordError } from "../trace/tracing.ts";
import {
  createOpenApiApp,
  createRoute,
  mountRoute,
  type OpenApiDocument,
  type OpenAPIHono,
  serveOpenApiDescription,
  z,
} from "./openapi.ts";
import {
  internalError,
  invalidBody,
  methodNotAllowed,
  notFound,
  payloadTooLarge,
  ProblemError,
  problemResponse,
  unsupportedMediaType,
} from "./problem.ts";
import { setResponseHeaders } from "./response_headers.ts";

/** A dependency the service needs to do its work, checked by `/ready`. */
export interface ReadinessCheck {
  readonly name: string;
  /** Resolves when the dependency is usable; rejects with the reason. */
  check(): Promise<void>;
  /**
   * Whether the service cannot work without the dependency. A failing
   * non-critical check (one the service replaces while it is down, like a
   * shared rate-limit store) reports `degraded` and keeps the service ready.
   * @default true
   */
  readonly critical?: boolean;
}

export interface ServiceAppOptions {
  /** The service's name, instance id, logger and metrics registry. */
  readonly context: ServiceContext;
  /**
   * Where `/ready` and `/metrics` answer when they must not on the public
   * port (Spring's `management.server.port`): this app gets them, and
   * `/health`, and the service's app keeps only `/health`. Served on its own
   * listener by the process. @default the service's app
   */
  readonly management?: OpenAPIHono<BlankEnv>;
  /** What the service's `/openapi.json` says it is. @default the service's name */
  readonly description?: string;
  /**
   * Turns the app's own description into what its `/openapi.json` serves
   * (the gateway's merged public description). @default the app's own
   */
  readonly publishDescription?: (own: () => OpenApiDocument) => Promise<OpenApiDocument>;
  /** The checks of `/ready`; a function when they change while running (read per request). */
  readonly readiness?: readonly ReadinessCheck[] | (() => readonly ReadinessCheck[]);
  /**
   * Largest accepted request body.
   * @default 1_048_576
   */
  readonly bodyLimitBytes?: number;
  /**
   * Routes logged at debug rather than info, like the operational endpoints:
   * frequent machine traffic such as heartbeats.
   */
  readonly quietRoutes?: readonly string[];
  /**
   * Logs the successful requests (status below 400) of one in this many
   * traces begun here (the first, then every n-th) at info, the others at
   * debug: a proxy's line per request costs more CPU than the proxying
   * itself. Each sampled line says
   * how many it stands for (`sampledOneIn`). The choice travels with the
   * trace context (`request_lines.ts`), so the services the request passes
   * next log its lines too, or do not. A request that failed (4xx, 5xx) is
   * always logged at info, and so is one that came with a caller's
   * `traceparent` and no such choice (someone follows that trace, and finds
   * its lines by trace id).
   * @default 1 (every request at info)
   */
  readonly successLogSampling?: number;
  /**
   * Longest wait for one readiness check.
   * @default 2000
   */
  readonly readinessTimeoutMs?: number;
}

const OPERATIONAL_ROUTES = ["/health", "/ready", "/metrics"];

/**
 * The `successLogSampling` of the services on the hot path (the gateway and
 * query): at one line each, logging cost the gateway more CPU than proxying,
 * and query a quarter of a search (`bench:gateway`'s profiles).
 */
export const HOT_PATH_LOG_SAMPLING = 100;

/** The context variable a handler sets to the route it matched itself, for spans and metrics. */
export const HTTP_ROUTE = "httpRoute";

/** The context variable holding the request's parsed URL (`requestUrl`). */
const REQUEST_URL = "requestUrl";

/**
 * The request's URL, parsed once per request by the kernel: a handler that
 * needs its parts (the gateway's proxy) parsed it a second time.
 */
export function requestUrl(c: Context): URL {
  const parsed: unknown = c.get(REQUEST_URL as never);
  return parsed instanceof URL ? parsed : new URL(c.req.url);
}

function timeout(ms: number, what: string): { promise: Promise<never>; cancel(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const promise = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

async function runReadinessCheck(check: ReadinessCheck, timeoutMs: number) {
  const limit = timeout(timeoutMs, check.name);
  try {
    await Promise.race([check.check(), limit.promise]);
    return { status: "up" } as const;
  } catch (error) {
    return {
      status: check.critical === false ? "degraded" : "down",
      error: error instanceof Error ? error.message : String(error),
    } as const;
  } finally {
    limit.cancel();
  }
}

/**
 * Refuses request bodies over `maxBytes` with 413 without buffering them
 * (Hono's `bodyLimit` buffers a chunked body whole before the handler runs,
 * which would keep the gateway from streaming uploads). A declared length
 * over the limit is refused at once; a chunked body is counted as the
 * handler reads it, and reading past the limit fails with the 413
 * `ProblemError` (a proxy stops forwarding it). The rest of the client's
 * body is then discarded, so the connection does not wait for it.
 */
function limitBody(maxBytes: number): MiddlewareHandler {
  return async function bodyLimit(c, next) {
    const body = c.req.raw.body;
    if (body === null) return await next();
    const declared = c.req.header("content-length");
    if (declared !== undefined && c.req.header("transfer-encoding") === undefined) {
      if (Number(declared) <= maxBytes) return await next();
      await body.cancel();
      return problemResponse(payloadTooLarge(maxBytes), c.req.path);
    }
    const reader = body.getReader();
    let received = 0;
    const limited = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) return controller.close();
        received += value.byteLength;
        if (received <= maxBytes) return controller.enqueue(value);
        await reader.cancel();
        controller.error(payloadTooLarge(maxBytes));
      },
      cancel: (reason) => reader.cancel(reason),
    });
    c.req.raw = new Request(c.req.raw, { body: limited, duplex: "half" } as RequestInit);
    await next();
  };
}

/** A Hono route (`/a/:id/b`, `/files/*`) as a pattern matching its paths. */
function routePattern(route: string): RegExp {
  const source = route.split("/").map((part) =>
    part.startsWith(":")
      ? "[^/]+"
      : part === "*"
      ? ".*"
      : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
  ).join("/");
  return new RegExp(`^${source}$`);
}

/** The standard methods a resource may serve, in the order an `Allow` lists them. */
export const STANDARD_METHODS = [
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "PATCH",
  "DELETE",
  "OPTIONS",
] as const;

/** Each route's pattern, made once: the routes are fixed, and every unrouted request reads them. */
const routePatterns = new Map<string, RegExp>();

function cachedRoutePattern(route: string): RegExp {
  let pattern = routePatterns.get(route);
  if (pattern === undefined) {
    pattern = routePattern(route);
    routePatterns.set(route, pattern);
  }
  return pattern;
}

/**
 * The answer to a request no route of `app` took: 405 with `Allow` when routes
 * serve its path with other methods (HEAD with GET, as Hono answers it), else
 * 404. Routes for every method (middleware, catch-alls) do not count.
 */
export function noRouteProblem(
  app: { readonly routes: readonly { method: string; path: string }[] },
  method: string,
  path: string,
): ProblemError {
  const allowed = new Set<string>();
  for (const route of app.routes) {
    if (route.method !== "ALL" && cachedRoutePattern(route.path).test(path)) {
      allowed.add(route.method);
    }
  }
  if (allowed.has("GET")) allowed.add("HEAD");
  if (allowed.size === 0 || allowed.has(method)) return notFound(`No resource at ${path}`);
  const allow = [...allowed].sort((a, b) => rank(a) - rank(b));
  return methodNotAllowed(`${path} answers ${allow.join(", ")}, not ${method}`, allow);
}

function rank(method: string): number {
  const position = (STANDARD_METHODS as readonly string[]).indexOf(method);
  return position === -1 ? STANDARD_METHODS.length : position;
}

function userAgent(value: string | undefined): Record<string, string> {
  return value === undefined ? {} : { "user_agent.original": value.slice(0, 200) };
}

const HealthSchema = z.object({ status: z.literal("up"), service: z.string() }).openapi("Health");

const ReadinessSchema = z.object({
  status: z.enum(["ready", "degraded", "not-ready"]),
  checks: z.record(
    z.string(),
    z.object({ status: z.enum(["up", "degraded", "down"]), error: z.string().optional() }),
  ),
  config: z.object({}).catchall(z.unknown()).optional()
    .openapi({ description: "The applied configuration's version, source and pending restarts" }),
}).openapi("Readiness");

const healthRoute = createRoute({
  method: "get",
  path: "/health",
  summary: "Liveness: the process answers",
  tags: ["operations"],
  responses: {
    200: { description: "Alive", content: { "application/json": { schema: HealthSchema } } },
  },
});

const readyRoute = createRoute({
  method: "get",
  path: "/ready",
  summary: "Readiness: every critical dependency is usable",
  tags: ["operations"],
  responses: {
    200: {
      description: "Ready, or degraded with a non-critical dependency down",
      content: { "application/json": { schema: ReadinessSchema } },
    },
    503: {
      description: "A critical dependency is down",
      content: { "application/json": { schema: ReadinessSchema } },
    },
  },
});

const metricsRoute = createRoute({
  method: "get",
  path: "/metrics",
  summary: "Metrics in the Prometheus text format",
  tags: ["operations"],
  responses: {
    200: {
      description: "Every metric of the instance",
      content: { [PROMETHEUS_CONTENT_TYPE]: { schema: z.string() } },
    },
  },
});

/** Maps the 4xx Hono's own validators throw (content type, malformed JSON) onto our problems. */
function clientProblem(error: HTTPException): ProblemError {
  if (error.status === 415) return unsupportedMediaType(error.message);
  if (error.status === 400 && /json/i.test(error.message)) return invalidBody(error.message);
  return new ProblemError({ status: error.status, code: "bad-request", title: error.message });
}

/**
 * Creates the service's Hono app; the service adds its own routes to it, with
 * `app.openapi` so that its `/openapi.json` describes them.
 */
export function createServiceApp(options: ServiceAppOptions): OpenAPIHono<BlankEnv> {
  const { context, readiness = [], readinessTimeoutMs = 2000 } = options;
  const quietRoutes = new Set([...OPERATIONAL_ROUTES, ...options.quietRoutes ?? []]);
  const quietPaths = [...quietRoutes].map(routePattern);
  const isQuiet = (path: string) => quietPaths.some((pattern) => pattern.test(path));
  const { logger, metrics } = context;
  const successLogSampling = options.successLogSampling ?? 1;
  if (!Number.isSafeInteger(successLogSampling) || successLogSampling < 1) {
    throw new RangeError(
      `Cannot create the service app as 'successLogSampling' must be a positive integer: current value is ${successLogSampling}`,
    );
  }
  /**
   * Requests begun here (no caller's trace context) since the last one logged
   * at info; the first one is logged (a service just started shows it works).
   */
  let unloggedRequests = successLogSampling - 1;
  /**
   * Whether a request's line is logged at info when it succeeds, as
   * `request_lines.ts` carries it: 0 not, else the requests it stands for.
   * A caller's decision is followed; a caller's trace without one is logged
   * (someone follows that trace and finds its lines by trace id); a request
   * that begins a trace here is one of `successLogSampling`.
   */
  function requestLinesOneIn(
    traceparent: string | undefined,
    tracestate: string | undefined,
    quiet: boolean,
  ): number {
    if (traceparent !== undefined) return requestLinesOf(tracestate) ?? 1;
    if (successLogSampling === 1 || quiet) return 1;
    if (++unloggedRequests < successLogSampling) return 0;
    unloggedRequests = 0;
    return successLogSampling;
  }
  const bodyLimitBytes = options.bodyLimitBytes ?? 1_048_576;
  const requests = metrics.counter("http_requests_total", "HTTP requests handled.");
  const durations = metrics.histogram(
    "http_request_duration_seconds",
    "Time to handle an HTTP request, until the response headers are ready.",
  );
  const inFlight = metrics.gauge("http_requests_in_flight", "HTTP requests being handled.");
  let active = 0;
  registerProcessMetrics(metrics);
  // Service and instance are the target's labels, set by Prometheus from the registry.
  metrics.gauge("service_info", "Constant 1, labelled with the build's version.").set(
    { version: context.version, deno_version: Deno.version.deno },
    1,
  );

  const configStatus = context.configStatus;
  if (configStatus !== undefined) {
    metrics.gauge(
      "config_info",
      "Constant 1, labelled with the applied configuration's version and where it came from.",
      () => {
        const { version, source } = configStatus();
        return [{ labels: { version, source }, value: 1 }];
      },
    );
    metrics.gauge(
      "config_restart_required",
      "Settings changed in the config service that apply only after a restart.",
      () => [{ labels: {}, value: configStatus().restartRequired.length }],
    );
  }

  const app = createOpenApiApp();
  /** Server spans whose handler threw: their exception is recorded on them. */
  const failedByException = new WeakSet<Span>();

  app.use("*", async function observe(c, next) {
    const started = performance.now();
    const carrier: Record<string, string> = {};
    const traceparent = c.req.header("traceparent");
    const tracestate = c.req.header("tracestate");
    if (traceparent !== undefined) carrier.traceparent = traceparent;
    if (tracestate !== undefined) carrier.tracestate = tracestate;
    inFlight.set({}, ++active);
    const quiet = isQuiet(c.req.path);
    const linesOneIn = requestLinesOneIn(traceparent, tracestate, quiet);
    try {
      const method = c.req.method;
      const url = new URL(c.req.url);
      c.set(REQUEST_URL as never, url as never);
      const handle = async (span: Span | undefined) => {
        await next();
        // A handler that routes by itself (the gateway's table) names the route it chose.
        const chosen: unknown = c.get(HTTP_ROUTE as never);
        const matched = typeof chosen === "string" || c.req.routePath !== "/*";
        const route = typeof chosen === "string" ? chosen : matched ? c.req.routePath : "unmatched";
        const status = c.res.status;
        if (span !== undefined) {
          if (matched) {
            span.updateName(`${method} ${route}`);
            span.setAttribute("http.route", route);
          }
          span.setAttribute("http.response.status_code", status);
          if (status >= 500) {
            // A handler's exception has set its class as the error type (see onError).
            if (!failedByException.has(span)) span.setAttribute("error.type", String(status));
            span.setStatus({ code: SpanStatusCode.ERROR, message: `HTTP ${status}` });
          }
          const { traceId, spanId, traceFlags } = span.spanContext();
          setResponseHeaders(c, { traceresponse: `00-${traceId}-${spanId}-0${traceFlags & 1}` });
        }
        const seconds = (performance.now() - started) / 1000;
        const labels = { method, route, status: String(status) };
        requests.inc(labels);
        durations.observe({ method, route }, seconds);
        const fields = { ...labels, path: c.req.path, durationMs: Math.round(seconds * 1e4) / 10 };
        if (quietRoutes.has(route)) {
          logger.debug("{method} {path} {status}", fields);
        } else if (status >= 400 || linesOneIn === 1) {
          logger.info("{method} {path} {status}", fields);
        } else if (linesOneIn > 1) {
          logger.info("{method} {path} {status}", { ...fields, sampledOneIn: linesOneIn });
        } else if (logsAt(context.name, "debug")) {
          logger.debug("{method} {path} {status}", fields);
        }
      };
      // Probes and heartbeats start no trace of their own: several a second
      // would crowd the traces people look for out of Zipkin and the memory
      // store. A caller's trace context is still continued.
      if (traceparent === undefined && quiet) {
        await handle(undefined);
        return;
      }
      // Named `METHOD route` once the route is known (semantic conventions: never the raw path).
      await inSpan(context.tracer, method, {
        kind: SpanKind.SERVER,
        // The upstream calls made for the request carry the decision on (request_lines.ts).
        parent: withRequestLines(extractTraceContext(carrier), linesOneIn),
        attributes: () => ({
          "http.request.method": method,
          "url.path": c.req.path,
          "url.scheme": url.protocol.replace(":", ""),
          "server.address": url.hostname,
          ...(url.port === "" ? {} : { "server.port": Number(url.port) }),
          ...userAgent(c.req.header("user-agent")),
        }),
      }, handle);
    } finally {
      inFlight.set({}, --active);
    }
  });

  app.use("*", limitBody(bodyLimitBytes));

  const info = {
    title: context.name,
    version: context.version,
    description: options.description ?? `The ${context.name} service`,
  };
  const health = () => ({ status: "up" as const, service: context.name });
  app.openapi(healthRoute, (c) => c.json(health(), 200));
  serveOpenApiDescription(app, info, options.publishDescription);

  const operational = options.management ?? app;
  if (options.management !== undefined) {
    operational.openapi(healthRoute, (c) => c.json(health(), 200));
    serveOpenApiDescription(operational, {
      ...info,
      title: `${context.name} management`,
      description: `The ${context.name} service's management endpoints`,
    });
    operational.notFound((c) =>
      problemResponse(noRouteProblem(operational, c.req.method, c.req.path), c.req.path)
    );
  }

  mountRoute(operational, readyRoute, async (c) => {
    const results = await Promise.all(
      (typeof readiness === "function" ? readiness() : readiness).map(async (check) =>
        [check.name, await runReadinessCheck(check, readinessTimeoutMs)] as const
      ),
    );
    const ready = results.every(([, result]) => result.status !== "down");
    const degraded = results.some(([, result]) => result.status === "degraded");
    return c.json(
      {
        status: ready ? (degraded ? "degraded" : "ready") : "not-ready",
        checks: Object.fromEntries(results),
        ...(configStatus === undefined ? {} : { config: configStatus() }),
      },
      ready ? 200 : 503,
    );
  });

  mountRoute(operational, metricsRoute, async (c) => {
    return c.body(await metrics.render(), 200, { "content-type": PROMETHEUS_CONTENT_TYPE });
  });

  app.notFound((c) => problemResponse(noRouteProblem(app, c.req.method, c.req.path), c.req.path));

  app.onError((error, c) => {
    if (error instanceof ProblemError) return problemResponse(error, c.req.path);
    if (error instanceof HTTPException && error.status < 500) {
      return problemResponse(clientProblem(error), c.req.path);
    }
    const span = trace.getActiveSpan();
    if (span !== undefined) {
      recordError(span, error);
      failedByException.add(span);
    }
    logger.error("Unhandled error on {method} {path}", {
      method: c.req.method,
      path: c.req.path,
      error,
    });
    return problemResponse(internalError(), c.req.path);
  });

  return app;
}
