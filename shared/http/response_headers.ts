/**
 * Sets fields on the response a handler has already made, as a middleware
 * does after `next()`. Hono's `c.header` then copies the whole response for
 * every field it sets (a new `Response`, its headers included): three fields
 * on a proxied request were three copies. A response with mutable headers
 * (one built with `new Response`, as handlers and the gateway's proxy make
 * them) is changed in place; only one whose headers are immutable (a `fetch`
 * answer returned as it is) goes through `c.header`'s copies.
 */
import type { Context } from "hono";

export function setResponseHeaders(c: Context, fields: Readonly<Record<string, string>>): void {
  try {
    for (const name in fields) c.res.headers.set(name, fields[name]!);
  } catch (error) {
    // Deno throws a TypeError for a write to immutable headers, before changing any.
    if (!(error instanceof TypeError)) throw error;
    for (const name in fields) c.header(name, fields[name]!);
  }
}
