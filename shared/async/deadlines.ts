/**
 * Deadlines of one length for many pending calls, kept by one timer that
 * sweeps every tenth of the length rather than one timer per call: a timer
 * set and cleared per request (a Node-compatible `Timeout` each) cost the
 * gateway more than the work it guarded. A deadline therefore passes up to a
 * tenth of its length late.
 */
interface Pending {
  readonly until: number;
  readonly expire: () => void;
}

export class Deadlines {
  readonly #ms: number;
  readonly #step: number;
  /** In the order of their deadlines, as all have one length. */
  readonly #pending = new Set<Pending>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(ms: number) {
    if (!(Number.isFinite(ms) && ms > 0)) {
      throw new RangeError(
        `Cannot keep deadlines as 'ms' must be a positive number: current value is ${ms}`,
      );
    }
    this.#ms = ms;
    this.#step = Math.max(1, Math.ceil(ms / 10));
  }

  /**
   * Calls `expire` once the length has passed, unless the returned function
   * (which the caller calls when its work is done) is called first.
   */
  start(expire: () => void): () => void {
    const entry = { until: performance.now() + this.#ms, expire };
    this.#pending.add(entry);
    this.#timer ??= setTimeout(this.#sweep, this.#step);
    return () => {
      this.#pending.delete(entry);
      // No timer outlives the last pending call.
      if (this.#pending.size === 0 && this.#timer !== undefined) {
        clearTimeout(this.#timer);
        this.#timer = undefined;
      }
    };
  }

  readonly #sweep = () => {
    this.#timer = undefined;
    const time = performance.now();
    for (const entry of this.#pending) {
      if (entry.until > time) break;
      this.#pending.delete(entry);
      entry.expire();
    }
    if (this.#pending.size > 0) this.#timer ??= setTimeout(this.#sweep, this.#step);
  };
}
