/**
 * Snowflake tweet ids, Twitter's own layout: 41 bits of milliseconds since the
 * Twitter epoch, 10 bits of worker id, 12 bits of sequence. Ids are unique per
 * worker, positive 63-bit integers, and sort by creation time.
 */

/** 2010-11-04T01:42:54.657Z, the epoch of Twitter's ids. */
export const TWITTER_EPOCH_MS = 1288834974657;
const SEQUENCE_BITS = 12n;
const WORKER_BITS = 10n;
const MAX_SEQUENCE = (1 << Number(SEQUENCE_BITS)) - 1;

export class SnowflakeIds {
  #lastMs = -1;
  #sequence = 0;

  constructor(readonly workerId: number, readonly now: () => number = Date.now) {
    if (!Number.isInteger(workerId) || workerId < 0 || workerId > 1023) {
      throw new RangeError(`Cannot create tweet ids: worker id must be 0..1023, got ${workerId}`);
    }
  }

  /** The next id and the millisecond it encodes (the tweet's creation time). */
  next(): { id: bigint; createdAt: number } {
    // A clock that steps back or more than 4096 ids in one millisecond borrow
    // the next millisecond, so ids never repeat and never decrease.
    const now = Math.max(this.now(), this.#lastMs);
    if (now === this.#lastMs) {
      this.#sequence++;
      if (this.#sequence > MAX_SEQUENCE) {
        this.#sequence = 0;
        this.#lastMs++;
      }
    } else {
      this.#sequence = 0;
      this.#lastMs = now;
    }
    const id = (BigInt(this.#lastMs - TWITTER_EPOCH_MS) << (WORKER_BITS + SEQUENCE_BITS)) |
      (BigInt(this.workerId) << SEQUENCE_BITS) | BigInt(this.#sequence);
    return { id, createdAt: this.#lastMs };
  }
}
