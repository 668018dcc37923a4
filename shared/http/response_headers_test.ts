import assert from "node:assert/strict";
import { Hono } from "hono";
import { setResponseHeaders } from "./response_headers.ts";

Deno.test("setResponseHeaders changes a response with mutable headers in place", async () => {
  let made: Response | undefined;
  const app = new Hono();
  app.use("*", async (c, next) => {
    await next();
    setResponseHeaders(c, { "x-one": "1", "x-two": "2" });
  });
  app.get("/", () => made = new Response("body", { headers: { "x-kept": "yes" } }));
  const response = await app.request("/");
  assert.equal(response, made);
  assert.equal(response.headers.get("x-one"), "1");
  assert.equal(response.headers.get("x-two"), "2");
  assert.equal(response.headers.get("x-kept"), "yes");
  assert.equal(await response.text(), "body");
});

Deno.test("setResponseHeaders copies a response whose headers are immutable", async () => {
  const app = new Hono();
  app.use("*", async (c, next) => {
    await next();
    setResponseHeaders(c, { "x-one": "1" });
  });
  // A redirect's headers are immutable, like those of a fetch answer.
  app.get("/", () => Response.redirect("http://127.0.0.1/elsewhere", 302));
  const response = await app.request("/");
  assert.equal(response.status, 302);
  assert.equal(response.headers.get("location"), "http://127.0.0.1/elsewhere");
  assert.equal(response.headers.get("x-one"), "1");
});
