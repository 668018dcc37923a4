/**
 * CRC-64-AVRO, the Rabin fingerprint the Avro spec mandates for single-object
 * encoding (avsc only offers MD5/SHA-256 fingerprints, hence this module).
 */

const EMPTY = 0xc15d213aa4d7a795n;

const TABLE: BigUint64Array = (() => {
  const table = new BigUint64Array(256);
  for (let i = 0; i < 256; i++) {
    let fp = BigInt(i);
    for (let j = 0; j < 8; j++) {
      fp = (fp >> 1n) ^ (EMPTY & -(fp & 1n));
    }
    table[i] = fp;
  }
  return table;
})();

/**
 * Fingerprint of a schema's Parsing Canonical Form, as an unsigned 64-bit
 * integer; single-object headers carry it little-endian.
 */
export function fingerprint64(canonicalForm: string): bigint {
  let fp = EMPTY;
  for (const byte of new TextEncoder().encode(canonicalForm)) {
    fp = (fp >> 8n) ^ TABLE[Number((fp ^ BigInt(byte)) & 0xffn)]!;
  }
  return fp;
}
