import type { Hono } from "hono";

export interface HttpServer {
  /** Base URL, e.g. `http://127.0.0.1:8183`. */
  readonly url: string;
  readonly port: number;
  /** Stops accepting connections and waits for requests in progress. */
  shutdown(): Promise<void>;
}

export interface ServeOptions {
  readonly hostname: string;
  /** 0 picks a free port. */
  readonly port: number;
}

export class ListenError extends Error {
  readonly code = "listen";
  constructor(hostname: string, port: number, options: { cause: unknown }) {
    super(
      `Cannot listen on ${hostname}:${port}: ${
        options.cause instanceof Error ? options.cause.message : String(options.cause)
      }`,
      options,
    );
    this.name = "ListenError";
  }
}

export function serveApp(app: Hono, options: ServeOptions): HttpServer {
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: options.hostname,
      port: options.port,
      onListen: () => {},
    }, app.fetch);
  } catch (cause) {
    throw new ListenError(options.hostname, options.port, { cause });
  }
  const { hostname, port } = server.addr;
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  return {
    url: `http://${host}:${port}`,
    port,
    shutdown: () => server.shutdown(),
  };
}
