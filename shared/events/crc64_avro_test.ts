import assert from "node:assert/strict";
import { fingerprint64 } from "./crc64_avro.ts";
import { canonicalForm } from "./single_object.ts";
import { loadTweetSchemas } from "./tweet_event.ts";

// Reference values from fastavro 1.13.1 (an independent implementation):
// `fastavro.schema.to_parsing_canonical_form(schema)` for the forms and
// `fastavro.schema.fingerprint(form, "CRC-64-AVRO")` for `bytesLE`, which is
// the fingerprint's little-endian bytes in hex (the single-object header order).
const TWEET_V1_FORM = '{"name":"dev.twitterapi.events.Tweet","type":"record","fields":[' +
  '{"name":"id","type":"long"},{"name":"userId","type":"long"},' +
  '{"name":"text","type":["null","string"]},{"name":"createdAt","type":"long"}]}';
const TWEET_V2_FORM = '{"name":"dev.twitterapi.events.Tweet","type":"record","fields":[' +
  '{"name":"id","type":"long"},{"name":"userId","type":"long"},' +
  '{"name":"text","type":["null","string"]},{"name":"createdAt","type":"long"},' +
  '{"name":"source","type":"string"}]}';

const VECTORS: readonly { form: string; bytesLE: string; value: bigint }[] = [
  { form: '"null"', bytesLE: "8a8f25cce724dd63", value: 0x63dd24e7cc258f8an },
  { form: '"int"', bytesLE: "8f5c393f1ad57572", value: 0x7275d51a3f395c8fn },
  { form: '"long"', bytesLE: "b71df49344e154d0", value: 0xd054e14493f41db7n },
  { form: '"string"', bytesLE: "c70345637248018f", value: 0x8f014872634503c7n },
  {
    form: '{"name":"foo","type":"fixed","size":15}',
    bytesLE: "04a531edc32e6018",
    value: 0x18602ec3ed31a504n,
  },
  {
    form: '{"name":"foo","type":"enum","symbols":["A1"]}',
    bytesLE: "6931aa159e03fca7",
    value: 0xa7fc039e15aa3169n,
  },
  {
    form: '{"type":"array","items":"long"}',
    bytesLE: "715e2ea28bc91654",
    value: 0x5416c98ba22e5e71n,
  },
  {
    form: '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
    bytesLE: "3ba368c9f1ead86c",
    value: 0x6cd8eaf1c968a33bn,
  },
  // Hashes UTF-8 bytes, not UTF-16 code units.
  { form: '"\u00e9"', bytesLE: "d9361eb95b00a7af", value: 0xafa7005bb91e36d9n },
  { form: TWEET_V1_FORM, bytesLE: "f5e6ada87e8b0def", value: 0xef0d8b7ea8ade6f5n },
  { form: TWEET_V2_FORM, bytesLE: "6b2204ca6a7b3b53", value: 0x533b7b6aca04226bn },
];

function littleEndianHex(value: bigint): string {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, value, true);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("fingerprint64 matches fastavro's CRC-64-AVRO for reference canonical forms", () => {
  for (const { form, bytesLE, value } of VECTORS) {
    assert.equal(fingerprint64(form), value, form);
    assert.equal(littleEndianHex(fingerprint64(form)), bytesLE, form);
  }
});

Deno.test('fingerprint64 matches the Avro spec\'s test vector for "null"', () => {
  // From the Avro spec's schema-fingerprint test data (a signed Java long).
  assert.equal(BigInt.asIntN(64, fingerprint64('"null"')), 7195948357588979594n);
});

Deno.test("fingerprint64 of the empty string is the Rabin EMPTY constant", () => {
  assert.equal(fingerprint64(""), 0xc15d213aa4d7a795n);
});

Deno.test("canonicalForm of the tweet schemas equals fastavro's Parsing Canonical Form", async () => {
  const { v1, v2 } = await loadTweetSchemas();
  assert.equal(canonicalForm(v1), TWEET_V1_FORM);
  assert.equal(canonicalForm(v2), TWEET_V2_FORM);
});
