import assert from "node:assert/strict";
import { fingerprint64 } from "./crc64_avro.ts";
import {
  canonicalForm,
  EventDecodeError,
  parseEventSchema,
  SingleObjectCodec,
} from "./single_object.ts";

interface Ping {
  id: bigint;
  at: number;
  note: string | null;
}

const pingV1 = parseEventSchema({
  type: "record",
  name: "Ping",
  namespace: "test",
  fields: [
    { name: "id", type: "long" },
    { name: "at", type: { type: "long", logicalType: "timestamp-millis" } },
    { name: "note", type: ["null", "string"], default: null },
  ],
});
const pong = parseEventSchema({
  type: "record",
  name: "Pong",
  namespace: "test",
  fields: [{ name: "id", type: { type: "long" } }],
});

const ping: Ping = { id: 42n, at: 1_700_000_000_000, note: "hi" };

function assertDecodeError(fn: () => unknown, message: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof EventDecodeError);
    assert.equal(err.code, "event-decode");
    assert.equal(err.message, message);
    return true;
  });
}

Deno.test("SingleObjectCodec writes the marker then the little-endian writer fingerprint", () => {
  const codec = new SingleObjectCodec<Ping>(pingV1, []);
  const bytes = codec.encode(ping);
  assert.deepEqual(Array.from(bytes.subarray(0, 2)), [0xc3, 0x01]);
  const fingerprint = fingerprint64(canonicalForm(pingV1));
  assert.equal(codec.fingerprint, fingerprint);
  assert.equal(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(2, true), fingerprint);
  assert.deepEqual(bytes.subarray(10), new Uint8Array(pingV1.toBuffer(ping)));
});

Deno.test("SingleObjectCodec round-trips a value, longs as bigint and timestamps as numbers", () => {
  const codec = new SingleObjectCodec<Ping>(pingV1, []);
  assert.deepEqual({ ...codec.decode(codec.encode(ping)) }, ping);
});

Deno.test("SingleObjectCodec parses long given in object form as bigint too", () => {
  const codec = new SingleObjectCodec<{ id: bigint }>(pong, []);
  const id = 2n ** 62n + 1n;
  assert.equal(codec.decode(codec.encode({ id })).id, id);
});

Deno.test("SingleObjectCodec decodes bytes inside a larger buffer", () => {
  const codec = new SingleObjectCodec<Ping>(pingV1, []);
  const bytes = codec.encode(ping);
  const padded = new Uint8Array(bytes.length + 7);
  padded.set(bytes, 3);
  assert.deepEqual({ ...codec.decode(padded.subarray(3, 3 + bytes.length)) }, ping);
});

Deno.test("SingleObjectCodec rejects empty input as missing the marker", () => {
  const codec = new SingleObjectCodec<Ping>(pingV1, []);
  assertDecodeError(
    () => codec.decode(new Uint8Array()),
    "Cannot decode event: missing single-object marker",
  );
});

Deno.test("SingleObjectCodec rejects a wrong marker", () => {
  const codec = new SingleObjectCodec<Ping>(pingV1, []);
  const bytes = codec.encode(ping);
  bytes[1] = 0x02;
  assertDecodeError(() => codec.decode(bytes), "Cannot decode event: missing single-object marker");
});

Deno.test("SingleObjectCodec rejects a header cut inside the fingerprint", () => {
  const codec = new SingleObjectCodec<Ping>(pingV1, []);
  assertDecodeError(
    () => codec.decode(codec.encode(ping).subarray(0, 9)),
    "Cannot decode event: truncated schema fingerprint",
  );
});

Deno.test("SingleObjectCodec rejects a writer schema it does not know, naming its fingerprint", () => {
  const pongBytes = new SingleObjectCodec<{ id: bigint }>(pong, []).encode({ id: 1n });
  const codec = new SingleObjectCodec<Ping>(pingV1, []);
  const hex = fingerprint64(canonicalForm(pong)).toString(16).padStart(16, "0");
  assertDecodeError(
    () => codec.decode(pongBytes),
    `Cannot decode event: unknown schema fingerprint 0x${hex}`,
  );
});

Deno.test("SingleObjectCodec rejects a truncated body", () => {
  const codec = new SingleObjectCodec<Ping>(pingV1, []);
  const bytes = codec.encode(ping);
  for (const length of [10, 11, bytes.length - 1]) {
    assertDecodeError(
      () => codec.decode(bytes.subarray(0, length)),
      "Cannot decode event: truncated body",
    );
  }
});

Deno.test("SingleObjectCodec rejects trailing bytes after the body", () => {
  const codec = new SingleObjectCodec<Ping>(pingV1, []);
  const bytes = codec.encode(ping);
  const longer = new Uint8Array(bytes.length + 2);
  longer.set(bytes);
  assertDecodeError(
    () => codec.decode(longer),
    "Cannot decode event: 2 trailing bytes after the body",
  );
});

Deno.test("SingleObjectCodec rejects a body that is not valid Avro", () => {
  const codec = new SingleObjectCodec<Ping>(pingV1, []);
  const bytes = codec.encode({ ...ping, note: null });
  // The last byte is the union branch index of note: zigzag 9 = index -5.
  bytes[bytes.length - 1] = 9;
  assert.throws(
    () => codec.decode(bytes),
    (err: unknown) =>
      err instanceof EventDecodeError &&
      err.message.startsWith("Cannot decode event: invalid body"),
  );
});

Deno.test("SingleObjectCodec rejects a timestamp beyond the safe integer range on decode", () => {
  const wide = parseEventSchema({
    type: "record",
    name: "Ping",
    namespace: "test",
    fields: [
      { name: "id", type: "long" },
      { name: "at", type: "long" },
      { name: "note", type: ["null", "string"], default: null },
    ],
  });
  const bytes = new SingleObjectCodec<unknown>(wide, []).encode({
    id: 1n,
    at: 2n ** 60n,
    note: null,
  });
  const codec = new SingleObjectCodec<Ping>(pingV1, [wide]);
  assertDecodeError(
    () => codec.decode(bytes),
    "Cannot decode event: invalid body (potential precision loss)",
  );
});

Deno.test("SingleObjectCodec.encode names the invalid field in a TypeError", () => {
  const codec = new SingleObjectCodec<Ping>(pingV1, []);
  assert.throws(() => codec.encode({ ...ping, at: 1.5 }), {
    name: "TypeError",
    message: "Cannot encode event: at is not a valid long (got 1.5)",
  });
  assert.throws(() => codec.encode({ ...ping, note: 3 as unknown as string }), {
    name: "TypeError",
    message: 'Cannot encode event: note is not a valid ["null","string"] (got 3)',
  });
  assert.throws(() => codec.encode(null as unknown as Ping), {
    name: "TypeError",
    message: "Cannot encode event: value is not a valid test.Ping (got null)",
  });
});
