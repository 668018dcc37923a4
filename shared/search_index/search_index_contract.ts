/**
 * The behaviour every `SearchIndex` adapter must have, as `Deno.test` cases.
 * Cases use only the port, call `refresh()` before searching, and write
 * documents of a fresh random user (filtering by it), so they also run
 * against a shared, non-empty real index.
 */

import assert from "node:assert/strict";
import type {
  SearchFilter,
  SearchIndex,
  SearchPage,
  TweetDocument,
  Visibility,
} from "./search_index.ts";

const T0 = Date.UTC(2024, 0, 1);

export function runSearchIndexContract(
  name: string,
  createIndex: () => Promise<SearchIndex>,
): void {
  function contract(behaviour: string, body: (index: SearchIndex) => Promise<void>): void {
    Deno.test(`${name} ${behaviour}`, async () => {
      const index = await createIndex();
      try {
        // Opening twice proves it idempotent on every case.
        await index.open();
        await index.open();
        await body(index);
      } finally {
        await index.close();
      }
    });
  }

  contract("resolves ping when reachable", async (index) => {
    await index.ping();
  });

  contract("gets an upserted document back unchanged", async (index) => {
    const document = tweet({ text: "Hello, world" });
    await index.upsert([document]);
    await index.refresh();
    assert.deepEqual(await index.get(document.id), document);
  });

  contract("gets undefined for an unknown id", async (index) => {
    assert.equal(await index.get(randomDigits(18)), undefined);
  });

  contract("accepts an empty upsert", async (index) => {
    await index.upsert([]);
  });

  contract("keeps 64-bit ids exact, in documents and cursors", async (index) => {
    const userId = randomDigits(12);
    const max = tweet({ id: "9223372036854775807", userId, text: "edge" });
    const below = tweet({ id: "9223372036854775806", userId, text: "edge" });
    await index.upsert([below, max]);
    await index.refresh();
    assert.deepEqual(await index.get(max.id), max);
    assert.deepEqual(await index.get(below.id), below);
    const first = await index.search({ userId, size: 1 });
    assert.deepEqual(ids(first), [max.id]);
    assert.deepEqual(first.next, { createdAt: max.createdAt, id: max.id });
    const second = await index.search({ userId, size: 1, after: first.next });
    assert.deepEqual(ids(second), [below.id]);
    assert.equal(second.next, undefined);
  });

  contract("upserts idempotently by id", async (index) => {
    const userId = randomDigits(12);
    const document = tweet({ userId, text: "first draft" });
    await index.upsert([document]);
    await index.upsert([document]);
    await index.refresh();
    assert.equal(await index.count({ userId }), 1);
    assert.deepEqual(await index.get(document.id), document);
  });

  contract("replaces a document's content and terms on upsert by id", async (index) => {
    const userId = randomDigits(12);
    const original = tweet({ userId, text: "first draft" });
    const replaced = { ...original, text: "final version", createdAt: T0 + 5, source: "edited" };
    await index.upsert([original]);
    await index.refresh();
    await index.upsert([replaced]);
    await index.refresh();
    assert.equal(await index.count({ userId }), 1);
    assert.deepEqual(await index.get(original.id), replaced);
    assert.equal((await index.search({ userId, text: "draft", size: 10 })).total, 0);
    assert.deepEqual(ids(await index.search({ userId, text: "final", size: 10 })), [replaced.id]);
  });

  contract("moves a replaced document to its new user", async (index) => {
    const before = randomDigits(12);
    const after = randomDigits(12);
    const document = tweet({ userId: before });
    await index.upsert([document]);
    await index.refresh();
    await index.upsert([{ ...document, userId: after }]);
    await index.refresh();
    assert.equal(await index.count({ userId: before }), 0);
    assert.deepEqual(ids(await index.search({ userId: after, size: 10 })), [document.id]);
  });

  contract("matches text case-insensitively, split on punctuation", async (index) => {
    const userId = randomDigits(12);
    const kafka = tweet({ userId, text: "Kafka's STREAMS, explained!" });
    const cafe = tweet({ userId, text: "Caf\u00e9-au-lait #Monday" });
    await index.upsert([kafka, cafe]);
    await index.refresh();
    const matches = async (text: string) => ids(await index.search({ userId, text, size: 10 }));
    assert.deepEqual(await matches("kafka"), [kafka.id]);
    assert.deepEqual(await matches("streams"), [kafka.id]);
    assert.deepEqual(await matches("KAFKA'S streams"), [kafka.id]);
    assert.deepEqual(await matches("CAF\u00c9"), [cafe.id]);
    assert.deepEqual(await matches("lait"), [cafe.id]);
    assert.deepEqual(await matches("monday"), [cafe.id]);
    assert.deepEqual(await matches("stream"), []);
    assert.deepEqual(await matches("caf"), []);
  });

  contract("requires every term of a multi-term text", async (index) => {
    const userId = randomDigits(12);
    const redApple = tweet({ userId, text: "a red apple", createdAt: T0 + 3 });
    const greenApple = tweet({ userId, text: "a green apple", createdAt: T0 + 2 });
    const redCar = tweet({ userId, text: "a red car", createdAt: T0 + 1 });
    await index.upsert([redApple, greenApple, redCar]);
    await index.refresh();
    const matches = async (text: string) => ids(await index.search({ userId, text, size: 10 }));
    assert.deepEqual(await matches("red apple"), [redApple.id]);
    assert.deepEqual(await matches("apple, red"), [redApple.id]);
    assert.deepEqual(await matches("apple"), [redApple.id, greenApple.id]);
    assert.deepEqual(await matches("red"), [redApple.id, redCar.id]);
    assert.deepEqual(await matches("red unicorn"), []);
  });

  contract("matches nothing for text without terms", async (index) => {
    const userId = randomDigits(12);
    await index.upsert([tweet({ userId, text: "something" }), tweet({ userId, text: "!?" })]);
    await index.refresh();
    for (const text of ["", "   ", "!?", "--- ..."]) {
      assert.deepEqual(await index.search({ userId, text, size: 10 }), {
        documents: [],
        total: 0,
      });
      assert.deepEqual(await index.search({ text, size: 10 }), { documents: [], total: 0 });
      assert.equal(await index.count({ userId, text }), 0);
    }
  });

  contract("filters by userId exactly", async (index) => {
    const alice = randomDigits(12);
    const bob = randomDigits(12);
    const fromAlice = tweet({ userId: alice, text: "shared topic", createdAt: T0 + 2 });
    const fromBob = tweet({ userId: bob, text: "shared topic", createdAt: T0 + 1 });
    await index.upsert([fromAlice, fromBob]);
    await index.refresh();
    assert.deepEqual(ids(await index.search({ userId: alice, size: 10 })), [fromAlice.id]);
    assert.deepEqual(
      ids(await index.search({ userId: bob, text: "topic", size: 10 })),
      [fromBob.id],
    );
    assert.equal((await index.search({ userId: alice.slice(1), size: 10 })).total, 0);
  });

  contract("bounds createdAt inclusively with from and to", async (index) => {
    const userId = randomDigits(12);
    const [early, middle, late] = [1_000, 2_000, 3_000].map((offset) =>
      tweet({ userId, text: "tick", createdAt: T0 + offset })
    ) as [TweetDocument, TweetDocument, TweetDocument];
    await index.upsert([early, middle, late]);
    await index.refresh();
    const matches = async (filter: SearchFilter) => {
      const page = await index.search({ ...filter, userId, size: 10 });
      assert.equal(page.total, await index.count({ ...filter, userId }));
      return ids(page);
    };
    assert.deepEqual(await matches({ from: T0 + 2_000 }), [late.id, middle.id]);
    assert.deepEqual(await matches({ to: T0 + 2_000 }), [middle.id, early.id]);
    assert.deepEqual(await matches({ from: T0 + 2_000, to: T0 + 2_000 }), [middle.id]);
    assert.deepEqual(await matches({ from: T0 + 1_001, to: T0 + 2_999 }), [middle.id]);
    assert.deepEqual(await matches({ from: T0 + 1_000, to: T0 + 3_000, text: "tick" }), [
      late.id,
      middle.id,
      early.id,
    ]);
    assert.deepEqual(await matches({ from: T0 + 3_000, to: T0 + 1_000 }), []);
    assert.deepEqual(await matches({ from: T0 + 3_001 }), []);
  });

  contract(
    "orders newest first, breaking createdAt ties by id in code-unit order",
    async (index) => {
      const userId = randomDigits(12);
      const prefix = randomDigits(15);
      // Code-unit order is not numeric order: "2" > "10" > "1".
      const tied = ["1", "2", "10"].map((suffix) =>
        tweet({ id: prefix + suffix, userId, createdAt: T0 + 500 })
      );
      const newest = tweet({ userId, createdAt: T0 + 501 });
      const oldest = tweet({ userId, createdAt: T0 + 499 });
      await index.upsert([oldest, ...tied, newest]);
      await index.refresh();
      assert.deepEqual(ids(await index.search({ userId, size: 10 })), [
        newest.id,
        prefix + "2",
        prefix + "10",
        prefix + "1",
        oldest.id,
      ]);
    },
  );

  contract("pages through every match exactly once", async (index) => {
    const userId = randomDigits(12);
    const prefix = randomDigits(15);
    // Many createdAt ties, so that pages end inside runs of equal createdAt.
    const documents = Array.from({ length: 23 }, (_, i) =>
      tweet({
        id: prefix + String(i),
        userId,
        text: i % 3 === 0 ? "fizz page" : "page",
        createdAt: T0 + (i % 5) * 1_000,
      }));
    await index.upsert(documents);
    await index.refresh();
    for (const filter of [{ userId }, { userId, text: "fizz" }, { userId, from: T0 + 1_000 }]) {
      const expected = newestFirst(documents.filter((document) => matches(document, filter)));
      for (const size of [1, 4, 5, expected.length, 50]) {
        const pages = await allPages(index, filter, size);
        assert.deepEqual(pages.flatMap(ids), ids({ documents: expected }));
        for (const page of pages) assert.equal(page.total, expected.length);
        assert.equal(pages.length, Math.max(1, Math.ceil(expected.length / size)));
        assert.equal(pages[pages.length - 1]?.next, undefined);
      }
    }
  });

  contract(
    "continues strictly after a cursor position, even one without a document",
    async (index) => {
      const userId = randomDigits(12);
      const prefix = randomDigits(15);
      const documents = ["1", "3", "5"].map((suffix) =>
        tweet({ id: prefix + suffix, userId, createdAt: T0 + 100 })
      );
      const older = tweet({ userId, createdAt: T0 + 99 });
      await index.upsert([...documents, older]);
      await index.refresh();
      const after = { createdAt: T0 + 100, id: prefix + "4" };
      const page = await index.search({ userId, size: 10, after });
      assert.deepEqual(ids(page), [prefix + "3", prefix + "1", older.id]);
      assert.equal(page.total, 4);
      assert.equal(page.next, undefined);
      const past = await index.search({ userId, size: 10, after: { createdAt: T0, id: "0" } });
      assert.deepEqual(past, { documents: [], total: 4 });
    },
  );

  contract(
    "restricts search, totals, paging and counts to the visible documents",
    async (index) => {
      const userId = randomDigits(12);
      const author = randomDigits(12);
      const prefix = randomDigits(15);
      const mine = Array.from({ length: 9 }, (_, i) =>
        tweet({
          id: prefix + String(i),
          userId,
          text: i % 2 === 0 ? "even shared" : "odd shared",
          createdAt: T0 + (i % 3) * 1_000,
        }));
      const byAuthor = Array.from(
        { length: 4 },
        (_, i) => tweet({ userId: author, text: "shared author", createdAt: T0 + i }),
      );
      await index.upsert([...mine, ...byAuthor]);
      await index.refresh();
      const single = mine[4]!;
      const granted = [mine[1]!, mine[2]!, single];
      const tweetIds = granted.map((document) => document.id);
      const cases: { visibleTo: Visibility; filter: SearchFilter; expected: TweetDocument[] }[] = [
        {
          visibleTo: { all: false, tweetIds, authorIds: [] },
          filter: { userId },
          expected: granted,
        },
        {
          visibleTo: { all: false, tweetIds, authorIds: [] },
          filter: { userId, text: "even" },
          expected: [mine[2]!, single],
        },
        {
          visibleTo: { all: false, tweetIds: [], authorIds: [userId] },
          filter: { userId },
          expected: mine,
        },
        {
          visibleTo: { all: false, tweetIds: [single.id], authorIds: [author] },
          filter: { text: "shared", from: T0 },
          expected: [single, ...byAuthor].filter((document) => document.createdAt >= T0),
        },
        {
          visibleTo: { all: false, tweetIds: [randomDigits(18)], authorIds: [randomDigits(12)] },
          filter: { userId },
          expected: [],
        },
        { visibleTo: { all: false, tweetIds: [], authorIds: [] }, filter: {}, expected: [] },
        {
          visibleTo: { all: true, tweetIds: [], authorIds: [] },
          filter: { userId },
          expected: mine,
        },
      ];
      for (const { visibleTo, filter, expected } of cases) {
        const sorted = newestFirst(expected);
        const restricted = { ...filter, visibleTo };
        const label = JSON.stringify(restricted);
        assert.equal(await index.count(restricted), sorted.length, label);
        for (const size of [1, 2, 50]) {
          const pages = await allPages(index, restricted, size);
          assert.deepEqual(pages.flatMap(ids), ids({ documents: sorted }), label);
          for (const page of pages) assert.equal(page.total, sorted.length, label);
          assert.equal(pages.length, Math.max(1, Math.ceil(sorted.length / size)), label);
        }
      }
    },
  );

  contract("counts with and without a filter", async (index) => {
    const userId = randomDigits(12);
    const before = await index.count();
    await index.upsert([
      tweet({ userId, text: "one fish", createdAt: T0 + 1 }),
      tweet({ userId, text: "two fish", createdAt: T0 + 2 }),
      tweet({ userId, text: "red herring", createdAt: T0 + 3 }),
    ]);
    await index.refresh();
    const all = await index.count();
    assert.ok(all >= before + 3, `count() went from ${before} to ${all}`);
    assert.equal(await index.count({}), all);
    assert.equal(await index.count({ userId }), 3);
    assert.equal(await index.count({ userId, text: "fish" }), 2);
    assert.equal(await index.count({ userId, text: "fish", from: T0 + 2 }), 1);
    assert.equal(await index.count({ userId, text: "fish", to: T0 + 1 }), 1);
    assert.equal(await index.count({ userId, text: "whale" }), 0);
    assert.equal(await index.count({ userId: randomDigits(12) }), 0);
  });
}

