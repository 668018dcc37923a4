/**
 * The physical limit of a proxy on this runtime, for `bench:gateway`: a bare
 * `Deno.serve` + `fetch` pass-through to one upstream, with no auth, no rate
 * limit, no breaker, no logging, no tracing. Only what any correct proxy
 * must do: drop the hop-by-hop fields and stream both bodies.
 *
 * `deno run --allow-net bare_proxy.ts <port> <upstream origin>`
 */
const [portArgument, upstream] = Deno.args;
if (portArgument === undefined || upstream === undefined) {
  throw new Error("Usage: bare_proxy.ts <port> <upstream origin, e.g. http://127.0.0.1:8080>");
}

Deno.serve({ hostname: "127.0.0.1", port: Number(portArgument), onListen() {} }, (request) => {
  const url = new URL(request.url);
  const headers = new Headers(request.headers);
  headers.delete("host");
  headers.delete("connection");
  return fetch(upstream + url.pathname + url.search, {
    method: request.method,
    headers,
    body: request.body,
    redirect: "manual",
  });
});
