import assert from "node:assert/strict";
import { tokenize } from "./tokenize.ts";

// Non-ASCII text is written with escapes (lint rule prefer-ascii):
// \u00e9 is "e acute" (precomposed), \u0301 a combining acute accent,
// \u00ef "i diaeresis", \u6771\u4eac "Tokyo", \u{1f680} and \u{1f389} emoji.

Deno.test("tokenize lower-cases and splits on apostrophes", () => {
  assert.deepEqual(tokenize("Kafka's"), ["kafka", "s"]);
});

Deno.test("tokenize keeps accented letters and splits on hyphens", () => {
  assert.deepEqual(tokenize("Caf\u00e9-au-lait"), ["caf\u00e9", "au", "lait"]);
});

Deno.test("tokenize lower-cases accented capitals", () => {
  assert.deepEqual(tokenize("CAF\u00c9"), ["caf\u00e9"]);
});

Deno.test("tokenize keeps combining marks inside words", () => {
  assert.deepEqual(tokenize("Cafe\u0301 ole\u0301"), ["cafe\u0301", "ole\u0301"]);
});

Deno.test("tokenize keeps non-Latin scripts and digits", () => {
  assert.deepEqual(tokenize("na\u00efve \u6771\u4eac 42"), ["na\u00efve", "\u6771\u4eac", "42"]);
});

Deno.test("tokenize keeps underscores and digits inside words", () => {
  assert.deepEqual(tokenize("snake_case v2 3.14 #100DaysOfCode"), [
    "snake_case",
    "v2",
    "3",
    "14",
    "100daysofcode",
  ]);
});

Deno.test("tokenize returns no terms for null, undefined and empty text", () => {
  assert.deepEqual(tokenize(null), []);
  assert.deepEqual(tokenize(undefined), []);
  assert.deepEqual(tokenize(""), []);
});

Deno.test("tokenize returns no terms for punctuation and whitespace only", () => {
  assert.deepEqual(tokenize("!?... --- \t\n ''"), []);
});

Deno.test("tokenize drops leading and trailing separators", () => {
  assert.deepEqual(tokenize("  ...Hello, World!!  "), ["hello", "world"]);
});

Deno.test("tokenize treats emoji as separators", () => {
  assert.deepEqual(tokenize("\u{1f680}launch\u{1f680} day \u{1f389}"), ["launch", "day"]);
});

Deno.test("tokenize keeps duplicates in order of appearance", () => {
  assert.deepEqual(tokenize("Go go GO"), ["go", "go", "go"]);
});
