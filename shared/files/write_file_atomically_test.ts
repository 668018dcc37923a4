import assert from "node:assert/strict";
import { writeFileAtomically } from "./write_file_atomically.ts";

Deno.test("writeFileAtomically creates the folder, writes text or bytes with the mode, and replaces a file whole", async () => {
  const root = await Deno.makeTempDir({ prefix: "write-file-atomically-" });
  try {
    const path = `${root}/a/b/keys.json`;
    await writeFileAtomically(path, "first\n", { mode: 0o600, folderMode: 0o700 });
    assert.equal(await Deno.readTextFile(path), "first\n");
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(`${root}/a/b`)).mode! & 0o777, 0o700);

    await writeFileAtomically(path, new Uint8Array([1, 2, 3]));
    assert.deepEqual(await Deno.readFile(path), new Uint8Array([1, 2, 3]));
    const names = [];
    for await (const entry of Deno.readDir(`${root}/a/b`)) names.push(entry.name);
    assert.deepEqual(names, ["keys.json"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("writeFileAtomically leaves no partial file when the rename fails", async () => {
  const root = await Deno.makeTempDir({ prefix: "write-file-atomically-" });
  try {
    // A folder that is not empty where the target is: the rename over it fails after the
    // partial file is written.
    const blocked = `${root}/blocked`;
    await Deno.mkdir(`${blocked}/inside`, { recursive: true });
    await assert.rejects(writeFileAtomically(blocked, "new"));
    const names = [];
    for await (const entry of Deno.readDir(root)) names.push(entry.name);
    assert.deepEqual(names, ["blocked"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
