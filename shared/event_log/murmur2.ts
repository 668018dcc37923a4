/**
 * Kafka's default partitioning: the 32-bit murmur2 hash of the key bytes
 * (Java `Utils.murmur2`), made positive and taken modulo the partition count.
 * Matching it bit for bit keeps the embedded log and a real Kafka cluster
 * placing the same key on the same partition.
 */

const SEED = 0x9747b28c;
const M = 0x5bd1e995;

/** Kafka's murmur2 hash of `data`, as a signed 32-bit integer like Java's `int`. */
export function murmur2(data: Uint8Array): number {
  const length = data.length;
  let h = SEED ^ length;
  const words = length >>> 2;
  for (let i = 0; i < words; i++) {
    const i4 = i * 4;
    let k = data[i4]! | (data[i4 + 1]! << 8) | (data[i4 + 2]! << 16) | (data[i4 + 3]! << 24);
    k = Math.imul(k, M);
    k ^= k >>> 24;
    k = Math.imul(k, M);
    h = Math.imul(h, M) ^ k;
  }
  const tail = length & ~3;
  const rest = length & 3;
  if (rest > 0) {
    if (rest === 3) h ^= data[tail + 2]! << 16;
    if (rest >= 2) h ^= data[tail + 1]! << 8;
    h ^= data[tail]!;
    h = Math.imul(h, M);
  }
  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}

/** The partition Kafka's default partitioner chooses for a non-null key. */
export function partitionForKey(key: Uint8Array, partitions: number): number {
  return (murmur2(key) & 0x7fffffff) % partitions;
}

/**
 * A signed 64-bit integer as Kafka's `LongSerializer` writes it (8 bytes,
 * big-endian), the key format for user ids.
 */
export function encodeLongKey(value: bigint): Uint8Array {
  if (BigInt.asIntN(64, value) !== value) {
    throw new RangeError(`Cannot encode key ${value}: it is outside the signed 64-bit range`);
  }
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigInt64(0, value);
  return bytes;
}
