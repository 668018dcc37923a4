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

export interface KillableRelay extends AsyncDisposable {
  /** Base URL of the relay, to register instead of the server's. */
  readonly url: string;
  /** Connections tried after `kill`: each is accepted and closed at once. */
  readonly attemptsAfterKill: number;
  /**
   * Simulates a crash of the server behind: cuts every open connection
   * mid-request, and from then on closes every new one unanswered. The
   * server behind keeps running; only the relay's clients see the crash.
   */
  kill(): void;
  /** Relays new connections again after `kill`, as if the server had restarted. */
  revive(): void;
  /** Kills the relay and stops listening; safe to call twice. */
  close(): Promise<void>;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Closed already.
  }
}

/**
 * A TCP relay on 127.0.0.1 in front of `targetUrl`, which a test kills to
 * make the server look crashed (Deno.serve itself can only shut down
 * gracefully, answering the requests in progress).
 */
export function startKillableRelay(targetUrl: string): KillableRelay {
  const target = new URL(targetUrl);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const relaying = new Set<Promise<void>>();
  let killed = false;
  let attemptsAfterKill = 0;

  async function relay(client: Deno.Conn): Promise<void> {
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect({ hostname: target.hostname, port: Number(target.port) });
    } catch {
      return closeQuietly(client);
    }
    if (killed) {
      closeQuietly(upstream);
      return closeQuietly(client);
    }
    open.add(client).add(upstream);
    await Promise.allSettled([
      client.readable.pipeTo(upstream.writable),
      upstream.readable.pipeTo(client.writable),
    ]);
    for (const conn of [client, upstream]) {
      open.delete(conn);
      closeQuietly(conn);
    }
  }

  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        if (killed) {
          attemptsAfterKill += 1;
          closeQuietly(conn);
        } else {
          const relayed = relay(conn).finally(() => relaying.delete(relayed));
          relaying.add(relayed);
        }
      }
    } catch {
      // The listener was closed.
    }
  })();

  function kill(): void {
    killed = true;
    for (const conn of open) closeQuietly(conn);
    open.clear();
  }

  let closed: Promise<void> | undefined;
  function revive(): void {
    if (closed === undefined) killed = false;
  }

  const close = () =>
    closed ??= (async () => {
      kill();
      try {
        listener.close();
      } catch {
        // Closed already.
      }
      await accepting;
      await Promise.all(relaying);
    })();

  return {
    url: `http://127.0.0.1:${listener.addr.port}`,
    get attemptsAfterKill() {
      return attemptsAfterKill;
    },
    kill,
    revive,
    close,
    [Symbol.asyncDispose]: close,
  };
}
