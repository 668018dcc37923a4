import assert from "node:assert/strict";
import { InvalidDocumentError, InvalidQueryError, SearchIndexClosedError } from "./documents.ts";
import { MemorySearchIndex } from "./memory_search_index.ts";
import type { SearchCursor, SearchFilter, SearchPage, TweetDocument } from "./search_index.ts";
import { runSearchIndexContract } from "./search_index_contract.ts";
import { tokenize } from "../text/tokenize.ts";

runSearchIndexContract("MemorySearchIndex", () => Promise.resolve(new MemorySearchIndex()));

const T0 = Date.UTC(2024, 0, 1);

function tweet(id: number, createdAt: number, text = "hello", userId = "1"): TweetDocument {
  return { id: String(id), userId, text, createdAt, source: "test" };
}

/** Deterministic pseudo-random numbers in [0, 1) (mulberry32), so failures reproduce. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function newestFirst(documents: Iterable<TweetDocument>): TweetDocument[] {
  return [...documents].sort((a, b) =>
    b.createdAt - a.createdAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)
  );
}

/** The search semantics, computed the slow way. */
function reference(documents: Iterable<TweetDocument>, filter: SearchFilter): TweetDocument[] {
  const terms = filter.text === undefined ? undefined : tokenize(filter.text);
  return newestFirst(
    [...documents].filter((document) => {
      const documentTerms = new Set(tokenize(document.text));
      return (terms === undefined ||
        (terms.length > 0 && terms.every((term) => documentTerms.has(term)))) &&
        (filter.userId === undefined || document.userId === filter.userId) &&
        (filter.from === undefined || document.createdAt >= filter.from) &&
        (filter.to === undefined || document.createdAt <= filter.to);
    }),
  );
}

async function pageThrough(
  index: MemorySearchIndex,
  filter: SearchFilter,
  size: number,
  maxPages = Infinity,
): Promise<{ documents: TweetDocument[]; totals: number[]; pages: number }> {
  const documents: TweetDocument[] = [];
  const totals: number[] = [];
  let after: SearchCursor | undefined;
  let pages = 0;
  do {
    const page: SearchPage = await index.search(
      after === undefined ? { ...filter, size } : { ...filter, size, after },
    );
    documents.push(...page.documents);
    totals.push(page.total);
    after = page.next;
    pages++;
  } while (after !== undefined && pages < maxPages);
  return { documents, totals, pages };
}

Deno.test("MemorySearchIndex evicts the oldest documents beyond maxDocuments", async () => {
  const index = new MemorySearchIndex({ maxDocuments: 3 });
  await index.upsert([
    tweet(1, T0 + 30, "keep me"),
    tweet(2, T0 + 10, "old news", "2"),
    tweet(3, T0 + 40, "keep me"),
  ]);
  assert.equal(index.evicted, 0);
  await index.upsert([tweet(4, T0 + 20, "keep me"), tweet(5, T0 + 5, "older news", "3")]);
  assert.equal(index.evicted, 2);
  assert.equal(await index.count(), 3);
  assert.equal(await index.get("2"), undefined);
  assert.equal(await index.get("5"), undefined);
  assert.equal(await index.count({ text: "news" }), 0);
  assert.equal(await index.count({ userId: "2" }), 0);
  const page = await index.search({ text: "keep", size: 10 });
  assert.deepEqual(page.documents.map((document) => document.id), ["3", "1", "4"]);
  assert.equal(page.total, 3);
});

Deno.test("MemorySearchIndex does not evict when replacing a document", async () => {
  const index = new MemorySearchIndex({ maxDocuments: 2 });
  await index.upsert([tweet(1, T0), tweet(2, T0 + 1)]);
  await index.upsert([tweet(1, T0 + 2, "edited"), tweet(2, T0 + 1)]);
  assert.equal(index.evicted, 0);
  assert.equal(await index.count(), 2);
  assert.equal((await index.get("1"))?.text, "edited");
});

