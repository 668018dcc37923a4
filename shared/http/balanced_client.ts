/**
 * Client-side load balancing: calls a service by name over HTTP, spreading
 * requests over the instances its discovery knows, retrying idempotent
 * requests on another instance, and passively ejecting instances that keep
 * failing.
 *
 * Connections: Deno's fetch keeps connections alive and pools them per origin
 * (one origin per instance). A connection goes back to the pool only once its
 * response body has been read to the end or cancelled, so a caller must
 * consume or cancel the body of every response it gets (`await
 * response.body?.cancel()` when it does not need it). The client does that
 * itself for the attempts it throws away.
 */
import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { Deadlines } from "../async/deadlines.ts";
import { sleep } from "../async/retry.ts";
import type { ServiceDiscovery, ServiceInstance } from "../discovery/service_discovery.ts";
import type { Logger } from "../log/log.ts";
import type { Counter, GaugeSample, MetricsRegistry } from "../metrics/metrics.ts";
import { injectTraceContext, inLeafSpan, type Tracer } from "../trace/tracing.ts";

export type BalancingStrategy = "round-robin" | "least-outstanding";

export interface BalancedClientOptions {
  readonly discovery: ServiceDiscovery;
  /**
   * How an instance is picked: in turn, or the one with the fewest requests
   * awaiting a response (ties taken in turn).
   * @default "least-outstanding"
   */
  readonly strategy?: BalancingStrategy;
  /**
   * Per attempt, until the response headers arrive (up to a tenth later, see
   * `Deadlines`); the body is the caller's. @default 5000
   */
  readonly timeoutMs?: number;
  /**
   * Attempts after the first one, each on another instance when there is
   * one. Only idempotent requests without a stream body are retried, and only
   * after a network error, a timeout or a 502, 503 or 504.
   * @default 2
   */
  readonly retries?: number;
  /** Back-off before the first retry, doubling per retry, with jitter. @default 25 */
  readonly backoffBaseMs?: number;
  /** The longest back-off. @default 500 */
  readonly backoffMaxMs?: number;
  /**
   * Consecutive failures (network errors, timeouts, 5xx) that eject an
   * instance. An instance back from ejection is on probation: its next
   * failure ejects it again, for twice as long; a success clears its record.
   * @default 3
   */
  readonly ejectAfter?: number;
  /** How long a first ejection lasts. @default 10_000 */
  readonly ejectionMs?: number;
  /** The longest ejection, however often an instance is ejected. @default 300_000 */
  readonly maxEjectionMs?: number;
  /**
   * Where `http_client_requests_total`, `http_client_ejections_total` and
   * `http_client_outstanding` are registered; a registry takes one client.
   */
  readonly metrics?: MetricsRegistry;
  /** Warns of ejections. */
  readonly logger?: Logger;
  /**
   * Records each attempt as a CLIENT span; the calling service's tracer.
   * @default the API's global tracer, a no-op that still propagates the caller's context
   */
  readonly tracer?: Tracer;
  /** A monotonic clock in milliseconds, for ejections. @default performance.now */
  readonly now?: () => number;
}

/**
 * The request's own copy of the caller's headers, with the trace context in
 * place of any the caller sent. A list of fields (the gateway's) is copied
 * as a list: `fetch` validates it once, where a `Headers` in between
 * validated every field twice.
 */
function withTraceContext(
  headers: HeadersInit | undefined,
  traceContext: Readonly<Record<string, string>>,
): HeadersInit {
  if (Array.isArray(headers)) {
    const fields: [string, string][] = [];
    for (const field of headers) {
      if (!Object.hasOwn(traceContext, field[0]!.toLowerCase())) {
        fields.push([field[0]!, field[1]!]);
      }
    }
    for (const name in traceContext) fields.push([name, traceContext[name]!]);
    return fields;
  }
  const copy = new Headers(headers);
  for (const name in traceContext) copy.set(name, traceContext[name]!);
  return copy;
}

