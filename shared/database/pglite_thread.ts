/**
 * An embedded PGlite on a worker thread of its own, behind PGlite's own
 * interface (`PGliteWorker`), so `PgliteDatabase` takes it as it takes an
 * in-thread PGlite. See `pglite_worker.ts` for what runs on the thread.
 */
import { PGliteWorker } from "@electric-sql/pglite/worker";

/** The field of a result that carries a statement's error across the thread (see the worker). */
export const FAILURE = "pgliteFailure";

/** Throws the statement error the worker sent in place of the messages, if any. */
function throwFailure(messages: readonly unknown[]): void {
  const failure = (messages[0] as { [FAILURE]?: { message: string } } | undefined)?.[FAILURE];
  if (failure !== undefined) throw Object.assign(new Error(failure.message), failure);
}

export interface PgliteThreadOptions {
  /**
   * A tar of an empty cluster, written on first start and loaded on later
   * ones (initdb once); empty: initdb on every start.
   * @default ""
   */
  readonly templateFile?: string;
}

/**
 * Starts a worker and a PGlite in it; resolves at once (queries wait until
 * the database is ready). `close()` on the result closes the database and
 * ends the worker.
 */
export function startPglite(options: PgliteThreadOptions = {}): PGliteWorker {
  const thread = new Worker(new URL("./pglite_worker.ts", import.meta.url), { type: "module" });
  // A unique id: PGliteWorker elects a leader among workers of the same id.
  const pg = new PGliteWorker(thread, {
    id: `pglite-${crypto.randomUUID()}`,
    meta: { templateFile: options.templateFile ?? "" },
  });
  const execProtocol = pg.execProtocol.bind(pg);
  const execProtocolStream = pg.execProtocolStream.bind(pg);
  pg.execProtocol = async (...args: Parameters<PGliteWorker["execProtocol"]>) => {
    const result = await execProtocol(...args);
    throwFailure(result.messages);
    return result;
  };
  pg.execProtocolStream = async (...args: Parameters<PGliteWorker["execProtocolStream"]>) => {
    const messages = await execProtocolStream(...args);
    throwFailure(messages);
    return messages;
  };
  const close = pg.close.bind(pg);
  let closed: Promise<void> | undefined;
  pg.close = () => {
    closed ??= close().finally(() => thread.terminate());
    return closed;
  };
  return pg;
}
