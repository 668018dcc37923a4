import assert from "node:assert/strict";
import { encodeLongKey, murmur2, partitionForKey } from "./murmur2.ts";

const text = new TextEncoder();

Deno.test("murmur2 matches Kafka's UtilsTest vectors", () => {
  const vectors: [string, number][] = [
    ["21", -973932308],
    ["foobar", -790332482],
    ["a-little-bit-long-string", -985981536],
    ["a-little-bit-longer-string", -1486304829],
    ["lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971],
  ];
  for (const [input, expected] of vectors) {
    assert.equal(murmur2(text.encode(input)), expected, input);
  }
  assert.equal(murmur2(new Uint8Array([97, 98, 99])), 479470107);
});

Deno.test("murmur2 matches kafkajs for empty keys and every tail length", () => {
  // Computed with kafkajs 2.2.4; "a" and "hello" end in a one-byte tail.
  const vectors: [string, number][] = [
    ["", 275646681],
    ["a", -1563381124],
    ["hello", 2132663229],
    ["tweets-1", 320867915],
  ];
  for (const [input, expected] of vectors) {
    assert.equal(murmur2(text.encode(input)), expected, JSON.stringify(input));
  }
});

Deno.test("encodeLongKey writes a big-endian signed 64-bit integer", () => {
  assert.deepEqual([...encodeLongKey(1n)], [0, 0, 0, 0, 0, 0, 0, 1]);
  assert.deepEqual([...encodeLongKey(-1n)], [255, 255, 255, 255, 255, 255, 255, 255]);
  assert.deepEqual([...encodeLongKey(-9223372036854775808n)], [128, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual([...encodeLongKey(0x0102030405060708n)], [1, 2, 3, 4, 5, 6, 7, 8]);
});

Deno.test("encodeLongKey rejects values outside the signed 64-bit range", () => {
  assert.throws(() => encodeLongKey(9223372036854775808n), RangeError);
  assert.throws(() => encodeLongKey(-9223372036854775809n), RangeError);
});

Deno.test("partitionForKey places long keys where kafkajs's default partitioner does", () => {
  // Hash and partitions for 1, 3, 6 and 12 partitions, computed with kafkajs 2.2.4.
  const expected: [bigint, number, number[]][] = [
    [0n, -522759933, [0, 2, 5, 11]],
    [1n, 2100486060, [0, 0, 0, 0]],
    [42n, 506863552, [0, 1, 4, 4]],
    [1234567890123n, 154523340, [0, 0, 0, 0]],
    [-1n, 185950397, [0, 2, 5, 5]],
    [9223372036854775807n, -1236687672, [0, 2, 2, 8]],
    [-9223372036854775808n, 1290709624, [0, 1, 4, 4]],
    [1790000000000000000n, -359728999, [0, 1, 1, 1]],
  ];
  for (const [value, hash, partitions] of expected) {
    const key = encodeLongKey(value);
    assert.equal(murmur2(key), hash, `hash of ${value}`);
    assert.deepEqual(
      [1, 3, 6, 12].map((count) => partitionForKey(key, count)),
      partitions,
      `partitions of ${value}`,
    );
  }
});
