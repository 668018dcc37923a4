/**
 * The analytics schema, the same on PGlite and PostgreSQL. Counts are
 * all-time and only grow, so `(word, count)` identifies one update: a
 * redelivered update finds its history row already there. Words compare
 * byte-wise (`COLLATE "C"`), so orders and ties are the same on every server.
 */
import type { Migration } from "../../shared/database/migrations.ts";

export const ANALYTICS_SCHEMA = "analytics";

export const ANALYTICS_MIGRATIONS: readonly Migration[] = [
  {
    id: "0001_word_counts",
    sql: `
      CREATE TABLE word_counts (
        word text COLLATE "C" PRIMARY KEY,
        count bigint NOT NULL CHECK (count >= 0),
        updated_at timestamptz NOT NULL
      );
      CREATE INDEX word_counts_by_count ON word_counts (count DESC, word);

      CREATE TABLE word_count_history (
        word text COLLATE "C" NOT NULL,
        count bigint NOT NULL CHECK (count >= 0),
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (word, count)
      );
      CREATE INDEX word_count_history_by_time ON word_count_history (word, updated_at);
    `,
  },
];
