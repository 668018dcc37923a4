/**
 * The embedded log's storage: topics of partitions held in memory, with
 * bounded retention, and the signal that wakes idle members.
 */

import {
  type ConsumedRecord,
  type ProducerRecord,
  type RecordHeaders,
  type TopicPartition,
} from "./event_log.ts";
import { partitionForKey } from "./murmur2.ts";

export const NO_HEADERS: RecordHeaders = Object.freeze({});

/** Wakes idle members when records arrive, partitions are released or members stop. */
export class Signal {
  #waiters: (() => void)[] = [];

  wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  notify(): void {
    if (this.#waiters.length === 0) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}

export interface Retention {
  readonly maxRecords: number;
  /** Records appended before `now() - maxAgeMs` are dropped; `Infinity` disables. */
  readonly maxAgeMs: number;
  readonly now: () => number;
}

export class Partition implements TopicPartition {
  // Dropped records stay in the arrays until the dropped prefix dominates, so
  // trimming costs amortised O(1) per record instead of a shift per drop.
  #records: ConsumedRecord[] = [];
  #appendedAt: number[] = [];
  /** Index of the oldest retained record. */
  #first = 0;
  /** Offset of `#records[0]`. */
  #base = 0;

  readonly #retention: Retention;

  constructor(readonly topic: string, readonly partition: number, retention: Retention) {
    this.#retention = retention;
  }

  get logStart(): number {
    return this.#base + this.#first;
  }

  get highWatermark(): number {
    return this.#base + this.#records.length;
  }

  append(record: ProducerRecord, now: number): number {
    const offset = this.highWatermark;
    this.#records.push({
      topic: this.topic,
      partition: this.partition,
      offset,
      key: record.key,
      value: record.value,
      headers: record.headers ?? NO_HEADERS,
      timestamp: record.timestamp ?? now,
    });
    this.#appendedAt.push(now);
    return offset;
  }

  /** Up to `max` records from `offset`, or from the log start if that is later. */
  read(offset: number, max: number): ConsumedRecord[] {
    this.trim(this.#retention.now());
    const start = Math.max(offset, this.logStart) - this.#base;
    return this.#records.slice(start, start + max);
  }

  trim(now: number): void {
    const { maxRecords, maxAgeMs } = this.#retention;
    const cutoff = now - maxAgeMs;
    const length = this.#records.length;
    let first = Math.max(this.#first, length - maxRecords);
    while (first < length && this.#appendedAt[first]! < cutoff) first++;
    if (first === this.#first) return;
    if (first >= 1024 && first * 2 >= length) {
      this.#records = this.#records.slice(first);
      this.#appendedAt = this.#appendedAt.slice(first);
      this.#base += first;
      this.#first = 0;
    } else {
      this.#first = first;
    }
  }
}

export class Topic {
  readonly partitions: readonly Partition[];
  #roundRobin = 0;

  constructor(readonly name: string, count: number, retention: Retention) {
    this.partitions = Array.from({ length: count }, (_, i) => new Partition(name, i, retention));
  }

  partitionFor(key: Uint8Array | null): Partition {
    const count = this.partitions.length;
    const index = key === null ? this.#roundRobin++ % count : partitionForKey(key, count);
    return this.partitions[index]!;
  }
}