Deno.test("MemorySearchIndex keeps maxDocuments within a batch larger than the bound", async () => {
  const index = new MemorySearchIndex({ maxDocuments: 10 });
  await index.upsert(Array.from({ length: 25 }, (_, i) => tweet(i, T0 + ((i * 7) % 25))));
  assert.equal(index.evicted, 15);
  const page = await index.search({ size: 100 });
  assert.equal(page.total, 10);
  assert.deepEqual(
    page.documents.map((document) => document.createdAt),
    Array.from({ length: 10 }, (_, i) => T0 + 24 - i),
  );
});

Deno.test("MemorySearchIndex rejects a maxDocuments that is not a positive integer", () => {
  for (const maxDocuments of [0, -1, 1.5, NaN]) {
    assert.throws(() => new MemorySearchIndex({ maxDocuments }), RangeError);
  }
});

Deno.test("MemorySearchIndex rejects a batch with an invalid document and stores none of it", async () => {
  const index = new MemorySearchIndex();
  for (
    const invalid of [
      tweet(1, -1),
      tweet(1, 1.5),
      tweet(1, NaN),
      { ...tweet(1, T0), id: "" },
      { ...tweet(1, T0), id: "12a" },
      { ...tweet(1, T0), id: "1".repeat(21) },
    ]
  ) {
    await assert.rejects(index.upsert([tweet(2, T0), invalid]), (error: unknown) => {
      assert.ok(error instanceof InvalidDocumentError);
      assert.equal(error.code, "invalid-document");
      assert.match(error.message, /^Cannot upsert documents: /);
      return true;
    });
  }
  assert.equal(await index.count(), 0);
});

Deno.test("MemorySearchIndex stores a copy that callers cannot change", async () => {
  const index = new MemorySearchIndex();
  const document = { ...tweet(1, T0, "original"), extra: "dropped" };
  await index.upsert([document]);
  document.text = "mutated";
  const stored = await index.get("1");
  assert.deepEqual(stored, tweet(1, T0, "original"));
  assert.ok(Object.isFrozen(stored));
  assert.equal(await index.count({ text: "original" }), 1);
});

Deno.test("MemorySearchIndex rejects an invalid page size, bound or cursor", async () => {
  const index = new MemorySearchIndex();
  await index.upsert([tweet(1, T0)]);
  for (const size of [0, -1, 1.5, NaN]) {
    await assert.rejects(index.search({ size }), InvalidQueryError);
  }
  await assert.rejects(index.search({ size: 1, from: NaN }), InvalidQueryError);
  const notACursor = { createdAt: "1", id: 1 } as unknown as SearchCursor;
  await assert.rejects(index.search({ size: 1, after: notACursor }), InvalidQueryError);
  await assert.rejects(index.count({ to: NaN }), (error: unknown) => {
    assert.ok(error instanceof InvalidQueryError);
    assert.equal(error.code, "invalid-query");
    assert.match(error.message, /^Cannot count documents: to must be a number/);
    return true;
  });
});

Deno.test("MemorySearchIndex rejects every operation after close", async () => {
  const index = new MemorySearchIndex();
  await index.upsert([tweet(1, T0)]);
  await index.close();
  await index.close();
  await assert.rejects(index.ping(), SearchIndexClosedError);
  await assert.rejects(index.refresh(), SearchIndexClosedError);
  await assert.rejects(index.get("1"), SearchIndexClosedError);
  await assert.rejects(index.count(), SearchIndexClosedError);
  await assert.rejects(index.upsert([tweet(2, T0)]), SearchIndexClosedError);
  await assert.rejects(index.search({ size: 1 }), (error: unknown) => {
    assert.ok(error instanceof SearchIndexClosedError);
    assert.equal(error.code, "search-index-closed");
    assert.equal(error.message, "Cannot search documents: the search index is closed");
    return true;
  });
});

