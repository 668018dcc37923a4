/**
 * The proxying step of a route: the request goes to an instance of the
 * route's service through the balanced client and the service's circuit
 * breaker, with its method, path, query, body and end-to-end headers
 * unchanged, and the forwarding headers added. Bodies stream both ways.
 * When the service cannot answer, the client gets a 503 problem, never
 * invented data.
 */
import type { Context } from "hono";
import { getConnInfo } from "hono/deno";
import {
  type BalancedClient,
  NoInstanceError,
  UpstreamError,
} from "../../shared/http/balanced_client.ts";
import { methodNotAllowed, ProblemError, problemResponse } from "../../shared/http/problem.ts";
import { requestUrl, STANDARD_METHODS } from "../../shared/http/service_app.ts";
import type { Logger } from "../../shared/log/log.ts";
import { CircuitOpenError, type ServiceBreakers } from "./breaker.ts";
import { type GatewayRoute, upstreamPath } from "./routes.ts";

/** RFC 9110 section 7.6.1, plus the legacy `Proxy-Connection`. */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** The body is re-framed on each hop. */
const REFRAMED: ReadonlySet<string> = new Set(["content-length"]);

/** Fields the gateway sets itself upstream. */
const REPLACED_UPSTREAM: ReadonlySet<string> = new Set([
  ...REFRAMED,
  "host",
  "forwarded",
  "x-forwarded-for",
  "x-forwarded-host",
  "x-forwarded-proto",
  "x-forwarded-prefix",
]);

/**
 * Methods `fetch` refuses to send (the Fetch standard's forbidden methods,
 * matched case-insensitively), so the gateway cannot forward them: it answers
 * 405 itself rather than failing on the call.
 */
const UNFORWARDABLE_METHODS: ReadonlySet<string> = new Set(["CONNECT", "TRACE", "TRACK"]);

/**
 * The `Allow` of that 405: the standard methods the gateway forwards. Which of
 * them the resource serves is the upstream's to answer.
 */
const FORWARDED_METHODS = STANDARD_METHODS;

/** Statuses whose response has no body. */
const NULL_BODY_STATUSES: ReadonlySet<number> = new Set([101, 103, 204, 205, 304]);

/** The fields `Connection` names (lower-case), which are hop-by-hop too. */
function connectionOptions(headers: Headers): string[] {
  const connection = headers.get("connection");
  if (connection === null) return [];
  return connection.split(",").map((name) => name.trim().toLowerCase()).filter((name) =>
    name !== ""
  );
}

/** Removes the hop-by-hop fields from `headers`, those named by `Connection` included. */
function dropHopByHop(headers: Headers): Headers {
  for (const name of connectionOptions(headers)) headers.delete(name);
  // Per request on the hot path: only the fields present cost a delete.
  for (const name of HOP_BY_HOP) if (headers.has(name)) headers.delete(name);
  // The body is re-framed on each hop.
  headers.delete("content-length");
  return headers;
}

/**
 * The end-to-end fields of `headers` as a list, without those in `also`: read
 * in one pass, as `fetch` takes them (a `Headers` copy in between validated
 * every field once more).
 */
export function endToEndFields(
  headers: Headers,
  also: ReadonlySet<string> = REFRAMED,
): [string, string][] {
  const listed = connectionOptions(headers);
  const fields: [string, string][] = [];
  for (const field of headers) {
    const name = field[0];
    if (!HOP_BY_HOP.has(name) && !also.has(name) && !listed.includes(name)) fields.push(field);
  }
  return fields;
}

export interface ForwardedFrom {
  /** The peer address of the client's connection. */
  readonly clientAddress: string;
  /** The `Host` the client asked for. */
  readonly host: string;
  /** `http` or `https`. */
  readonly proto: string;
  /** The path prefix the gateway removed or replaced, when it rewrote the path. */
  readonly prefix?: string;
}

/** A `Forwarded` value (RFC 7239): a token, or a quoted string when it is not one. */
function forwardedValue(value: string): string {
  return /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(value)
    ? value
    : `"${value.replace(/["\\]/g, (char) => `\\${char}`)}"`;
}

/** The fields sent upstream: the client's end-to-end fields, and the forwarding fields. */
export function upstreamHeaders(incoming: Headers, from: ForwardedFrom): [string, string][] {
  const fields = endToEndFields(incoming, REPLACED_UPSTREAM);
  const node = from.clientAddress.includes(":") ? `[${from.clientAddress}]` : from.clientAddress;
  const element = `for=${forwardedValue(node)};host=${forwardedValue(from.host)};proto=${
    forwardedValue(from.proto)
  }`;
  const forwarded = incoming.get("forwarded");
  const forwardedFor = incoming.get("x-forwarded-for");
  fields.push(
    ["forwarded", forwarded === null ? element : `${forwarded}, ${element}`],
    [
      "x-forwarded-for",
      forwardedFor === null ? from.clientAddress : `${forwardedFor}, ${from.clientAddress}`,
    ],
    ["x-forwarded-host", from.host],
    ["x-forwarded-proto", from.proto],
  );
  if (from.prefix !== undefined) fields.push(["x-forwarded-prefix", from.prefix]);
  return fields;
}