/** Random decimal digits without a leading zero; 18 digits fit a signed 64-bit id. */
export function randomDigits(count: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(count));
  return Array.from(bytes, (byte, i) => i === 0 ? 1 + (byte % 9) : byte % 10).join("");
}

/** A document with random ids, for tests that share a real index. */
export function tweet(fields: Partial<TweetDocument> = {}): TweetDocument {
  return {
    id: randomDigits(18),
    userId: randomDigits(12),
    text: "contract test",
    createdAt: T0,
    source: "contract",
    ...fields,
  };
}

function ids(page: Pick<SearchPage, "documents">): string[] {
  return page.documents.map((document) => document.id);
}

function newestFirst(documents: readonly TweetDocument[]): TweetDocument[] {
  return [...documents].sort((a, b) =>
    b.createdAt - a.createdAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)
  );
}

/** The filter semantics for the filters the contract uses (text of one term). */
function matches(document: TweetDocument, filter: SearchFilter): boolean {
  return (filter.userId === undefined || document.userId === filter.userId) &&
    (filter.text === undefined || document.text.split(" ").includes(filter.text)) &&
    (filter.from === undefined || document.createdAt >= filter.from) &&
    (filter.to === undefined || document.createdAt <= filter.to);
}

async function allPages(
  index: SearchIndex,
  filter: SearchFilter,
  size: number,
): Promise<SearchPage[]> {
  const pages: SearchPage[] = [];
  let page = await index.search({ ...filter, size });
  pages.push(page);
  while (page.next !== undefined) {
    assert.ok(pages.length <= 1_000, "Paging did not end after 1000 pages");
    page = await index.search({ ...filter, size, after: page.next });
    pages.push(page);
  }
  return pages;
}
