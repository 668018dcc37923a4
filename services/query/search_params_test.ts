import assert from "node:assert/strict";
import { ProblemError } from "../../shared/http/problem.ts";
import { encodeCursor } from "../../shared/search_index/cursor.ts";
import { isEntityId, parseSearchParams } from "./search_params.ts";

const limits = { defaultPageSize: 20, maxPageSize: 100 };
const parse = (query: string) => parseSearchParams(new URLSearchParams(query), limits);

function problemOf(query: string): ProblemError {
  try {
    parse(query);
  } catch (error) {
    if (error instanceof ProblemError) return error;
    throw error;
  }
  throw new Error(`'${query}' was accepted`);
}

Deno.test("parseSearchParams() applies the default page size", () => {
  assert.deepEqual(parse(""), { size: 20 });
});

Deno.test("parseSearchParams() reads every parameter", () => {
  const cursor = encodeCursor({ createdAt: 1700000000000, id: "42" });
  assert.deepEqual(
    parse(
      `text=Kafka&userId=9223372036854775807&from=2026-11-01&to=2026-11-02&size=100&cursor=${cursor}`,
    ),
    {
      size: 100,
      text: "Kafka",
      userId: "9223372036854775807",
      from: Date.UTC(2026, 10, 1),
      to: Date.UTC(2026, 10, 3) - 1,
      after: { createdAt: 1700000000000, id: "42" },
    },
  );
});

Deno.test("parseSearchParams() reads date-times with offsets", () => {
  assert.equal(parse("from=2026-11-24T10:00:00%2B01:00").from, Date.UTC(2026, 10, 24, 9));
  assert.equal(parse("to=2026-11-24T10:00:00.5Z").to, Date.UTC(2026, 10, 24, 10, 0, 0, 500));
});

Deno.test("parseSearchParams() names each invalid parameter in one 400", () => {
  const problem = problemOf("text=&userId=-1&from=yesterday&size=0&cursor=zzz");
  assert.equal(problem.status, 400);
  assert.equal(problem.code, "invalid-parameter");
  assert.deepEqual(
    (problem.extensions.errors as { parameter: string }[]).map((error) => error.parameter),
    ["text", "userId", "from", "size", "cursor"],
  );
});

Deno.test("parseSearchParams() rejects out-of-range and malformed values", () => {
  for (
    const [query, parameter] of [
      ["text=%20%20", "text"],
      ["text=!!!", "text"],
      [`text=${"a".repeat(501)}`, "text"],
      ["userId=9223372036854775808", "userId"],
      ["userId=12abc", "userId"],
      ["from=2026-02-30", "from"],
      ["to=2026-11-24T10:00:00", "to"],
      ["from=2026-11-02&to=2026-11-01", "to"],
      ["size=101", "size"],
      ["size=1.5", "size"],
      ["size=", "size"],
      ["cursor=", "cursor"],
    ] as const
  ) {
    const errors = problemOf(query).extensions.errors as { parameter: string }[];
    assert.deepEqual(errors.map((error) => error.parameter), [parameter], query);
  }
});

Deno.test("isEntityId() accepts exactly the non-negative 64-bit integers", () => {
  assert.ok(isEntityId("0"));
  assert.ok(isEntityId("9223372036854775807"));
  assert.ok(!isEntityId("9223372036854775808"));
  assert.ok(!isEntityId("-1"));
  assert.ok(!isEntityId("1e3"));
  assert.ok(!isEntityId(""));
});
