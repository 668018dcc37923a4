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
import { writeFileAtomically } from "../files/write_file_atomically.ts";
import { FAILURE } from "./pglite_thread.ts";

/**
 * The template as PGlite's `loadDataDir` reads it. PGlite (0.5.16) reads
 * only a Blob's `type` and `arrayBuffer()`, and untars a view of that
 * buffer: so the file's bytes are handed over as they are, without the copy
 * a `new Blob([bytes])` makes and the second one its `arrayBuffer()` makes
 * (~40 MB each; the start's resident memory was 37 MB lower measured).
 */
async function readTemplate(path: string): Promise<Blob | undefined> {
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  const buffer = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
    ? bytes.buffer
    : bytes.slice().buffer;
  const tar: Pick<Blob, "type" | "arrayBuffer"> = {
    type: "application/x-tar",
    arrayBuffer: () => Promise.resolve(buffer),
  };
  return tar as Blob;
}

/** Writes the template atomically: a reader sees either no file or a whole one. */
async function writeTemplate(path: string, cluster: Blob): Promise<void> {
  await writeFileAtomically(path, new Uint8Array(await cluster.arrayBuffer()));
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

interface Meta {
  readonly templateFile?: string;
  readonly settings?: Readonly<Record<string, string>>;
}

async function open({ templateFile, settings = {} }: Meta): Promise<PGlite> {
  const startParams = [
    ...PGlite.defaultStartParams,
    ...Object.entries(settings).flatMap(([name, value]) => ["-c", `${name}=${value}`]),
  ];
  if (templateFile === undefined || templateFile === "") {
    return await PGlite.create({ startParams });
  }
  const template = await readTemplate(templateFile);
  if (template !== undefined) return await PGlite.create({ loadDataDir: template, startParams });
  const pg = await PGlite.create({ startParams });
  // Saved before any statement of the service's, so the template holds an
  // empty cluster. A template that cannot be written (a read-only folder, no
  // write permission) only costs the next start another initdb.
  await writeTemplate(templateFile, await pg.dumpDataDir("none")).catch(() => {});
  return pg;
}

await worker({
  async init(options) {
    return reportingFailures(await open((options.meta ?? {}) as Meta));
  },
});