/** Why `fetch(url, init)` cannot even be built, or undefined when it can. */
function invalidRequest(url: string, init: RequestInit): unknown {
  const method = (init.method ?? "GET").toUpperCase();
  if (init.body !== undefined && init.body !== null && (method === "GET" || method === "HEAD")) {
    return new TypeError(`Cannot send ${method} ${url}: a ${method} request has no body`);
  }
  try {
    // Without the body: a stream body is consumed by the failed attempt already.
    new Request(url, { ...init, body: null, signal: null });
    return undefined;
  } catch (error) {
    return error;
  }
}

/** Host and port of each instance base URL seen, parsed once rather than on every attempt. */
const servers = new Map<string, { readonly hostname: string; readonly port: string }>();

function serverOf(baseUrl: string): { readonly hostname: string; readonly port: string } {
  let server = servers.get(baseUrl);
  if (server === undefined) {
    const { hostname, port } = new URL(baseUrl);
    server = { hostname, port };
    // Bounded: instances come and go with new ports over a long run.
    if (servers.size >= 1000) servers.clear();
    servers.set(baseUrl, server);
  }
  return server;
}

/** `RequestInit`, plus whether a request may be sent more than once. */
export type BalancedRequestInit = RequestInit & {
  /**
   * Whether the request may be retried.
   * @default true for GET, HEAD, OPTIONS, PUT and DELETE; false otherwise
   */
  idempotent?: boolean;
};

/** How `fetch` ended, the `outcome` label of `http_client_requests_total`. */
export type RequestOutcome =
  | "ok"
  | "server-error"
  | "upstream-failed"
  | "no-instance"
  | "aborted"
  | "error";

/** One attempt that got no usable response. */
export type FailedAttempt =
  & { readonly instanceId: string; readonly url: string }
  & (
    | { readonly failure: "status"; readonly status: number }
    | { readonly failure: "network" | "timeout"; readonly cause: unknown }
  );

export class NoInstanceError extends Error {
  readonly code = "no-instance";
  constructor(readonly service: string, method: string, path: string) {
    super(`Cannot call ${service} ${method} ${path}: no instance is known`);
    this.name = "NoInstanceError";
  }
}

export class UpstreamError extends Error {
  readonly code = "upstream-failed";
  /** The last attempt's status, when it got a response. */
  readonly status: number | undefined;

  constructor(
    readonly service: string,
    method: string,
    path: string,
    readonly attempts: readonly FailedAttempt[],
  ) {
    const last = attempts.at(-1);
    const count = attempts.length === 1 ? "1 attempt" : `${attempts.length} attempts`;
    super(
      `Cannot call ${service} ${method} ${path}: ${count} failed, the last ${describe(last)}`,
      last === undefined || last.failure === "status" ? undefined : { cause: last.cause },
    );
    this.name = "UpstreamError";
    this.status = last?.failure === "status" ? last.status : undefined;
  }
}

function describe(attempt: FailedAttempt | undefined): string {
  if (attempt === undefined) return "unknown";
  switch (attempt.failure) {
    case "status":
      return `with status ${attempt.status} from ${attempt.instanceId}`;
    case "timeout":
    case "network": {
      const what = attempt.failure === "timeout" ? "timed out" : "with a network error";
      const cause = attempt.cause instanceof Error ? attempt.cause.message : String(attempt.cause);
      return `${what} at ${attempt.instanceId}: ${cause}`;
    }
  }
}

const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set([
  "GET",
  "HEAD",
  "OPTIONS",
  "PUT",
  "DELETE",
]);
const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([502, 503, 504]);

interface InstanceState {
  /** Requests sent and awaiting their response headers. */
  outstanding: number;
  consecutiveFailures: number;
  /** Ejections since the last success, doubling the next one's length. */
  ejections: number;
  ejectedUntil: number;
}

interface ResolvedOptions {
  readonly strategy: BalancingStrategy;
  readonly timeoutMs: number;
  readonly retries: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  readonly ejectAfter: number;
  readonly ejectionMs: number;
  readonly maxEjectionMs: number;
}

