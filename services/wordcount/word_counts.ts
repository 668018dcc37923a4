/**
 * The word-count stream processor, Kafka Streams style, on the event log's
 * transactional consumer. Stage 1 tokenises tweets and re-keys the counts by
 * word through the repartition topic, so each word belongs to exactly one
 * partition; stage 2 owns one state store per repartition partition (all-time
 * and tumbling-window counts), writes changed entries to a compacted
 * changelog and coalesced all-time counts to the word-count topic at every
 * commit, atomically with the consumed offsets.
 *
 * Stage 2 is idempotent: a repartition record names the tweets (source
 * partition and offset) its occurrences come from, and each word's state keeps
 * the highest tweet offset it has counted per tweet partition, so occurrences
 * at or below it are skipped. Tweets processed twice (an instance that read
 * the group's offsets while the previous owner's commit was still in flight)
 * or repartition records delivered again therefore count once.
 *
 * Traces: a repartition record continues the trace of the first tweet of the
 * batch its word occurs in, and a word's changelog entry and count update
 * continue the trace of the last repartition record that changed it, so a
 * tweet's trace runs on to analytics through both topics (records that merge
 * several tweets can continue only one of their traces).
 */
import type {
  ConsumedRecord,
  EventLog,
  RecordBatch,
  RecordHeaders,
  TopicPartition,
  Transaction,
} from "../../shared/event_log/event_log.ts";
import { partitionForKey } from "../../shared/event_log/murmur2.ts";
import { recordFailed, recordSpan, traceHeaders } from "../../shared/event_log/traced_event_log.ts";
import type { TweetCodec } from "../../shared/events/tweet_event.ts";
import type { WordCountCodec } from "../../shared/events/word_count_event.ts";
import { tokenize } from "../../shared/text/tokenize.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export interface WindowSize {
  /** As configured and as the API names it, e.g. `1m`. */
  readonly name: string;
  readonly ms: number;
}

/** Parses `30s`, `1m`, `1h`, `1d` into a window size. */
export function parseWindowSize(text: string): WindowSize | undefined {
  const match = /^([1-9][0-9]{0,5})([smhd])$/.exec(text);
  if (match === null) return undefined;
  const unit =
    { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as "s" | "m" | "h" | "d"];
  return { name: text, ms: Number(match[1]) * unit };
}

export interface WordCountTopics {
  readonly tweets: string;
  readonly repartition: string;
  readonly changelog: string;
  readonly wordCounts: string;
  /** Partitions of the repartition and changelog topics (equal, so a word maps to both alike). */
  readonly partitions: number;
}

export interface WordCountProcessorOptions {
  readonly eventLog: EventLog;
  readonly topics: WordCountTopics;
  readonly windows: readonly WindowSize[];
  readonly tweetCodec: TweetCodec;
  readonly wordCountCodec: WordCountCodec;
  /** Wall clock, for the current window. @default Date.now */
  readonly now?: () => number;
  /** Events of the tweet topic that cannot be decoded (they count no words). */
  readonly onUndecodable?: (record: ConsumedRecord, error: unknown) => void;
  readonly onRestored?: (partition: number, entries: number, ms: number) => void;
  /** The set of restored partitions changed. */
  readonly onOwnershipChange?: (partitions: readonly number[]) => void;
}

/**
 * One word's counts in one store; windows map a window start to its count;
 * counted maps a tweet partition to the highest tweet offset counted from it.
 */
interface WordState {
  count: number;
  updatedAt: number;
  readonly windows: Map<string, Map<number, number>>;
  readonly counted: Map<number, number>;
}

/** The changelog value of a word (JSON): its whole state. */
interface ChangelogEntry {
  readonly count: number;
  readonly updatedAt: number;
  readonly windows: Record<string, [number, number][]>;
  readonly counted: [number, number][];
}

/**
 * The repartition value of a word (JSON): its occurrences in one batch of the
 * tweet partition `partition`, as `[tweet offset, createdAt, occurrences]` in
 * offset order.
 */
interface RepartitionValue {
  readonly partition: number;
  readonly occurrences: [number, number, number][];
}

export interface WordCounts {
  readonly word: string;
  readonly count: number;
  readonly windows: Record<string, { start: number; count: number }>;
}

export interface TrendingWord {
  readonly word: string;
  readonly count: number;
}

export class WordCountProcessor {
  readonly #options: WordCountProcessorOptions;
  readonly #now: () => number;
  /** Restored partitions' stores. */
  readonly #stores = new Map<number, Map<string, WordState>>();
  /**
   * Words changed since the last commit, per partition, with the trace
   * headers of the record that changed each last.
   */
  readonly #dirty = new Map<number, Map<string, RecordHeaders>>();

