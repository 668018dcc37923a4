import assert from "node:assert/strict";
import { settingsTable } from "./settings_table.ts";

/** Table lines as trimmed cells, so `deno fmt`'s column alignment does not matter. */
function cells(markdown: string): string[] {
  return markdown.split("\n").filter((line) => line.startsWith("|")).map((line) =>
    line.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/^-+$/, "---")).join("|")
  );
}

Deno.test("README lists every setting exactly as services/config.ts defines it", async () => {
  const readme = cells(await Deno.readTextFile(new URL("../README.md", import.meta.url)));
  const expected = cells(settingsTable());
  const start = readme.indexOf(expected[0]!);
  assert.ok(start >= 0, "README.md has no settings table");
  assert.deepEqual(
    readme.slice(start, start + expected.length),
    expected,
    "README.md is out of date: paste the output of `deno task settings` into its settings section",
  );
});
