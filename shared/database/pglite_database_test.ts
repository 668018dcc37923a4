import { memoryPglite, runDatabaseContract } from "./database_contract.ts";
import { PgliteDatabase } from "./pglite_database.ts";

runDatabaseContract("PgliteDatabase", async () => new PgliteDatabase(await memoryPglite()));
