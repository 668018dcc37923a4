/**
 * The mock stream's authors: their ids derive from an index, so other
 * services (the query service's development grants) can name them.
 */

/** Author ids spread over the positive 63-bit range, stable across restarts. */
export function mockUserId(index: number): bigint {
  // Multiplying by a large odd constant modulo 2^63 is a bijection, so
  // distinct indexes give distinct, random-looking ids.
  return (BigInt(index + 1) * 0x5851f42d4c957f2dn) & 0x7fffffffffffffffn;
}
