/**
 * Produces mock tweets to the event log at a steady, adjustable rate. A tweet
 * counts as produced only once the log acknowledged it; a failed send is
 * retried, never dropped. Each tweet starts its own trace: the traced event
 * log gives it a producer span of its own (each attempt of a retried send
 * starts new ones).
 *
 * The loop gives the event loop a turn after every batch, so the process
 * keeps answering at any rate: an embedded log acknowledges within
 * microtasks, and a loop that only awaits those would starve timers and
 * connections for as long as production is behind. A rate the process cannot
 * reach is not caught up on: what falls more than a second behind is shed,
 * and the status reports the rate achieved beside the one asked for.
 */
import { retryUntilDone, sleep } from "../../shared/async/retry.ts";
import type { EventLog, ProducerRecord } from "../../shared/event_log/event_log.ts";
import { encodeLongKey } from "../../shared/event_log/murmur2.ts";
import type { TweetEvent } from "../../shared/events/tweet_event.ts";
import { inNewTraces } from "../../shared/event_log/traced_event_log.ts";
import type { Logger } from "../../shared/log/log.ts";

export type StreamState = "running" | "paused" | "completed" | "stopped";

export interface StreamStatus {
  readonly state: StreamState;
  readonly produced: number;
  /** The rate asked for. */
  readonly ratePerSecond: number;
  /** Tweets acknowledged per second over the last five seconds, rounded. */
  readonly achievedPerSecond: number;
  /** Tweets to produce in all, or null when unbounded. */
  readonly count: number | null;
  readonly topic: string;
}

export interface TweetEmitterOptions {
  readonly eventLog: EventLog;
  readonly encode: (event: TweetEvent) => Uint8Array;
  readonly next: () => TweetEvent;
  readonly topic: string;
  readonly ratePerSecond: number;
  /** Stop after this many tweets; 0 means never. */
  readonly count: number;
  readonly logger: Logger;
  /** Called with every acknowledged batch: its size and where its time went. */
  readonly onProduced?: (count: number, timings: BatchTimings) => void;
  /**
   * Most tweets sent in one call to the log.
   * @default 1000
   */
  readonly maxBatchSize?: number;
  /**
   * Least time from the start of one send to the start of the next, in
   * milliseconds: tweets falling due meanwhile leave together (a full batch
   * leaves at once). At a low rate this makes a few larger produce requests,
   * and a few larger fetches and bulk writes downstream, instead of one per
   * tweet, for at most this much more latency. 0: each tweet leaves when due.
   * @default 0
   */
  readonly lingerMs?: number;
  /**
   * Most sends waiting for the log's acknowledgement at once: the next batch
   * is made and sent while earlier ones are on their way. Tweets of
   * different sends may then be stored out of order (one that is retried
   * lands after a later one); each is acknowledged or retried, never dropped.
   * @default 1
   */
  readonly maxSendsInFlight?: number;
}

/** Where the time of one produced batch went, in seconds. */
export interface BatchTimings {
  /** Making and encoding the batch's tweets. */
  readonly encodeSeconds: number;
  /** From the send to the log's acknowledgement (compression and retries included). */
  readonly sendSeconds: number;
}

export class StreamCompletedError extends Error {
  readonly code = "stream-completed";
  constructor(count: number) {
    super(`Cannot resume the stream: it has produced all ${count} tweets of its count`);
    this.name = "StreamCompletedError";
  }
}

/** How far back the achieved rate looks. */
const ACHIEVED_WINDOW_MS = 5000;
/** Fewest milliseconds between two samples of the produced count. */
const SAMPLE_SPACING_MS = 100;

/**
 * The acknowledged tweets per second over the last `ACHIEVED_WINDOW_MS`, from
 * samples of the running count (at most one per `SAMPLE_SPACING_MS`, so the
 * memory stays small at any rate).
 */
class AchievedRate {
  readonly #samples: { readonly at: number; readonly produced: number }[] = [];

  record(at: number, produced: number): void {
    const last = this.#samples.at(-1);
    if (last === undefined || at - last.at >= SAMPLE_SPACING_MS) {
      this.#samples.push({ at, produced });
    }
    this.#prune(at);
  }

  perSecond(now: number, produced: number): number {
    this.#prune(now);
    const oldest = this.#samples[0];
    if (oldest === undefined || now <= oldest.at) return 0;
    return Math.round((produced - oldest.produced) * 1000 / (now - oldest.at));
  }

  /** Keeps the newest sample at or before the window's start, the baseline of the count. */
  #prune(now: number): void {
    while (this.#samples.length > 1 && this.#samples[1]!.at <= now - ACHIEVED_WINDOW_MS) {
      this.#samples.shift();
    }
  }
}

