import assert from "node:assert/strict";
import { runDatabaseContract, uniqueSchema } from "./database_contract.ts";
import { PgliteDatabase } from "./pglite_database.ts";
import { startPglite } from "./pglite_thread.ts";

// One template for the run: the first database initialises it, the others load it.
const templateFile = `${await Deno.makeTempDir({ prefix: "pglite-thread-test-" })}/cluster.tar`;

runDatabaseContract(
  "PgliteDatabase on a worker thread",
  () => Promise.resolve(new PgliteDatabase(startPglite({ templateFile }))),
);

// What the services of one process do: one server, a database (and schema) each.
const shared = startPglite({ templateFile });
runDatabaseContract(
  "PgliteDatabase sharing one worker-thread server",
  () => Promise.resolve(new PgliteDatabase(shared, { ownsInstance: false })),
);

Deno.test("databases sharing a server: one's open transaction is invisible to the other, and closing one leaves the other working", async () => {
  const server = startPglite({ templateFile });
  const first = new PgliteDatabase(server, { ownsInstance: false });
  const second = new PgliteDatabase(server, { ownsInstance: false });
  try {
    const schema = uniqueSchema("shared");
    await first.execute(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.items (id int)`);
    let release!: () => void;
    const held = new Promise<void>((resolve) => release = resolve);
    let inserted!: () => void;
    const insertedInTransaction = new Promise<void>((resolve) => inserted = resolve);
    const transaction = first.transaction(async (tx) => {
      await tx.query(`INSERT INTO ${schema}.items VALUES (1)`);
      inserted();
      await held;
      throw new Error("rolled back on purpose");
    });
    await insertedInTransaction;
    // The other database's statement waits for the transaction to end.
    const counted = second.query<{ count: string }>(`SELECT count(*) FROM ${schema}.items`);
    release();
    await assert.rejects(transaction, /rolled back on purpose/);
    assert.deepEqual(await counted, [{ count: "0" }]);

    await first.close();
    assert.deepEqual(await second.query("SELECT 1 AS one"), [{ one: 1 }]);
  } finally {
    await second.close();
    await server.close();
  }
});

addEventListener("unload", () => void shared.close());
