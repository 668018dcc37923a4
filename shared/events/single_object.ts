/**
 * Avro single-object encoding: marker C3 01, the writer schema's CRC-64-AVRO
 * fingerprint (8 bytes, little-endian), then the Avro binary body. Decoding
 * resolves any known writer schema to the reader schema, so producers and
 * consumers on different schema versions interoperate.
 */

import { Buffer } from "node:buffer";
import { type Resolver, type Schema, Type, types } from "avsc";
import { fingerprint64 } from "./crc64_avro.ts";

const MARKER_0 = 0xc3;
const MARKER_1 = 0x01;
const HEADER_LENGTH = 10;

/** Thrown by `SingleObjectCodec.decode` for bytes it cannot turn into a value. */
export class EventDecodeError extends Error {
  readonly code = "event-decode";

  constructor(reason: string, options?: ErrorOptions) {
    super(`Cannot decode event: ${reason}`, options);
    this.name = "EventDecodeError";
  }
}

/**
 * The bytes of the long being written: avsc reads them at once (it packs them
 * as a varint) and keeps none, so one scratch buffer serves every long of
 * every event instead of an allocation each (a tweet's id and user id).
 */
const longBytes = Buffer.alloc(8);

// Avro longs are 64-bit; a JS number would silently round tweet and user ids.
const bigintLong = types.LongType.__with({
  fromBuffer: (buf: Buffer) => buf.readBigInt64LE(),
  toBuffer: (n: bigint) => {
    longBytes.writeBigInt64LE(n);
    return longBytes;
  },
  fromJSON: BigInt,
  toJSON: Number,
  isValid: (n: unknown) => typeof n === "bigint" && BigInt.asIntN(64, n) === n,
  compare: (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0),
});

function isPlainLong(schema: unknown): boolean {
  if (schema === "long") return true;
  if (typeof schema !== "object" || schema === null || Array.isArray(schema)) return false;
  const attrs = schema as { type?: unknown; logicalType?: unknown };
  return attrs.type === "long" && attrs.logicalType === undefined;
}

/**
 * Parses an event schema: every `long` decodes as a `bigint`, except
 * `timestamp-millis` longs, which stay avsc's number long (epoch ms, safe
 * integers only: reading an unsafe one throws instead of rounding).
 */
export function parseEventSchema(schema: Schema): Type {
  // A hook rather than `registry.long`: the registry misses `{"type": "long"}`.
  return Type.forSchema(schema, {
    typeHook: (s) => (isPlainLong(s) ? bigintLong : undefined),
  });
}

/** Parsing Canonical Form (avsc's `schema()` strips docs, defaults, logical types). */
export function canonicalForm(type: Type): string {
  return JSON.stringify(type.schema());
}

function hex(fingerprint: bigint): string {
  return `0x${fingerprint.toString(16).padStart(16, "0")}`;
}

function typeLabel(type: Type): string {
  const schema = type.schema();
  return typeof schema === "string" ? schema : type.name ?? JSON.stringify(schema);
}

function describe(value: unknown): string {
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "object" && value !== null) return "an object";
  return String(value);
}

export class SingleObjectCodec<T> {
  /** CRC-64-AVRO of the reader schema, which is also the one `encode` writes. */
  readonly fingerprint: bigint;
  readonly #reader: Type;
  readonly #header: Uint8Array;
  readonly #resolvers: Map<bigint, Resolver>;

  /**
   * `reader` is the schema values are decoded to and encoded with; `known`
   * lists every writer schema to accept (the reader is always accepted).
   * Throws if a known schema cannot be resolved to the reader.
   */
  constructor(reader: Type, known: readonly Type[]) {
    this.#reader = reader;
    this.fingerprint = fingerprint64(canonicalForm(reader));
    this.#header = new Uint8Array(HEADER_LENGTH);
    this.#header[0] = MARKER_0;
    this.#header[1] = MARKER_1;
    new DataView(this.#header.buffer).setBigUint64(2, this.fingerprint, true);
    this.#resolvers = new Map();
    for (const writer of [reader, ...known]) {
      this.#resolvers.set(fingerprint64(canonicalForm(writer)), reader.createResolver(writer));
    }
  }

  encode(value: T): Uint8Array {
    let invalid: string | undefined;
    this.#reader.isValid(value, {
      errorHook: (path, found, type) => {
        invalid ??= `${path.join(".") || "value"} is not a valid ${typeLabel(type)} (got ${
          describe(found)
        })`;
      },
    });
    if (invalid !== undefined) throw new TypeError(`Cannot encode event: ${invalid}`);
    const body = this.#reader.toBuffer(value);
    const bytes = new Uint8Array(HEADER_LENGTH + body.length);
    bytes.set(this.#header);
    bytes.set(body, HEADER_LENGTH);
    return bytes;
  }

  /**
   * Decodes one single-object encoded value. Records come back as avsc's
   * record class instances: spread them (`{ ...value }`) before a deep
   * equality check that compares prototypes.
   */
  decode(bytes: Uint8Array): T {
    if (bytes.length < 2 || bytes[0] !== MARKER_0 || bytes[1] !== MARKER_1) {
      throw new EventDecodeError("missing single-object marker");
    }
    if (bytes.length < HEADER_LENGTH) {
      throw new EventDecodeError("truncated schema fingerprint");
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const fingerprint = view.getBigUint64(2, true);
    const resolver = this.#resolvers.get(fingerprint);
    if (resolver === undefined) {
      throw new EventDecodeError(`unknown schema fingerprint ${hex(fingerprint)}`);
    }
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let decoded: { value: T; offset: number };
    try {
      decoded = this.#reader.decode(buf, HEADER_LENGTH, resolver);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new EventDecodeError(`invalid body (${reason})`, { cause: err });
    }
    if (decoded.offset < 0) throw new EventDecodeError("truncated body");
    if (decoded.offset !== bytes.length) {
      throw new EventDecodeError(`${bytes.length - decoded.offset} trailing bytes after the body`);
    }
    return decoded.value;
  }
}
