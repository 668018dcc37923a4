/**
 * Writing a file that readers may open at any moment: the data goes to a
 * uniquely named partial file beside it, which is then renamed over the
 * target, so a reader sees the old file (or none) or the whole new one, never
 * a half-written one. The folder is created when missing; a write that fails
 * leaves no partial file behind.
 */

export interface WriteFileAtomicallyOptions {
  /** The file's permissions, e.g. `0o600` for secrets. @default the process's umask */
  readonly mode?: number;
  /** The permissions of a folder created for it. @default the process's umask */
  readonly folderMode?: number;
}

/** Writes `data` to `path` atomically (see the module's documentation). */
export async function writeFileAtomically(
  path: string,
  data: string | Uint8Array,
  options: WriteFileAtomicallyOptions = {},
): Promise<void> {
  const folder = path.replace(/\/[^/]*$/, "") || ".";
  const partial = `${path}.${crypto.randomUUID()}.partial`;
  const fileOptions = options.mode === undefined ? {} : { mode: options.mode };
  try {
    await Deno.mkdir(folder, {
      recursive: true,
      ...(options.folderMode === undefined ? {} : { mode: options.folderMode }),
    });
    if (typeof data === "string") await Deno.writeTextFile(partial, data, fileOptions);
    else await Deno.writeFile(partial, data, fileOptions);
    await Deno.rename(partial, path);
  } catch (error) {
    await Deno.remove(partial).catch(() => {});
    throw error;
  }
}
