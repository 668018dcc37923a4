/**
 * The embedded log aggregation: a sink that keeps the most recent lines of
 * this process in memory (bounded, the oldest evicted first), and the reader
 * that searches them. Lines live in this process only.
 */
import type { LogRecord, Sink } from "@logtape/logtape";
import {
  levelsFrom,
  type LogEntry,
  logEntryOf,
  type LogQuery,
  type LogReader,
  searchLimit,
  wordsOf,
} from "./log_reader.ts";

export interface MemoryLogStoreOptions {
  /** Lines kept; the oldest are evicted beyond it. @default 10_000 */
  readonly maxEntries?: number;
}

interface StoredEntry {
  readonly entry: LogEntry;
  /** The message's words, for text search. */
  readonly words: ReadonlySet<string>;
}

export class MemoryLogStore implements LogReader {
  readonly #maxEntries: number;
  /** A ring buffer: `#next` is where the next line goes. */
  readonly #entries: (StoredEntry | undefined)[];
  #next = 0;
  #size = 0;

  constructor(options: MemoryLogStoreOptions = {}) {
    const { maxEntries = 10_000 } = options;
    if (!Number.isInteger(maxEntries) || maxEntries < 1) {
      throw new RangeError(
        `Cannot keep log lines: 'maxEntries' must be a positive integer, got ${maxEntries}`,
      );
    }
    this.#maxEntries = maxEntries;
    this.#entries = new Array(maxEntries);
  }

  /** The sink that stores every line it receives (records from `correlatingSink`). */
  readonly sink: Sink = (record: LogRecord) => {
    const entry = logEntryOf(record);
    this.#entries[this.#next] = { entry, words: new Set(wordsOf(entry.message)) };
    this.#next = (this.#next + 1) % this.#maxEntries;
    this.#size = Math.min(this.#size + 1, this.#maxEntries);
  };

  /** Lines kept now. */
  get size(): number {
    return this.#size;
  }

  search(query: LogQuery): Promise<LogEntry[]> {
    return Promise.resolve(query).then((query) => this.#find(query));
  }

  #find(query: LogQuery): LogEntry[] {
    const limit = searchLimit(query);
    const levels = query.level === undefined ? undefined : new Set(levelsFrom(query.level));
    const words = query.text === undefined ? [] : wordsOf(query.text);
    const matches = (stored: StoredEntry): boolean => {
      const { entry } = stored;
      return (query.traceId === undefined || entry.traceId === query.traceId) &&
        (query.service === undefined || entry.service === query.service) &&
        (levels === undefined || levels.has(entry.level)) &&
        (query.from === undefined || entry.timestamp >= query.from) &&
        (query.to === undefined || entry.timestamp < query.to) &&
        words.every((word) => stored.words.has(word));
    };
    const found: LogEntry[] = [];
    for (let age = 0; age < this.#size; age++) {
      const slot = (this.#next - 1 - age + this.#maxEntries) % this.#maxEntries;
      const stored = this.#entries[slot]!;
      if (matches(stored)) found.push(stored.entry);
    }
    // Lines arrive in logging order, which is time order within one process;
    // a stable sort keeps arrival order among lines of the same millisecond.
    found.sort((a, b) => b.timestamp - a.timestamp);
    return found.slice(0, limit);
  }
}