function resolveOptions(options: BalancedClientOptions): ResolvedOptions {
  const {
    strategy = "least-outstanding",
    timeoutMs = 5000,
    retries = 2,
    backoffBaseMs = 25,
    backoffMaxMs = 500,
    ejectAfter = 3,
    ejectionMs = 10_000,
    maxEjectionMs = 300_000,
  } = options;
  const fail = (name: string, rule: string, value: unknown): never => {
    throw new RangeError(
      `Cannot create balanced client as '${name}' must be ${rule}: current value is ${value}`,
    );
  };
  if (strategy !== "round-robin" && strategy !== "least-outstanding") {
    fail("strategy", "'round-robin' or 'least-outstanding'", strategy);
  }
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) fail("timeoutMs", "positive", timeoutMs);
  if (!(Number.isSafeInteger(retries) && retries >= 0)) {
    fail("retries", "a non-negative integer", retries);
  }
  if (!(Number.isSafeInteger(ejectAfter) && ejectAfter > 0)) {
    fail("ejectAfter", "a positive integer", ejectAfter);
  }
  const durations = { backoffBaseMs, backoffMaxMs, ejectionMs, maxEjectionMs };
  for (const [name, value] of Object.entries(durations)) {
    if (!(Number.isFinite(value) && value >= 0)) fail(name, "a non-negative number", value);
  }
  return {
    strategy,
    timeoutMs,
    retries,
    backoffBaseMs,
    backoffMaxMs,
    ejectAfter,
    ejectionMs,
    maxEjectionMs,
  };
}

/**
 * A discovery-aware HTTP client: `fetch(service, path)` picks an instance of
 * `service` for every attempt, propagates the trace context and records each
 * attempt as a CLIENT span.
 */
export class BalancedClient {
  readonly #discovery: ServiceDiscovery;
  readonly #options: ResolvedOptions;
  readonly #logger: Logger | undefined;
  readonly #tracer: Tracer;
  readonly #now: () => number;
  /** Per service, per instance id. */
  readonly #states = new Map<string, Map<string, InstanceState>>();
  readonly #cursors = new Map<string, number>();
  /** Per service, the instance list its states were last made to match exactly. */
  readonly #reconciled = new Map<string, readonly ServiceInstance[]>();
  readonly #requests: Counter | undefined;
  readonly #ejections: Counter | undefined;
  /** The attempts' timeouts, one timer for all. */
  readonly #timeouts: Deadlines;

