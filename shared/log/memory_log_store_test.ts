import assert from "node:assert/strict";
import { runLogReaderContract } from "./log_reader_contract.ts";
import { MemoryLogStore } from "./memory_log_store.ts";

runLogReaderContract("MemoryLogStore", () => {
  const store = new MemoryLogStore();
  return Promise.resolve({
    sink: store.sink,
    reader: store,
    settle: () => Promise.resolve(),
    close: () => Promise.resolve(),
  });
});

Deno.test("MemoryLogStore keeps only the newest lines beyond its bound", async () => {
  const store = new MemoryLogStore({ maxEntries: 3 });
  for (let index = 0; index < 5; index++) {
    store.sink({
      category: ["twitterapi", "query"],
      level: "info",
      timestamp: 1000 + index,
      rawMessage: `line ${index}`,
      message: [`line ${index}`],
      properties: {},
    });
  }
  assert.equal(store.size, 3);
  const found = await store.search({});
  assert.deepEqual(found.map((entry) => entry.message), ["line 4", "line 3", "line 2"]);
});
