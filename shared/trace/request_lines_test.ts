import assert from "node:assert/strict";
import { ROOT_CONTEXT } from "@opentelemetry/api";
import { injectRequestLines, requestLinesOf, withRequestLines } from "./request_lines.ts";

Deno.test("requestLinesOf reads the twitterapi member of a tracestate, and nothing else", () => {
  assert.equal(requestLinesOf(undefined), undefined);
  assert.equal(requestLinesOf("vendor=rl:3"), undefined);
  assert.equal(requestLinesOf("vendor=a, twitterapi=rl:0"), 0);
  assert.equal(requestLinesOf("twitterapi=rl:100,vendor=a"), 100);
  assert.equal(requestLinesOf("twitterapi=rl:-1"), undefined);
  assert.equal(requestLinesOf("twitterapi=something-else"), undefined);
});

Deno.test("injectRequestLines puts the context's choice leftmost, replacing an older one of ours", () => {
  const carrier: Record<string, string> = { tracestate: "a=1,twitterapi=rl:5,b=2" };
  injectRequestLines(carrier, withRequestLines(ROOT_CONTEXT, 0));
  assert.equal(carrier.tracestate, "twitterapi=rl:0,a=1,b=2");
  const fresh: Record<string, string> = {};
  injectRequestLines(fresh, withRequestLines(ROOT_CONTEXT, 100));
  assert.equal(fresh.tracestate, "twitterapi=rl:100");
  const none: Record<string, string> = {};
  injectRequestLines(none, ROOT_CONTEXT);
  assert.deepEqual(none, {});
});

Deno.test("injectRequestLines keeps a tracestate at 32 members", () => {
  const members = Array.from({ length: 32 }, (_, index) => `v${index}=x`);
  const carrier: Record<string, string> = { tracestate: members.join(",") };
  injectRequestLines(carrier, withRequestLines(ROOT_CONTEXT, 1));
  const result = carrier.tracestate!.split(",");
  assert.equal(result.length, 32);
  assert.equal(result[0], "twitterapi=rl:1");
  assert.equal(result.at(-1), "v30=x");
});