Deno.test("MemorySearchIndex agrees with a reference search under random writes and queries", async () => {
  const random = seededRandom(42);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const index = new MemorySearchIndex({ maxDocuments: 2_500 });
  const model = new Map<string, TweetDocument>();
  // Terms of very different frequencies exercise both ways of finding a page.
  const makeText = () =>
    [
      random() < 0.5 ? "Common" : "",
      random() < 0.1 ? "mid" : "",
      random() < 0.01 ? "RARE!" : "",
      pick(["alpha", "beta", "gamma", "delta"]),
    ].join(" ");
  for (let round = 0; round < 30; round++) {
    const batch = Array.from({ length: 150 }, () =>
      tweet(
        // Ids repeat, so some upserts replace documents.
        Math.floor(random() * 4_000),
        T0 + Math.floor(random() * 500),
        makeText(),
        String(1 + Math.floor(random() * random() * 30)),
      ));
    await index.upsert(batch);
    for (const document of batch) model.set(document.id, document);
    // The model evicts the same way: oldest (then smallest id) first.
    const kept = newestFirst(model.values()).slice(0, 2_500);
    model.clear();
    for (const document of kept) model.set(document.id, document);

    for (let query = 0; query < 8; query++) {
      const filter: SearchFilter = {
        ...(random() < 0.6 ? { text: pick(["common", "mid", "rare", "common mid", "beta"]) } : {}),
        ...(random() < 0.3 ? { userId: String(1 + Math.floor(random() * 30)) } : {}),
        ...(random() < 0.3 ? { from: T0 + Math.floor(random() * 500) } : {}),
        ...(random() < 0.3 ? { to: T0 + Math.floor(random() * 500) } : {}),
      };
      const expected = reference(model.values(), filter);
      const size = pick([1, 7, 20, 100]);
      const maxPages = 40;
      const paged = await pageThrough(index, filter, size, maxPages);
      const message = `round ${round}, filter ${JSON.stringify(filter)}, size ${size}`;
      assert.deepEqual(
        paged.documents.map((document) => document.id),
        expected.slice(0, size * maxPages).map((document) => document.id),
        message,
      );
      assert.ok(paged.totals.every((total) => total === expected.length), message);
      assert.equal(await index.count(filter), expected.length, message);
    }
  }
  assert.equal(await index.count(), model.size);
  assert.ok(index.evicted > 0);
});

Deno.test("MemorySearchIndex pages a common term over many documents from the right positions", async () => {
  const count = 200_000;
  const index = new MemorySearchIndex();
  const documents = Array.from({ length: count }, (_, i) =>
    tweet(
      i,
      T0 + Math.floor(i / 3),
      i % 5 === 0 ? "common words here" : "other words there",
      String(i % 1_000),
    ));
  // Upserted in a scrambled order, so most inserts land inside the order.
  for (let start = 0; start < 7; start++) {
    await index.upsert(documents.filter((_, i) => i % 7 === start));
  }
  const common = newestFirst(documents.filter((_, i) => i % 5 === 0));
  const first = await pageThrough(index, { text: "common" }, 20, 50);
  assert.deepEqual(first.documents, common.slice(0, 1_000));
  assert.ok(first.totals.every((total) => total === common.length));

  // A cursor deep into the results continues from that position.
  const deep = common[30_000]!;
  const page = await index.search({
    text: "common",
    size: 20,
    after: { createdAt: deep.createdAt, id: deep.id },
  });
  assert.deepEqual(page.documents, common.slice(30_001, 30_021));

  const ofUser = common.filter((document) => document.userId === "500");
  const userPages = await pageThrough(index, { text: "common", userId: "500" }, 20);
  assert.deepEqual(userPages.documents, ofUser);

  const window = { from: T0 + 10_000, to: T0 + 20_000 };
  const inWindow = common.filter((document) =>
    document.createdAt >= window.from && document.createdAt <= window.to
  );
  const windowPage = await index.search({ text: "common", ...window, size: 20 });
  assert.deepEqual(windowPage.documents, inWindow.slice(0, 20));
  assert.equal(windowPage.total, inWindow.length);
  assert.equal(await index.count(window), 3 * 10_001);
});