/** A turn of the event loop (a timer, not a microtask): pending I/O and timers run first. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

export class TweetEmitter {
  #state: StreamState = "paused";
  #produced = 0;
  #rate: number;
  #loop: Promise<void> | undefined;
  readonly #stopping = new AbortController();
  /** Aborted whenever state or rate changes, to wake a sleeping loop. */
  #wake = new AbortController();
  readonly #achieved = new AchievedRate();

  constructor(readonly options: TweetEmitterOptions) {
    this.#rate = options.ratePerSecond;
    this.#achieved.record(performance.now(), 0);
  }

  status(): StreamStatus {
    return {
      state: this.#state,
      produced: this.#produced,
      ratePerSecond: this.#rate,
      achievedPerSecond: this.#achieved.perSecond(performance.now(), this.#produced),
      count: this.options.count === 0 ? null : this.options.count,
      topic: this.options.topic,
    };
  }

  /** Starts the production loop, running or paused. */
  start(running: boolean): void {
    if (this.#loop !== undefined) return;
    this.#state = running ? "running" : "paused";
    this.#loop = this.#run();
  }

  pause(): StreamStatus {
    if (this.#state === "running") this.#change(() => this.#state = "paused");
    return this.status();
  }

  resume(): StreamStatus {
    if (this.#state === "completed") throw new StreamCompletedError(this.options.count);
    if (this.#state === "paused") this.#change(() => this.#state = "running");
    return this.status();
  }

  setRate(ratePerSecond: number): StreamStatus {
    this.#change(() => this.#rate = ratePerSecond);
    return this.status();
  }

  /** Stops producing; resolves when the sends in flight are acknowledged or given up. */
  async stop(): Promise<void> {
    this.#stopping.abort();
    this.#wake.abort();
    await this.#loop;
    this.#state = "stopped";
  }

  #change(apply: () => void): void {
    apply();
    this.#wake.abort();
    this.#wake = new AbortController();
  }

  async #run(): Promise<void> {
    const { maxBatchSize = 1000, lingerMs = 0, maxSendsInFlight = 1, count } = this.options;
    let lastSendStarted = -Infinity;
    /** Tweets acknowledged or in a send still in flight. */
    let sent = 0;
    const inFlight = new Set<Promise<void>>();
    // The rate is kept over a window that restarts whenever the rate or the
    // state changes, or when production fell more than a second behind.
    let windowStart = performance.now();
    let windowSent = 0;
    let windowWake = this.#wake;
    /** Whether shedding was logged since the rate or state last changed. */
    let sheddingLogged = false;
    while (!this.#stopping.signal.aborted) {
      if (windowWake !== this.#wake) {
        windowWake = this.#wake;
        windowStart = performance.now();
        windowSent = 0;
        sheddingLogged = false;
      }
      if (this.#state !== "running") {
        await sleep(60_000, this.#wake.signal);
        continue;
      }
      const remaining = count === 0 ? Infinity : count - sent;
      if (remaining === 0 || inFlight.size >= maxSendsInFlight) {
        // All of the count is on its way, or as many sends as may be: wait for one to end.
        const waiting = new AbortController();
        await Promise.race([
          ...inFlight,
          sleep(60_000, AbortSignal.any([this.#wake.signal, waiting.signal])),
        ]);
        waiting.abort();
        continue;
      }
      const elapsedMs = performance.now() - windowStart;
      let due = Math.floor(elapsedMs * this.#rate / 1000) - windowSent;
      if (due > this.#rate) {
        // More than a second behind: the backlog is shed, not caught up on.
        if (!sheddingLogged) {
          sheddingLogged = true;
          this.options.logger.warn(
            "Cannot produce {rate} tweets/s; what falls a second behind is shed",
            { rate: this.#rate },
          );
        }
        windowStart = performance.now();
        windowSent = 0;
        due = 1;
      }
      const size = Math.min(due, maxBatchSize, remaining);
      if (size <= 0) {
        const nextDueMs = (windowSent + 1) * 1000 / this.#rate - elapsedMs;
        await sleep(Math.max(1, Math.ceil(nextDueMs)), this.#wake.signal);
        continue;
      }
      const lingerLeftMs = lastSendStarted + lingerMs - performance.now();
      if (lingerLeftMs > 0 && size < Math.min(maxBatchSize, remaining)) {
        await sleep(Math.ceil(lingerLeftMs), this.#wake.signal);
        continue;
      }
      lastSendStarted = performance.now();
      sent += size;
      windowSent += size;
      // The batch is made and encoded before `#send` first awaits: the next
      // one is made while this one is on its way.
      const sending = this.#send(size).then((timings) => {
        if (timings === undefined) {
          sent -= size;
          return;
        }
        this.#produced += size;
        this.#achieved.record(performance.now(), this.#produced);
        this.options.onProduced?.(size, timings);
        if (count !== 0 && this.#produced >= count) {
          this.#state = "completed";
          this.options.logger.info("Produced all {count} tweets; the stream is completed", {
            count,
          });
        }
      }).finally(() => inFlight.delete(sending));
      inFlight.add(sending);
      await yieldToEventLoop();
    }
    await Promise.all(inFlight);
  }

  /** Sends `size` new tweets, each in its own trace; undefined if stopped first. */
  async #send(size: number): Promise<BatchTimings | undefined> {
    const { topic, logger } = this.options;
    const encodeStarted = performance.now();
    const records: ProducerRecord[] = [];
    for (let i = 0; i < size; i++) {
      const tweet = this.options.next();
      records.push({
        key: encodeLongKey(tweet.userId),
        value: this.options.encode(tweet),
        timestamp: tweet.createdAt,
      });
    }
    const sendStarted = performance.now();
    try {
      await retryUntilDone(() => inNewTraces(() => this.options.eventLog.send(topic, records)), {
        action: `send ${size} tweets to ${topic}`,
        logger,
        signal: this.#stopping.signal,
      });
    } catch (error) {
      logger.warn("Stopped before {size} tweets were acknowledged; they were not produced", {
        size,
        error,
      });
      return undefined;
    }
    return {
      encodeSeconds: (sendStarted - encodeStarted) / 1000,
      sendSeconds: (performance.now() - sendStarted) / 1000,
    };
  }
}
