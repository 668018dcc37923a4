import assert from "node:assert/strict";
import { encodeCursor } from "../../shared/search_index/cursor.ts";
import { isEntityId, searchQuerySchema, streamQuerySchema } from "./search_params.ts";

const limits = { defaultPageSize: 20, maxPageSize: 100 };
const schema = searchQuerySchema(limits);
/** The parameters as Hono's validator gives them to the schema. */
const paramsOf = (query: string) => Object.fromEntries(new URLSearchParams(query));
const parse = (query: string) => schema.parse(paramsOf(query));

/** The parameters each issue names, in order; fails when the query is accepted. */
function invalidOf(query: string): string[] {
  const result = schema.safeParse(paramsOf(query));
  if (result.success) throw new Error(`'${query}' was accepted`);
  return result.error.issues.map((issue) => issue.path.join("."));
}

Deno.test("searchQuerySchema() applies the default page size", () => {
  assert.deepEqual(parse(""), { size: 20 });
});

Deno.test("searchQuerySchema() reads every parameter", () => {
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

Deno.test("searchQuerySchema() reads date-times with offsets", () => {
  assert.equal(parse("from=2026-11-24T10:00:00%2B01:00").from, Date.UTC(2026, 10, 24, 9));
  assert.equal(parse("to=2026-11-24T10:00:00.5Z").to, Date.UTC(2026, 10, 24, 10, 0, 0, 500));
});

Deno.test("searchQuerySchema() names each invalid parameter at once", () => {
  assert.deepEqual(
    invalidOf("text=&userId=-1&from=yesterday&size=0&cursor=zzz"),
    ["text", "userId", "from", "size", "cursor"],
  );
});

Deno.test("searchQuerySchema() follows a refreshed largest page size", () => {
  const refreshable = { defaultPageSize: 20, maxPageSize: 100 };
  const refreshed = searchQuerySchema(refreshable);
  assert.equal(refreshed.parse({ size: "100" }).size, 100);
  refreshable.maxPageSize = 50;
  const result = refreshed.safeParse({ size: "100" });
  assert.equal(result.error?.issues[0]?.message, "must be an integer from 1 to 50");
});

Deno.test("streamQuerySchema() takes no cursor", () => {
  assert.deepEqual(streamQuerySchema(limits).parse({ text: "kafka", cursor: "zzz" }), {
    size: 20,
    text: "kafka",
  });
});

Deno.test("searchQuerySchema() rejects out-of-range and malformed values", () => {
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
    assert.deepEqual(invalidOf(query), [parameter], query);
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