  constructor(options: BalancedClientOptions) {
    this.#discovery = options.discovery;
    this.#options = resolveOptions(options);
    this.#timeouts = new Deadlines(this.#options.timeoutMs);
    this.#logger = options.logger;
    this.#tracer = options.tracer ?? trace.getTracer("twitterapi");
    this.#now = options.now ?? (() => performance.now());
    const { metrics } = options;
    if (metrics !== undefined) {
      this.#requests = metrics.counter(
        "http_client_requests_total",
        "Calls through the balanced HTTP client, by upstream service and outcome.",
      );
      this.#ejections = metrics.counter(
        "http_client_ejections_total",
        "Instances ejected after consecutive failures, by upstream service.",
      );
      metrics.gauge(
        "http_client_outstanding",
        "Requests sent and awaiting response headers, by upstream service and instance.",
        () => this.#outstandingSamples(),
      );
    }
  }

  /**
   * Calls `path` (from the leading slash, with any query) on an instance of
   * `service`. Resolves with the first response that is not a retryable
   * failure, 4xx and 500 included; the caller must consume or cancel its
   * body. A request with a stream body is sent once, and never retried.
   *
   * @throws {NoInstanceError} when discovery knows no instance of `service`
   * @throws {UpstreamError} when every attempt failed
   * @throws the abort reason when `init.signal` aborts
   */
  async fetch(
    service: string,
    path: string,
    init: BalancedRequestInit = {},
  ): Promise<Response> {
    try {
      const response = await this.#call(service, path, init);
      this.#requests?.inc({
        upstream: service,
        outcome: response.status >= 500 ? "server-error" : "ok",
      });
      return response;
    } catch (error) {
      this.#requests?.inc({ upstream: service, outcome: outcomeOf(error, init.signal) });
      throw error;
    }
  }

  async #call(service: string, path: string, init: BalancedRequestInit): Promise<Response> {
    const { idempotent, ...requestInit } = init;
    const method = (requestInit.method ?? "GET").toUpperCase();
    if (!path.startsWith("/")) {
      throw new TypeError(
        `Cannot call ${service} ${method} ${path}: the path must start with '/'`,
      );
    }
    const signal = requestInit.signal ?? undefined;
    signal?.throwIfAborted();
    const retryable = (idempotent ?? IDEMPOTENT_METHODS.has(method)) &&
      !(requestInit.body instanceof ReadableStream);
    const attempts = retryable ? this.#options.retries + 1 : 1;

    const instances = await this.#discovery.instances(service);
    if (instances.length === 0) throw new NoInstanceError(service, method, path);
    const states = this.#statesOf(service, instances);
    const failures: FailedAttempt[] = [];
    const tried = new Set<string>();
    for (let attempt = 0; attempt < attempts; attempt++) {
      if (attempt > 0) {
        await sleep(this.#backoffMs(attempt), signal);
        signal?.throwIfAborted();
      }
      const instance = this.#pick(service, instances, states, tried);
      tried.add(instance.instanceId);
      const result = await this.#attempt(service, instance, instances, states, {
        method,
        path,
        init: requestInit,
        attempt,
      });
      if (result instanceof Response) return result;
      failures.push(result);
    }
    throw new UpstreamError(service, method, path, failures);
  }

  /** One attempt on one instance: a response, or why there is none worth returning. */
  #attempt(
    service: string,
    instance: ServiceInstance,
    instances: readonly ServiceInstance[],
    states: Map<string, InstanceState>,
    request: { method: string; path: string; init: RequestInit; attempt: number },
  ): Promise<Response | FailedAttempt> {
    const { method, path, init, attempt } = request;
    const url = instance.baseUrl + path;
    const state = states.get(instance.instanceId)!;
    const attributes = () => {
      const { hostname, port } = serverOf(instance.baseUrl);
      return {
        "http.request.method": method,
        "url.full": url,
        "server.address": hostname,
        ...(port === "" ? {} : { "server.port": Number(port) }),
        "peer.service": service,
        "peer.service.instance_id": instance.instanceId,
        ...(attempt > 0 ? { "http.request.resend_count": attempt } : {}),
      };
    };
    return inLeafSpan(
      this.#tracer,
      `${method} ${service}`,
      { kind: SpanKind.CLIENT, attributes },
      async (span, spanContext) => {
        const timeout = new AbortController();
        const callerSignal = init.signal ?? undefined;
        const signal = callerSignal === undefined
          ? timeout.signal
          : AbortSignal.any([callerSignal, timeout.signal]);
        const headers = withTraceContext(init.headers, injectTraceContext({}, spanContext));
        // Not a `Request` built first: `fetch` would build a second one from it (a tenth
        // of the gateway's CPU). An invalid request is told apart once `fetch` has failed.
        const outgoing: RequestInit = { ...init, method, signal, headers };
        const attemptDone = this.#timeouts.start(() => {
          timeout.abort(
            new DOMException(`No response within ${this.#options.timeoutMs} ms`, "TimeoutError"),
          );
        });
        state.outstanding += 1;
        let response: Response;
        try {
          response = await fetch(url, outgoing);
        } catch (cause) {
          if (callerSignal?.aborted) throw callerSignal.reason;
          // An invalid request throws as itself rather than passing for a network failure.
          const invalid = invalidRequest(url, outgoing);
          if (invalid !== undefined) throw invalid;
          const failure = timeout.signal.aborted ? "timeout" : "network";
          this.#recordFailure(service, instance, instances, states);
          span.setAttribute("error.type", failure);
          span.setStatus({ code: SpanStatusCode.ERROR });
          return { instanceId: instance.instanceId, url, failure, cause };
        } finally {
          attemptDone();
          state.outstanding -= 1;
        }
        const { status } = response;
        span.setAttribute("http.response.status_code", status);
        if (status >= 400) span.setStatus({ code: SpanStatusCode.ERROR });
        if (status < 500) {
          state.consecutiveFailures = 0;
          state.ejections = 0;
          return response;
        }
        this.#recordFailure(service, instance, instances, states);
        if (!RETRYABLE_STATUSES.has(status)) return response;
        // Cancelling a small body that has arrived keeps the connection pooled.
        await response.body?.cancel();
        return { instanceId: instance.instanceId, url, failure: "status", status };
      },
    );
  }

  #statesOf(service: string, instances: readonly ServiceInstance[]): Map<string, InstanceState> {
    let states = this.#states.get(service);
    if (states === undefined) {
      states = new Map();
      this.#states.set(service, states);
    }
    // The same list as last time, with no state left over to drop then: nothing to do.
    if (this.#reconciled.get(service) === instances) return states;
    const known = new Set(instances.map((instance) => instance.instanceId));
    const now = this.#now();
    for (const [instanceId, state] of states) {
      if (!known.has(instanceId) && state.outstanding === 0 && state.ejectedUntil <= now) {
        states.delete(instanceId);
      }
    }
    for (const instanceId of known) {
      if (!states.has(instanceId)) {
        states.set(instanceId, {
          outstanding: 0,
          consecutiveFailures: 0,
          ejections: 0,
          ejectedUntil: 0,
        });
      }
    }
    if (states.size === known.size) this.#reconciled.set(service, instances);
    else this.#reconciled.delete(service);
    return states;
  }

  /**
   * The instance for the next attempt: never an ejected one unless all are
   * (then any), and one not tried yet by this call when there is one.
   */
  #pick(
    service: string,
    instances: readonly ServiceInstance[],
    states: Map<string, InstanceState>,
    tried: ReadonlySet<string>,
  ): ServiceInstance {
    const now = this.#now();
    const stateOf = (instance: ServiceInstance) => states.get(instance.instanceId)!;
    const healthy = instances.filter((instance) => stateOf(instance).ejectedUntil <= now);
    const pool = healthy.length > 0 ? healthy : instances;
    const untried = pool.filter((instance) => !tried.has(instance.instanceId));
    let candidates = untried.length > 0 ? untried : pool;
    if (this.#options.strategy === "least-outstanding") {
      const fewest = Math.min(...candidates.map((instance) => stateOf(instance).outstanding));
      candidates = candidates.filter((instance) => stateOf(instance).outstanding === fewest);
    }
    const cursor = this.#cursors.get(service) ?? 0;
    this.#cursors.set(service, (cursor + 1) % Number.MAX_SAFE_INTEGER);
    return candidates[cursor % candidates.length]!;
  }

  /** Counts a failure and ejects the instance if it has failed too often, unless it is the last. */
  #recordFailure(
    service: string,
    instance: ServiceInstance,
    instances: readonly ServiceInstance[],
    states: Map<string, InstanceState>,
  ): void {
    const state = states.get(instance.instanceId)!;
    state.consecutiveFailures += 1;
    const now = this.#now();
    if (state.consecutiveFailures < this.#options.ejectAfter || state.ejectedUntil > now) return;
    const othersHealthy = instances.some((other) =>
      other.instanceId !== instance.instanceId &&
      (states.get(other.instanceId)?.ejectedUntil ?? 0) <= now
    );
    if (!othersHealthy) return;
    state.ejections += 1;
    const ejectionMs = Math.min(
      this.#options.maxEjectionMs,
      this.#options.ejectionMs * 2 ** (state.ejections - 1),
    );
    state.ejectedUntil = now + ejectionMs;
    this.#ejections?.inc({ upstream: service });
    this.#logger?.warn(
      "Ejecting {service} instance {instanceId} for {ejectionMs} ms after {failures} consecutive failures",
      {
        service,
        instanceId: instance.instanceId,
        ejectionMs,
        failures: state.consecutiveFailures,
      },
    );
  }

  /** Equal jitter: between half the ceiling and the ceiling, which doubles per retry. */
  #backoffMs(retry: number): number {
    const { backoffBaseMs, backoffMaxMs } = this.#options;
    const ceiling = Math.min(backoffMaxMs, backoffBaseMs * 2 ** (retry - 1));
    return Math.round(ceiling / 2 + Math.random() * ceiling / 2);
  }

  #outstandingSamples(): GaugeSample[] {
    return [...this.#states].flatMap(([service, states]) =>
      [...states].map(([instance, state]) => ({
        labels: { upstream: service, upstream_instance: instance },
        value: state.outstanding,
      }))
    );
  }
}

function outcomeOf(error: unknown, signal: AbortSignal | null | undefined): RequestOutcome {
  if (error instanceof NoInstanceError) return "no-instance";
  if (error instanceof UpstreamError) return "upstream-failed";
  if (signal?.aborted) return "aborted";
  return "error";
}
