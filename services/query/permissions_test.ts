import assert from "node:assert/strict";
import {
  connectPostgres,
  memoryPglite,
  uniqueSchema,
} from "../../shared/database/database_contract.ts";
import type { SqlDatabase } from "../../shared/database/database.ts";
import { migrate } from "../../shared/database/migrations.ts";
import { PgliteDatabase } from "../../shared/database/pglite_database.ts";
import { PostgresDatabase } from "../../shared/database/postgres_database.ts";
import type { Visibility } from "../../shared/search_index/search_index.ts";
import {
  allows,
  PERMISSION_MIGRATIONS,
  PermissionStore,
  VisibilityCache,
  visibilityFrom,
} from "./permissions.ts";

Deno.test("permission levels are ordered: ADMIN includes WRITE includes READ", () => {
  assert.ok(allows("ADMIN", "READ") && allows("ADMIN", "WRITE") && allows("ADMIN", "ADMIN"));
  assert.ok(allows("WRITE", "READ") && allows("WRITE", "WRITE") && !allows("WRITE", "ADMIN"));
  assert.ok(allows("READ", "READ") && !allows("READ", "WRITE") && !allows("READ", "ADMIN"));
  assert.deepEqual(
    visibilityFrom([
      { userId: "u", scope: "tweet", target: "1", level: "READ" },
      { userId: "u", scope: "author", target: "2", level: "ADMIN" },
      { userId: "u", scope: "tweet", target: "3", level: "WRITE" },
    ]),
    { all: false, tweetIds: ["1", "3"], authorIds: ["2"] },
  );
});

function storeContract(name: string, open: () => Promise<SqlDatabase>): void {
  Deno.test(`PermissionStore on ${name} grants idempotently, revokes, and lists`, async () => {
    const db = await open();
    const schema = uniqueSchema("query_test");
    try {
      assert.deepEqual(await migrate(db, { schema, migrations: PERMISSION_MIGRATIONS }), [
        "0001_grants",
      ]);
      const store = new PermissionStore(db, schema);
      const alice = crypto.randomUUID();
      assert.deepEqual(await store.visibilityOf(alice), {
        all: false,
        tweetIds: [],
        authorIds: [],
      });
      assert.equal(
        await store.grant({ userId: alice, scope: "tweet", target: "7", level: "READ" }),
        true,
      );
      assert.equal(
        await store.grant({ userId: alice, scope: "tweet", target: "7", level: "READ" }),
        false,
      );
      assert.equal(
        await store.grant({ userId: alice, scope: "tweet", target: "7", level: "ADMIN" }),
        true,
      );
      await store.grant({ userId: alice, scope: "author", target: "42", level: "READ" });
      const grants = await store.grantsOf(alice);
      assert.deepEqual(grants.map(({ scope, target, level }) => ({ scope, target, level })), [
        { scope: "author", target: "42", level: "READ" },
        { scope: "tweet", target: "7", level: "ADMIN" },
      ]);
      assert.ok(grants.every((grant) => grant.grantedAt instanceof Date));
      assert.deepEqual(await store.visibilityOf(alice), {
        all: false,
        tweetIds: ["7"],
        authorIds: ["42"],
      });
      await store.grant({ userId: alice, scope: "all", target: "", level: "READ" });
      assert.equal((await store.visibilityOf(alice)).all, true);
      assert.equal(await store.revoke({ userId: alice, scope: "all", target: "" }), true);
      assert.equal(await store.revoke({ userId: alice, scope: "all", target: "" }), false);
      assert.equal((await store.visibilityOf(alice)).all, false);
      // Another user's grants stay apart.
      assert.deepEqual(await store.grantsOf(crypto.randomUUID()), []);
      await assert.rejects(
        store.grant({ userId: alice, scope: "all", target: "1", level: "READ" }),
        /check constraint/,
      );
    } finally {
      await db.execute(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await db.close();
    }
  });
}

storeContract("PGlite", async () => new PgliteDatabase(await memoryPglite()));
storeContract("PostgreSQL", async () => new PostgresDatabase(await connectPostgres()));

const NONE: Visibility = { all: false, tweetIds: [], authorIds: [] };

Deno.test("VisibilityCache loads once per user until invalidated or expired", async () => {
  const clock = { now: 0 };
  const loads: string[] = [];
  let current: Visibility = NONE;
  const cache = new VisibilityCache({
    load: (userId) => {
      loads.push(userId);
      return Promise.resolve(current);
    },
    maxUsers: 2,
    ttlMs: 1000,
    now: () => clock.now,
  });
  const [first, second] = await Promise.all([cache.visibilityOf("a"), cache.visibilityOf("a")]);
  assert.equal(first, NONE);
  assert.equal(second, NONE);
  assert.deepEqual(loads, ["a"]);
  current = { all: true, tweetIds: [], authorIds: [] };
  assert.equal(await cache.visibilityOf("a"), NONE);
  cache.invalidate("a");
  assert.equal((await cache.visibilityOf("a")).all, true);
  clock.now = 999;
  await cache.visibilityOf("a");
  assert.deepEqual(loads, ["a", "a"]);
  clock.now = 2000;
  await cache.visibilityOf("a");
  assert.deepEqual(loads, ["a", "a", "a"]);
  // Bounded: the least recently used user goes.
  await cache.visibilityOf("b");
  await cache.visibilityOf("a");
  await cache.visibilityOf("c");
  assert.equal(cache.size, 2);
  await cache.visibilityOf("a");
  await cache.visibilityOf("b");
  assert.deepEqual(loads.slice(3), ["b", "c", "b"]);
  cache.clear();
  assert.equal(cache.size, 0);
  await cache.visibilityOf("a");
  assert.deepEqual(loads.slice(6), ["a"]);
});

Deno.test("VisibilityCache does not keep a load that an invalidation overtook", async () => {
  const release = Promise.withResolvers<void>();
  let calls = 0;
  const cache = new VisibilityCache({
    load: async () => {
      calls++;
      if (calls === 1) {
        await release.promise;
        return NONE;
      }
      return { all: true, tweetIds: [], authorIds: [] };
    },
    maxUsers: 10,
    ttlMs: 60_000,
  });
  const stale = cache.visibilityOf("a");
  cache.invalidate("a");
  release.resolve();
  assert.equal(await stale, NONE);
  assert.equal((await cache.visibilityOf("a")).all, true);
  assert.equal(calls, 2);
});
