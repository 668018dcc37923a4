/**
 * `fetch` as a CLIENT span of the calling service, carrying the trace
 * context (`traceparent`) to the server: for calls that do not go through
 * the load-balanced client, like a call to one known instance.
 */
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { injectTraceContext, inSpan, type Tracer } from "../trace/tracing.ts";

export interface TracedFetchOptions extends RequestInit {
  /** The called service's name, in the span's name and `peer.service`. */
  readonly peerService?: string;
}

export function tracedFetch(
  tracer: Tracer,
  url: string,
  options: TracedFetchOptions = {},
): Promise<Response> {
  const { peerService, ...init } = options;
  const method = (init.method ?? "GET").toUpperCase();
  const { hostname, port } = new URL(url);
  const attributes = {
    "http.request.method": method,
    "url.full": url,
    "server.address": hostname,
    ...(port === "" ? {} : { "server.port": Number(port) }),
    ...(peerService === undefined ? {} : { "peer.service": peerService }),
  };
  const name = peerService === undefined ? method : `${method} ${peerService}`;
  return inSpan(tracer, name, { kind: SpanKind.CLIENT, attributes }, async (span) => {
    const headers = new Headers(init.headers);
    for (const [key, value] of Object.entries(injectTraceContext({}))) headers.set(key, value);
    const response = await fetch(url, { ...init, method, headers });
    span.setAttribute("http.response.status_code", response.status);
    if (response.status >= 500) {
      span.setAttribute("error.type", String(response.status));
      span.setStatus({ code: SpanStatusCode.ERROR, message: `HTTP ${response.status}` });
    }
    return response;
  });
}
