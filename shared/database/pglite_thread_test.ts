import { runDatabaseContract } from "./database_contract.ts";
import { PgliteDatabase } from "./pglite_database.ts";
import { startPglite } from "./pglite_thread.ts";

// One template for the run: the first database initialises it, the others load it.
const templateFile = `${await Deno.makeTempDir({ prefix: "pglite-thread-test-" })}/cluster.tar`;

runDatabaseContract(
  "PgliteDatabase on a worker thread",
  () => Promise.resolve(new PgliteDatabase(startPglite({ templateFile }))),
);
