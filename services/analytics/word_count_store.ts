/**
 * The analytics tables: the latest count of every word and a bounded history
 * of its updates. Writes are idempotent, so a redelivered batch changes
 * nothing, and monotonic, so an older update arriving after a newer one
 * never replaces it.
 */
import type { SqlDatabase } from "../../shared/database/database.ts";
import type { TimeRange } from "../../shared/http/time_range.ts";

/** One word-count update, validated: a normalised word and a safe count. */
export interface WordCountUpdate {
  readonly word: string;
  /** All-time count after the update. */
  readonly count: number;
  /** Epoch milliseconds of the newest tweet counted. */
  readonly updatedAt: number;
}

export interface HistoryEntry {
  readonly count: number;
  readonly updatedAt: number;
}

export interface WordCountStoreOptions {
  /** The schema the analytics migrations were applied to. */
  readonly schema: string;
  /** Updates kept per word, the newest ones. */
  readonly historyPerWord: number;
}

interface WordCountRow {
  word: string;
  count: string;
  updated_at: Date;
}

function toUpdate(row: WordCountRow): WordCountUpdate {
  return { word: row.word, count: Number(row.count), updatedAt: row.updated_at.getTime() };
}

/** Whether `a` is a later state of its word than `b`: counts only grow. */
function isNewer(a: WordCountUpdate, b: WordCountUpdate): boolean {
  return a.count > b.count || (a.count === b.count && a.updatedAt > b.updatedAt);
}

function byWord(a: WordCountUpdate, b: WordCountUpdate): number {
  return a.word < b.word ? -1 : a.word > b.word ? 1 : a.count - b.count;
}

export class WordCountStore {
  readonly #db: SqlDatabase;
  readonly #schema: string;
  readonly #historyPerWord: number;

  constructor(db: SqlDatabase, options: WordCountStoreOptions) {
    this.#db = db;
    this.#schema = options.schema;
    this.#historyPerWord = options.historyPerWord;
  }

  /**
   * Records a batch of updates in one transaction of three set-based
   * statements: the latest counts, the history rows, the history trimmed to
   * its bound. Rows are written in word order, so concurrent batches that
   * share words lock them in the same order.
   */
  async record(updates: readonly WordCountUpdate[]): Promise<void> {
    if (updates.length === 0) return;
    const latest = new Map<string, WordCountUpdate>();
    const history = new Map<string, WordCountUpdate>();
    for (const update of updates) {
      const current = latest.get(update.word);
      if (current === undefined || isNewer(update, current)) latest.set(update.word, update);
      const key = `${update.count}:${update.word}`;
      const seen = history.get(key);
      if (seen === undefined || update.updatedAt > seen.updatedAt) history.set(key, update);
    }
    const rows = (items: Iterable<WordCountUpdate>) =>
      [...items].sort(byWord).map(({ word, count, updatedAt }) => ({ word, count, updatedAt }));
    const schema = this.#schema;
    const updatesOf =
      `jsonb_to_recordset($1::jsonb) AS u(word text, count bigint, "updatedAt" bigint)`;
    const updatedAt = `timestamptz 'epoch' + u."updatedAt" * interval '1 millisecond'`;
    await this.#db.transaction(async (tx) => {
      await tx.query(
        `INSERT INTO ${schema}.word_counts AS current (word, count, updated_at)
         SELECT u.word, u.count, ${updatedAt} FROM ${updatesOf}
         ON CONFLICT (word) DO UPDATE SET count = excluded.count, updated_at = excluded.updated_at
          WHERE (excluded.count, excluded.updated_at) > (current.count, current.updated_at)`,
        [rows(latest.values())],
      );
      await tx.query(
        `INSERT INTO ${schema}.word_count_history (word, count, updated_at)
         SELECT u.word, u.count, ${updatedAt} FROM ${updatesOf}
         ON CONFLICT (word, count) DO NOTHING`,
        [rows(history.values())],
      );
      await tx.query(
        `DELETE FROM ${schema}.word_count_history AS h
          USING (SELECT word, count,
                        row_number() OVER (PARTITION BY word ORDER BY count DESC) AS position
                   FROM ${schema}.word_count_history
                  WHERE word IN (SELECT jsonb_array_elements_text($1::jsonb))) AS ranked
          WHERE ranked.position > $2::int AND h.word = ranked.word AND h.count = ranked.count`,
        [[...latest.keys()].sort(), this.#historyPerWord],
      );
    });
  }

  /** The latest count of `word`, or undefined when it was never recorded. */
  async latest(word: string): Promise<WordCountUpdate | undefined> {
    const [row] = await this.#db.query<WordCountRow>(
      `SELECT word, count, updated_at FROM ${this.#schema}.word_counts WHERE word = $1`,
      [word],
    );
    return row === undefined ? undefined : toUpdate(row);
  }

  /** The kept updates of `word` within `range`, oldest first. */
  async history(word: string, range: TimeRange): Promise<HistoryEntry[]> {
    const rows = await this.#db.query<WordCountRow>(
      `SELECT word, count, updated_at FROM ${this.#schema}.word_count_history
        WHERE word = $1
          AND ($2::int8 IS NULL OR updated_at >= timestamptz 'epoch' + $2::int8 * interval '1 millisecond')
          AND ($3::int8 IS NULL OR updated_at <= timestamptz 'epoch' + $3::int8 * interval '1 millisecond')
        ORDER BY updated_at, count`,
      [word, range.from ?? null, range.to ?? null],
    );
    return rows.map((row) => {
      const { count, updatedAt } = toUpdate(row);
      return { count, updatedAt };
    });
  }

  /** The `limit` words with the highest latest counts, highest first (ties by word). */
  async top(limit: number): Promise<WordCountUpdate[]> {
    const rows = await this.#db.query<WordCountRow>(
      `SELECT word, count, updated_at FROM ${this.#schema}.word_counts
        ORDER BY count DESC, word LIMIT $1::int`,
      [limit],
    );
    return rows.map(toUpdate);
  }
}
