/**
 * The worker side of an embedded PGlite: PostgreSQL's WebAssembly compile and
 * cluster start (seconds of CPU each) run on this thread, never on the
 * process's main thread, which keeps answering requests and heartbeats.
 * Started by `startPglite` in `pglite_thread.ts`; one worker per database.
 *
 * With a `templateFile`, a fresh cluster is initialised once (initdb) and
 * saved there as a tar; later starts load a copy of it into memory, so the
 * database's data still lives in this process only.
 */
import { PGlite } from "@electric-sql/pglite";
import { worker } from "@electric-sql/pglite/worker";

async function readTemplate(path: string): Promise<Blob | undefined> {
  try {
    return new Blob([await Deno.readFile(path)]);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** Writes the template atomically: a reader sees either no file or a whole one. */
async function writeTemplate(path: string, cluster: Blob): Promise<void> {
  const folder = path.replace(/\/[^/]*$/, "") || ".";
  await Deno.mkdir(folder, { recursive: true });
  const partial = `${path}.${crypto.randomUUID()}.partial`;
  try {
    await Deno.writeFile(partial, new Uint8Array(await cluster.arrayBuffer()));
    await Deno.rename(partial, path);
  } finally {
    await Deno.remove(partial).catch(() => {});
  }
}

await worker({
  async init(options) {
    const templateFile = (options.meta as { templateFile?: string } | undefined)?.templateFile;
    if (templateFile === undefined || templateFile === "") return await PGlite.create();
    const template = await readTemplate(templateFile);
    if (template !== undefined) return await PGlite.create({ loadDataDir: template });
    const pg = await PGlite.create();
    // Saved before any statement of the service's, so the template holds an
    // empty cluster. A template that cannot be written (a read-only folder, no
    // write permission) only costs the next start another initdb.
    await writeTemplate(templateFile, await pg.dumpDataDir("none")).catch(() => {});
    return pg;
  },
});
