/** Real HTTP servers on loopback, for tests of HTTP clients. */

export interface ReceivedRequest {
  readonly method: string;
  /** Path and query, e.g. `/search?q=deno`. */
  readonly path: string;
  readonly headers: Headers;
  /** The client's TCP port: one per connection, so distinct ports count connections. */
  readonly remotePort: number;
}

export interface TestServer extends AsyncDisposable {
  /** Base URL without a trailing slash: `http://127.0.0.1:40123`. */
  readonly url: string;
  /** Every request received so far, in arrival order. */
  readonly requests: readonly ReceivedRequest[];
  /** Stops accepting connections and waits for requests in progress; safe to call twice. */
  shutdown(): Promise<void>;
}

export type TestHandler = (request: Request) => Response | Promise<Response>;

/** Serves `handler` on 127.0.0.1 and a free port, recording every request. */
export function startTestServer(
  handler: TestHandler = () => new Response("ok"),
): TestServer {
  const requests: ReceivedRequest[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (request, info) => {
      const url = new URL(request.url);
      requests.push({
        method: request.method,
        path: url.pathname + url.search,
        headers: request.headers,
        remotePort: info.remoteAddr.port,
      });
      return handler(request);
    },
  );
  let stopped: Promise<void> | undefined;
  const shutdown = () => stopped ??= server.shutdown();
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}
