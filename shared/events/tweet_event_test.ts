import assert from "node:assert/strict";
import { SingleObjectCodec } from "./single_object.ts";
import { loadTweetCodec, loadTweetSchemas, type TweetEvent } from "./tweet_event.ts";

const MAX_LONG = 9223372036854775807n;

const tweet: TweetEvent = {
  id: 1_790_000_000_000_000_001n,
  userId: 44_196_397n,
  text: "hello",
  createdAt: 1_700_000_000_123,
  source: "mock",
};

type TweetV1 = Omit<TweetEvent, "source">;

Deno.test("TweetCodec round-trips v2 events without losing id precision", async () => {
  const codec = await loadTweetCodec();
  const events: TweetEvent[] = [
    tweet,
    { ...tweet, id: 0n, userId: 0n },
    { ...tweet, id: 1n, userId: 1n },
    { ...tweet, id: MAX_LONG, userId: MAX_LONG },
    { ...tweet, id: -MAX_LONG - 1n },
    { ...tweet, text: null },
    { ...tweet, text: "caf\u00e9 \u65e5\u672c\u8a9e \u{1f426}" },
    { ...tweet, text: "", source: "" },
    { ...tweet, createdAt: 0 },
  ];
  for (const event of events) {
    assert.deepEqual({ ...codec.decode(codec.encode(event)) }, event);
  }
});

Deno.test("TweetCodec writes v2: its header carries the v2 fingerprint", async () => {
  const codec = await loadTweetCodec();
  const bytes = codec.encode(tweet);
  assert.deepEqual(Array.from(bytes.subarray(0, 2)), [0xc3, 0x01]);
  // CRC-64-AVRO of tweet.v2's canonical form, checked against fastavro in crc64_avro_test.ts.
  assert.equal(codec.fingerprint, 0x533b7b6aca04226bn);
  assert.deepEqual(
    Array.from(bytes.subarray(2, 10)),
    [0x6b, 0x22, 0x04, 0xca, 0x6a, 0x7b, 0x3b, 0x53],
  );
});

Deno.test("TweetCodec reads a v1 event with a v2 reader, filling source with its default", async () => {
  const { v1 } = await loadTweetSchemas();
  const v1Writer = new SingleObjectCodec<TweetV1>(v1, []);
  const { source: _, ...v1Event } = tweet;
  const codec = await loadTweetCodec();
  assert.deepEqual({ ...codec.decode(v1Writer.encode(v1Event)) }, {
    ...v1Event,
    source: "unknown",
  });
});

Deno.test("TweetCodec reads a v1 event whose text was left out as null", async () => {
  const { v1 } = await loadTweetSchemas();
  const v1Writer = new SingleObjectCodec<Partial<TweetV1>>(v1, []);
  const codec = await loadTweetCodec();
  const decoded = codec.decode(v1Writer.encode({ id: 7n, userId: 8n, createdAt: 9 }));
  assert.equal(decoded.text, null);
  assert.equal(decoded.source, "unknown");
});

Deno.test("A v1 reader reads a v2 event, ignoring source", async () => {
  const { v1, v2 } = await loadTweetSchemas();
  const v1Reader = new SingleObjectCodec<TweetV1>(v1, [v2]);
  const codec = await loadTweetCodec();
  const { source: _, ...v1Event } = tweet;
  assert.deepEqual({ ...v1Reader.decode(codec.encode(tweet)) }, v1Event);
});

Deno.test("TweetCodec.encode rejects ids that are not 64-bit bigints with a TypeError", async () => {
  const codec = await loadTweetCodec();
  const invalid: [Partial<Record<keyof TweetEvent, unknown>>, string][] = [
    [{ id: -MAX_LONG - 2n }, "id is not a valid long (got -9223372036854775809n)"],
    [{ id: MAX_LONG + 1n }, "id is not a valid long (got 9223372036854775808n)"],
    [{ id: 5 }, "id is not a valid long (got 5)"],
    [{ userId: "12" }, 'userId is not a valid long (got "12")'],
  ];
  for (const [patch, reason] of invalid) {
    assert.throws(() => codec.encode({ ...tweet, ...patch } as TweetEvent), {
      name: "TypeError",
      message: `Cannot encode event: ${reason}`,
    });
  }
});

Deno.test("TweetCodec.encode rejects a createdAt that is not a safe integer of milliseconds", async () => {
  const codec = await loadTweetCodec();
  for (const createdAt of [2 ** 53, 1.5, Number.NaN]) {
    assert.throws(() => codec.encode({ ...tweet, createdAt }), TypeError);
  }
  assert.throws(() => codec.encode({ ...tweet, createdAt: 1n } as unknown as TweetEvent), {
    name: "TypeError",
    message: "Cannot encode event: createdAt is not a valid long (got 1n)",
  });
});
