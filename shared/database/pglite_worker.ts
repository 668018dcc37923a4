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
import { FAILURE } from "./pglite_thread.ts";

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

/**
 * PGlite's worker protocol sends only an error's message back to the caller
 * (and prints the error): PostgreSQL's SQLSTATE and fields would be lost. So
 * a statement's failure comes back as a result carrying the error's fields,
 * which `startPglite` throws again on the caller's side.
 */
function failureOf(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) throw error;
  const failure: Record<string, unknown> = { name: error.name, message: error.message };
  for (const [key, value] of Object.entries(error)) {
    if (typeof value === "string" || typeof value === "number") failure[key] = value;
  }
  return { [FAILURE]: failure };
}

function reportingFailures(pg: PGlite): PGlite {
  const execProtocol = pg.execProtocol.bind(pg);
  const execProtocolStream = pg.execProtocolStream.bind(pg);
  // The worker protocol passes on `messages` and `data` of execProtocol only.
  pg.execProtocol = (...args: Parameters<PGlite["execProtocol"]>) =>
    execProtocol(...args).catch((error) => ({
      messages: [failureOf(error) as never],
      data: new Uint8Array(),
    }));
  pg.execProtocolStream = (...args: Parameters<PGlite["execProtocolStream"]>) =>
    execProtocolStream(...args).catch((error) => [failureOf(error) as never]);
  return pg;
}

async function open(templateFile: string | undefined): Promise<PGlite> {
  if (templateFile === undefined || templateFile === "") return await PGlite.create();
  const template = await readTemplate(templateFile);
  if (template !== undefined) return await PGlite.create({ loadDataDir: template });
  const pg = await PGlite.create();
  // Saved before any statement of the service's, so the template holds an
  // empty cluster. A template that cannot be written (a read-only folder, no
  // write permission) only costs the next start another initdb.
  await writeTemplate(templateFile, await pg.dumpDataDir("none")).catch(() => {});
  return pg;
}

await worker({
  async init(options) {
    const templateFile = (options.meta as { templateFile?: string } | undefined)?.templateFile;
    return reportingFailures(await open(templateFile));
  },
});
