/**
 * The analytics schema and store on both engines: the embedded PGlite and
 * the PostgreSQL server at DATABASE_URL (127.0.0.1:5432 by default; these
 * tests fail, never skip, when it is down). Each case works in a schema of
 * its own, dropped afterwards.
 */
import assert from "node:assert/strict";
import type { SqlDatabase } from "../../shared/database/database.ts";
import {
  connectPostgres,
  describeColumns,
  describeKeys,
  memoryPglite,
  uniqueSchema,
} from "../../shared/database/database_contract.ts";
import { migrate } from "../../shared/database/migrations.ts";
import { PgliteDatabase } from "../../shared/database/pglite_database.ts";
import { PostgresDatabase } from "../../shared/database/postgres_database.ts";
import { ANALYTICS_MIGRATIONS } from "./migrations.ts";
import { WordCountStore, type WordCountUpdate } from "./word_count_store.ts";

const ENGINES = {
  PGlite: async () => new PgliteDatabase(await memoryPglite()),
  PostgreSQL: async () => new PostgresDatabase(await connectPostgres()),
} as const;

const T0 = Date.UTC(2026, 10, 24, 10, 0, 0);

function update(word: string, count: number, secondsAfterT0 = count): WordCountUpdate {
  return { word, count, updatedAt: T0 + secondsAfterT0 * 1000 };
}

/** Every row of both tables, for comparing whole states. */
async function snapshot(db: SqlDatabase, schema: string) {
  return {
    latest: await db.query(`SELECT * FROM ${schema}.word_counts ORDER BY word`),
    history: await db.query(`SELECT * FROM ${schema}.word_count_history ORDER BY word, count`),
  };
}