export function clientAddress(c: Context): string {
  try {
    return getConnInfo(c).remote.address ?? "unknown";
  } catch {
    // Not served by Deno.serve (app.request in tests): no connection info.
    return "unknown";
  }
}

/** The fallback answer: the service cannot answer now. */
export function upstreamUnavailable(
  service: string,
  reason: string,
  retryAfterSec: number,
): ProblemError {
  return new ProblemError({
    status: 503,
    code: "upstream-unavailable",
    title: "Upstream service unavailable",
    detail: `The ${service} service is unavailable: ${reason}`,
    extensions: { service },
    headers: { "retry-after": String(retryAfterSec) },
  });
}

function failureReason(error: unknown): string | undefined {
  if (error instanceof CircuitOpenError) return "its circuit is open after repeated failures";
  if (error instanceof NoInstanceError) return "no instance is registered";
  if (error instanceof UpstreamError) {
    const last = error.attempts.at(-1);
    if (last?.failure === "timeout") return "it did not answer in time";
    if (last?.failure === "status") return `it answered ${last.status}`;
    return "it cannot be reached";
  }
  return undefined;
}

/**
 * The request body as forwarded, and the signal of the upstream call: when
 * reading the body fails (over the body limit, or the client went away
 * mid-upload), the signal aborts the call, so the failure is the client's and
 * counts against neither the instance nor the breaker; the error itself goes
 * to `onError`.
 */
function forwardedBody(
  body: ReadableStream<Uint8Array>,
  onError: (error: unknown) => void,
): { readonly body: ReadableStream<Uint8Array>; readonly signal: AbortSignal } {
  const failed = new AbortController();
  const reader = body.getReader();
  const forwarded = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) return controller.close();
        controller.enqueue(value);
      } catch (error) {
        onError(error);
        failed.abort(new DOMException("The client's request body failed", "AbortError"));
        controller.error(error);
      }
    },
    cancel: (reason) => reader.cancel(reason),
  });
  return { body: forwarded, signal: failed.signal };
}

/** The kernel's 413 for a body over the limit; a 400 for a body the client cut short. */
function clientBodyProblem(error: unknown): ProblemError {
  if (error instanceof ProblemError) return error;
  return new ProblemError({
    status: 400,
    code: "incomplete-body",
    title: "Incomplete request body",
    detail: "The request body failed before it was forwarded: " +
      (error instanceof Error ? error.message : String(error)),
  });
}

export interface ProxyOptions {
  readonly route: GatewayRoute;
  readonly client: BalancedClient;
  readonly breakers: ServiceBreakers;
  readonly logger: Logger;
}

/** The Hono handler that ends a route's chain: forwards the request and streams the answer. */
export function proxy(options: ProxyOptions) {
  const { route, client, breakers, logger } = options;
  const { service } = route;

  return async function proxyHandler(c: Context): Promise<Response> {
    const request = c.req.raw;
    if (UNFORWARDABLE_METHODS.has(request.method.toUpperCase())) {
      await request.body?.cancel();
      throw methodNotAllowed(
        `The gateway does not forward ${request.method} requests`,
        FORWARDED_METHODS,
      );
    }
    const url = requestUrl(c);
    const path = upstreamPath(route, url.pathname);
    const headers = upstreamHeaders(request.headers, {
      clientAddress: clientAddress(c),
      host: request.headers.get("host") ?? url.host,
      proto: url.protocol.replace(/:$/, ""),
      ...(route.rewrite === undefined ? {} : { prefix: route.prefix }),
    });
    const method = request.method;
    let bodyError: { readonly error: unknown } | undefined;
    // Only a body can fail mid-upload: most proxied calls are GETs, and need no abort for it.
    const clientBody = method === "GET" || method === "HEAD" ? null : request.body;
    const upload = clientBody === null
      ? undefined
      : forwardedBody(clientBody, (error) => bodyError = { error });
    let upstream: Response;
    try {
      upstream = await breakers.call(service, () =>
        client.fetch(service, path + url.search, {
          method,
          headers,
          redirect: "manual",
          // Not the request's signal: Deno aborts it once a response is sent, which would cut
          // a streamed body short. A client that goes away cancels the response body instead.
          // Without a body nothing can fail on the client's side (and the client's timeout
          // then needs no signal combined with this one).
          ...(upload === undefined ? {} : { body: upload.body, signal: upload.signal }),
        }));
    } catch (error) {
      if (bodyError !== undefined) throw clientBodyProblem(bodyError.error);
      const reason = failureReason(error);
      if (reason === undefined) throw error;
      if (!(error instanceof CircuitOpenError)) {
        logger.warn("Cannot proxy {method} {path} to {service}: {reason}", {
          method,
          path,
          service,
          reason,
          error,
        });
      }
      return problemResponse(
        upstreamUnavailable(service, reason, route.fallback.retryAfterSec),
        url.pathname,
      );
    }
    const body = NULL_BODY_STATUSES.has(upstream.status) ? null : upstream.body;
    if (body === null) await upstream.body?.cancel();
    // The response copies the upstream's headers once; the hop-by-hop ones go from that copy.
    const response = new Response(body, {
      status: upstream.status,
      statusText: upstream.statusText,
      headers: upstream.headers,
    });
    dropHopByHop(response.headers);
    return response;
  };
}