  constructor(options: WordCountProcessorOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** The repartition partition of a word: murmur2 of its UTF-8 bytes, as the producer does. */
  partitionOf(word: string): number {
    return partitionForKey(encoder.encode(word), this.#options.topics.partitions);
  }

  /** Restored repartition partitions this instance answers for. */
  ownedPartitions(): number[] {
    return [...this.#stores.keys()].sort((a, b) => a - b);
  }

  /** The word's counts, or undefined when its partition is not restored here. */
  counts(word: string): WordCounts | undefined {
    const store = this.#stores.get(this.partitionOf(word));
    if (store === undefined) return undefined;
    const state = store.get(word);
    const now = this.#now();
    const windows: Record<string, { start: number; count: number }> = {};
    for (const size of this.#options.windows) {
      const start = windowStart(now, size);
      windows[size.name] = { start, count: state?.windows.get(size.name)?.get(start) ?? 0 };
    }
    return { word, count: state?.count ?? 0, windows };
  }

  /** Start of the window of `size` that contains now. */
  currentWindowStart(size: WindowSize): number {
    return windowStart(this.#now(), size);
  }

  /** The highest counts of the current window over this instance's partitions. */
  trending(size: WindowSize, limit: number): TrendingWord[] {
    const start = windowStart(this.#now(), size);
    const words: TrendingWord[] = [];
    for (const store of this.#stores.values()) {
      for (const [word, state] of store) {
        const count = state.windows.get(size.name)?.get(start) ?? 0;
        if (count > 0) words.push({ word, count });
      }
    }
    return topWords(words, limit);
  }

  /** The transactional handler: tweets -> repartition, repartition -> stores. */
  handle(batch: RecordBatch, transaction: Transaction): Promise<void> {
    const { topics } = this.#options;
    if (batch.topic === topics.tweets) this.#repartition(batch, transaction);
    else if (batch.topic === topics.repartition) this.#count(batch);
    return Promise.resolve();
  }

  /** Adds the changed entries to the commit: changelog and coalesced counts. */
  flush(transaction: Transaction): void {
    const { topics, wordCountCodec } = this.#options;
    for (const [partition, words] of this.#dirty) {
      const store = this.#stores.get(partition);
      if (store === undefined || words.size === 0) continue;
      const changelog = [];
      const updates = [];
      for (const [word, headers] of words) {
        const state = store.get(word)!;
        const key = encoder.encode(word);
        changelog.push({ key, value: encoder.encode(JSON.stringify(toEntry(state))), headers });
        updates.push({
          key,
          value: wordCountCodec.encode({
            word,
            count: BigInt(state.count),
            updatedAt: state.updatedAt,
          }),
          headers,
        });
      }
      transaction.send(topics.changelog, changelog);
      transaction.send(topics.wordCounts, updates);
    }
    this.#dirty.clear();
  }

  /** Restores the stores of newly owned repartition partitions from the changelog. */
  async restore(partitions: readonly TopicPartition[]): Promise<void> {
    const { topics, eventLog } = this.#options;
    const owned = partitions
      .filter(({ topic }) => topic === topics.repartition)
      .map(({ partition }) => partition);
    await Promise.all(owned.map(async (partition) => {
      const started = performance.now();
      const store = new Map<string, WordState>();
      await eventLog.readPartition(topics.changelog, partition, 0, (records) => {
        for (const record of records) {
          if (record.key === null) continue;
          store.set(
            decoder.decode(record.key),
            fromEntry(JSON.parse(decoder.decode(record.value))),
          );
        }
      });
      this.#stores.set(partition, store);
      this.#options.onRestored?.(partition, store.size, performance.now() - started);
    }));
    if (owned.length > 0) this.#options.onOwnershipChange?.(this.ownedPartitions());
  }

  /** Drops the stores of partitions lost or whose uncommitted work was aborted. */
  revoke(partitions: readonly TopicPartition[]): void {
    let changed = false;
    for (const { topic, partition } of partitions) {
      if (topic !== this.#options.topics.repartition) continue;
      changed = this.#stores.delete(partition) || changed;
      this.#dirty.delete(partition);
    }
    if (changed) this.#options.onOwnershipChange?.(this.ownedPartitions());
  }

  #repartition(batch: RecordBatch, transaction: Transaction): void {
    const { tweetCodec, topics } = this.#options;
    // word -> [offset, createdAt, occurrences], so one record per word per batch,
    // in the trace of the word's first tweet.
    const occurrences = new Map<string, [number, number, number][]>();
    const traces = new Map<string, RecordHeaders>();
    for (const record of batch.records) {
      let tweet;
      try {
        tweet = tweetCodec.decode(record.value);
      } catch (error) {
        recordFailed(record, error);
        this.#options.onUndecodable?.(record, error);
        continue;
      }
      recordSpan(record)?.setAttribute("tweet.id", tweet.id.toString());
      for (const word of tokenize(tweet.text)) {
        let tweets = occurrences.get(word);
        if (tweets === undefined) {
          occurrences.set(word, tweets = []);
          traces.set(word, traceHeaders(record));
        }
        const last = tweets.at(-1);
        if (last?.[0] === record.offset) last[2]++;
        else tweets.push([record.offset, tweet.createdAt, 1]);
      }
    }
    transaction.send(
      topics.repartition,
      [...occurrences].map(([word, tweets]) => {
        const value: RepartitionValue = { partition: batch.partition, occurrences: tweets };
        return {
          key: encoder.encode(word),
          value: encoder.encode(JSON.stringify(value)),
          headers: traces.get(word)!,
        };
      }),
    );
  }

  #count(batch: RecordBatch): void {
    const store = this.#stores.get(batch.partition);
    // The event log delivers only restored partitions; a store is always there.
    if (store === undefined) throw new Error(`No state for partition ${batch.partition}`);
    let dirty = this.#dirty.get(batch.partition);
    if (dirty === undefined) this.#dirty.set(batch.partition, dirty = new Map());
    const oldest = this.#oldestKept();
    for (const record of batch.records) {
      if (record.key === null) continue;
      const word = decoder.decode(record.key);
      const value = JSON.parse(decoder.decode(record.value)) as RepartitionValue;
      let state = store.get(word);
      if (state === undefined) {
        store.set(word, state = { count: 0, updatedAt: 0, windows: new Map(), counted: new Map() });
      }
      // A producer starts at a committed tweet offset, whose earlier tweets'
      // records were committed (and so precede its own here), and sends a
      // word's tweets of a partition in offset order: a tweet at or below the
      // highest counted one is a duplicate, every tweet above it is new.
      const highest = state.counted.get(value.partition) ?? -1;
      let applied = false;
      for (const [offset, createdAt, occurrences] of value.occurrences) {
        if (offset <= highest) continue;
        applied = true;
        state.counted.set(value.partition, offset);
        state.count += occurrences;
        state.updatedAt = Math.max(state.updatedAt, createdAt);
        for (const size of this.#options.windows) {
          const start = windowStart(createdAt, size);
          if (start < oldest.get(size.name)!) continue;
          let windows = state.windows.get(size.name);
          if (windows === undefined) state.windows.set(size.name, windows = new Map());
          windows.set(start, (windows.get(start) ?? 0) + occurrences);
        }
      }
      if (!applied) continue;
      for (const size of this.#options.windows) {
        const windows = state.windows.get(size.name);
        if (windows === undefined) continue;
        for (const start of windows.keys()) {
          if (start < oldest.get(size.name)!) windows.delete(start);
        }
      }
      dirty.set(word, traceHeaders(record));
    }
  }

  /** Windows before the previous one are dropped: the current and the last are kept. */
  #oldestKept(): Map<string, number> {
    const now = this.#now();
    return new Map(
      this.#options.windows.map((size) => [size.name, windowStart(now, size) - size.ms]),
    );
  }
}

export function windowStart(time: number, size: WindowSize): number {
  return Math.floor(time / size.ms) * size.ms;
}

/** Highest counts first; equal counts by word, so every instance orders alike. */
export function topWords(words: readonly TrendingWord[], limit: number): TrendingWord[] {
  return [...words]
    .sort((a, b) => b.count - a.count || (a.word < b.word ? -1 : a.word > b.word ? 1 : 0))
    .slice(0, limit);
}

function toEntry(state: WordState): ChangelogEntry {
  const windows: Record<string, [number, number][]> = {};
  for (const [name, counts] of state.windows) windows[name] = [...counts];
  return { count: state.count, updatedAt: state.updatedAt, windows, counted: [...state.counted] };
}

function fromEntry(entry: ChangelogEntry): WordState {
  return {
    count: entry.count,
    updatedAt: entry.updatedAt,
    windows: new Map(
      Object.entries(entry.windows).map(([name, counts]) => [name, new Map(counts)]),
    ),
    counted: new Map(entry.counted),
  };
}
