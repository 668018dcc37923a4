import assert from "node:assert/strict";
import { decodeCursor, encodeCursor, InvalidCursorError } from "./cursor.ts";

function base64Url(text: string): string {
  return btoa(text).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function assertInvalid(text: string): void {
  assert.throws(() => decodeCursor(text), (error: unknown) => {
    assert.ok(error instanceof InvalidCursorError);
    assert.equal(error.code, "invalid-cursor");
    assert.match(error.message, /^Cannot decode cursor: /);
    return true;
  });
}

Deno.test("encodeCursor writes unpadded base64url of [createdAt, id]", () => {
  const text = encodeCursor({ createdAt: 1_700_000_000_123, id: "1234567890123456789" });
  assert.match(text, /^[A-Za-z0-9_-]+$/);
  assert.equal(text, base64Url('[1700000000123,"1234567890123456789"]'));
});

Deno.test("decodeCursor reverses encodeCursor, keeping 64-bit ids exact", () => {
  for (
    const cursor of [
      { createdAt: 0, id: "0" },
      { createdAt: 1_700_000_000_123, id: "9223372036854775807" },
      { createdAt: Number.MAX_SAFE_INTEGER, id: "18446744073709551615" },
      { createdAt: 5, id: "00000000000000000001" },
    ]
  ) {
    assert.deepEqual(decodeCursor(encodeCursor(cursor)), cursor);
  }
});

Deno.test("decodeCursor rejects text that is not base64url", () => {
  assertInvalid("");
  assertInvalid("abc+def");
  assertInvalid("abc/def");
  assertInvalid("abcd=");
  assertInvalid("a b");
  assertInvalid("abcde");
  assertInvalid("A".repeat(200));
});

Deno.test("decodeCursor rejects content that is not UTF-8 JSON", () => {
  assertInvalid(base64Url("not json"));
  assertInvalid(base64Url('[1,"2"'));
  assertInvalid(base64Url('\xff[1,"2"]'));
});

Deno.test("decodeCursor rejects JSON of the wrong shape", () => {
  assertInvalid(base64Url('{"createdAt":1,"id":"2"}'));
  assertInvalid(base64Url('[1,"2",3]'));
  assertInvalid(base64Url("[1]"));
  assertInvalid(base64Url("null"));
  assertInvalid(base64Url('"[1,\\"2\\"]"'));
});

Deno.test("decodeCursor rejects a createdAt that is not a non-negative integer", () => {
  assertInvalid(base64Url('["1","2"]'));
  assertInvalid(base64Url('[1.5,"2"]'));
  assertInvalid(base64Url('[-1,"2"]'));
  assertInvalid(base64Url('[1e300,"2"]'));
  assertInvalid(base64Url('[null,"2"]'));
});

Deno.test("decodeCursor rejects an id that is not a decimal string of 1 to 20 digits", () => {
  assertInvalid(base64Url("[1,2]"));
  assertInvalid(base64Url('[1,""]'));
  assertInvalid(base64Url('[1,"-2"]'));
  assertInvalid(base64Url('[1,"12a"]'));
  assertInvalid(base64Url('[1," 12"]'));
  assertInvalid(base64Url(`[1,"${"1".repeat(21)}"]`));
});
