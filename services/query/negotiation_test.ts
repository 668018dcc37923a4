import assert from "node:assert/strict";
import { negotiate } from "./negotiation.ts";

const V1 = "application/vnd.twitterapi.v1+json";
const V2 = "application/vnd.twitterapi.v2+json";
const JSON_TYPE = "application/json";
const offers = [V2, V1, JSON_TYPE];

Deno.test("negotiate() gives the first offer when Accept is missing or a wildcard", () => {
  assert.equal(negotiate(undefined, offers), V2);
  assert.equal(negotiate("", offers), V2);
  assert.equal(negotiate("*/*", offers), V2);
  assert.equal(negotiate("application/*", offers), V2);
});

Deno.test("negotiate() picks the exact vendor type", () => {
  assert.equal(negotiate(V1, offers), V1);
  assert.equal(negotiate(`${V1}; charset=utf-8`, offers), V1);
  assert.equal(negotiate("APPLICATION/VND.TWITTERAPI.V1+JSON", offers), V1);
});

Deno.test("negotiate() honours quality values", () => {
  assert.equal(negotiate(`${V2};q=0.5, ${V1}`, offers), V1);
  assert.equal(negotiate(`${V1};q=0.1, */*;q=0.9`, offers), V2);
});

Deno.test("negotiate() lets the most specific range decide, including q=0 exclusions", () => {
  assert.equal(negotiate(`${V2};q=0, */*`, offers), V1);
  assert.equal(negotiate(`${V2};q=0, ${V1};q=0, */*`, offers), JSON_TYPE);
});

Deno.test("negotiate() accepts nothing for unknown types", () => {
  assert.equal(negotiate("application/vnd.twitterapi.v3+json", offers), undefined);
  assert.equal(negotiate("text/html", offers), undefined);
  assert.equal(negotiate("garbage", offers), undefined);
});