function storeTest(
  behaviour: string,
  body: (store: WordCountStore, db: SqlDatabase, schema: string) => Promise<void>,
  historyPerWord = 100,
): void {
  for (const [engine, open] of Object.entries(ENGINES)) {
    Deno.test(`analytics store on ${engine} ${behaviour}`, async () => {
      const db = await open();
      const schema = uniqueSchema("analytics");
      try {
        await migrate(db, { schema, migrations: ANALYTICS_MIGRATIONS });
        await body(new WordCountStore(db, { schema, historyPerWord }), db, schema);
      } finally {
        try {
          await db.execute(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        } finally {
          await db.close();
        }
      }
    });
  }
}

Deno.test("analytics migrations give PGlite and PostgreSQL the same tables and keys", async () => {
  const schema = uniqueSchema("analytics");
  const pglite = new PgliteDatabase(await memoryPglite());
  const server = new PostgresDatabase(await connectPostgres());
  try {
    const ids = ANALYTICS_MIGRATIONS.map((migration) => migration.id);
    assert.deepEqual(await migrate(pglite, { schema, migrations: ANALYTICS_MIGRATIONS }), ids);
    assert.deepEqual(await migrate(server, { schema, migrations: ANALYTICS_MIGRATIONS }), ids);
    assert.deepEqual(await migrate(server, { schema, migrations: ANALYTICS_MIGRATIONS }), []);
    const columns = await describeColumns(server, schema);
    assert.deepEqual(
      columns.map((column) => (column as { column_name: string }).column_name),
      ["id", "applied_at", "word", "count", "updated_at", "word", "count", "updated_at"],
    );
    assert.deepEqual(await describeColumns(pglite, schema), columns);
    assert.deepEqual(await describeKeys(pglite, schema), await describeKeys(server, schema));
  } finally {
    await server.execute(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).finally(() => server.close());
    await pglite.close();
  }
});

storeTest("keeps the latest count per word and its history", async (store) => {
  await store.record([update("kafka", 1), update("java", 4), update("kafka", 2)]);
  await store.record([update("kafka", 5)]);
  assert.deepEqual(await store.latest("kafka"), update("kafka", 5));
  assert.deepEqual(await store.latest("java"), update("java", 4));
  assert.equal(await store.latest("spring"), undefined);
  assert.deepEqual(await store.history("kafka", {}), [
    { count: 1, updatedAt: T0 + 1000 },
    { count: 2, updatedAt: T0 + 2000 },
    { count: 5, updatedAt: T0 + 5000 },
  ]);
  assert.deepEqual(await store.history("spring", {}), []);
});

storeTest("changes nothing when a batch is delivered again", async (store, db, schema) => {
  const batch = [update("kafka", 1), update("kafka", 2), update("java", 3), update("kafka", 2)];
  await store.record(batch);
  const once = await snapshot(db, schema);
  assert.equal(once.history.length, 3);
  await store.record(batch);
  assert.deepEqual(await snapshot(db, schema), once);
});

storeTest("never lets an older update replace a newer one", async (store, db, schema) => {
  await store.record([update("kafka", 7)]);
  await store.record([update("kafka", 5)]);
  assert.deepEqual(await store.latest("kafka"), update("kafka", 7));
  // In one batch, too, and with an older update of the same count.
  await store.record([update("kafka", 9), update("kafka", 8), update("kafka", 7, 3)]);
  assert.deepEqual(await store.latest("kafka"), update("kafka", 9));
  // The same count later (a count computed again) moves the time on.
  await store.record([update("kafka", 9, 12)]);
  assert.deepEqual(await store.latest("kafka"), update("kafka", 9, 12));
  assert.deepEqual((await snapshot(db, schema)).history.map((row) => Number(row.count)), [
    5,
    7,
    8,
    9,
  ]);
});

storeTest("keeps only the newest updates of each word", async (store, db, schema) => {
  await store.record([1, 2, 3, 4].map((count) => update("kafka", count)));
  await store.record([update("kafka", 5), update("java", 1)]);
  assert.deepEqual((await store.history("kafka", {})).map((entry) => entry.count), [3, 4, 5]);
  // A redelivered update that was trimmed away does not come back.
  await store.record([update("kafka", 1)]);
  assert.deepEqual((await store.history("kafka", {})).map((entry) => entry.count), [3, 4, 5]);
  assert.deepEqual((await store.history("java", {})).map((entry) => entry.count), [1]);
  assert.equal((await snapshot(db, schema)).history.length, 4);
}, 3);

storeTest("filters the history by time, both bounds inclusive", async (store) => {
  await store.record([10, 20, 30, 40].map((count) => update("kafka", count)));
  const at = (count: number) => T0 + count * 1000;
  const counts = async (from?: number, to?: number) =>
    (await store.history("kafka", {
      ...(from === undefined ? {} : { from }),
      ...(to === undefined ? {} : { to }),
    })).map((entry) => entry.count);
  assert.deepEqual(await counts(at(20)), [20, 30, 40]);
  assert.deepEqual(await counts(undefined, at(30)), [10, 20, 30]);
  assert.deepEqual(await counts(at(20), at(30)), [20, 30]);
  assert.deepEqual(await counts(at(20) + 1, at(30) - 1), []);
});

storeTest("ranks the top words by count, ties by word", async (store) => {
  await store.record([
    update("kafka", 5),
    update("java", 9),
    update("spring", 5),
    update("\u00e9t\u00e9", 1),
  ]);
  assert.deepEqual((await store.top(3)).map(({ word, count }) => [word, count]), [
    ["java", 9],
    ["kafka", 5],
    ["spring", 5],
  ]);
  assert.equal((await store.top(100)).length, 4);
});

storeTest("keeps counts up to 2^53 - 1 and times to the millisecond", async (store) => {
  const big = { word: "kafka", count: Number.MAX_SAFE_INTEGER, updatedAt: T0 + 123 };
  await store.record([big]);
  assert.deepEqual(await store.latest("kafka"), big);
  assert.deepEqual(await store.history("kafka", {}), [{ count: big.count, updatedAt: T0 + 123 }]);
});

storeTest("writes a batch of many words in one transaction", async (store, db, schema) => {
  const words = Array.from({ length: 2_000 }, (_, i) => update(`w${i}`, i + 1));
  await store.record(words);
  await store.record(words.slice(0, 1000).map((word) => ({ ...word, count: word.count + 1 })));
  const [row] = await db.query<{ words: number; history: number }>(
    `SELECT (SELECT count(*)::int FROM ${schema}.word_counts) AS words,
            (SELECT count(*)::int FROM ${schema}.word_count_history) AS history`,
  );
  assert.deepEqual(row, { words: 2_000, history: 3_000 });
  assert.deepEqual(await store.latest("w0"), update("w0", 2, 1));
});
