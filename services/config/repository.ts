/**
 * The configuration repository: a folder of YAML or JSON files.
 * `application.*` applies to every application, `{application}.*` to one,
 * and `-{profile}` variants of both to a profile. Property sources come most
 * specific first, as Spring Cloud Config orders them (a profile file beats a
 * file without profile, an application's file beats `application.*`, a
 * later profile beats an earlier one):
 *
 *   {app}-{p2}, application-{p2}, {app}-{p1}, application-{p1}, {app}, application
 *
 * Nested keys are flattened with dots and lists with `[i]`, as Spring does.
 */
import { parse as parseYaml } from "yaml";

export const EXTENSIONS = ["yml", "yaml", "json"] as const;
/** One application or profile name; no `--`, so a file name parses one way. */
const NAME_SOURCE = "(?![^,]*--)[a-z0-9][a-z0-9_-]{0,62}";
/** Application and profile names: lower-case letters, digits, `_`, `-`. */
export const NAME_PATTERN = new RegExp(`^${NAME_SOURCE}$`);
/** Comma-separated profile names, as Spring's `{profile}` path segment. */
export const PROFILES_PATTERN = new RegExp(`^${NAME_SOURCE}(?:,${NAME_SOURCE})*$`);

/** A flattened property value: what YAML scalars become. */
export type PropertyValue = string | number | boolean;

export interface PropertySource {
  /** `file:<path relative to the repository>`, the file the values come from. */
  readonly name: string;
  readonly source: Readonly<Record<string, PropertyValue>>;
}

export class RepositoryError extends Error {
  constructor(readonly file: string, message: string) {
    super(`Cannot read ${file}: ${message}`);
    this.name = "RepositoryError";
  }
}

export function isName(text: string): boolean {
  return NAME_PATTERN.test(text);
}

/** Flattens a parsed document into Spring's dotted keys. */
export function flatten(
  value: unknown,
  file: string,
  prefix = "",
  into: Record<string, PropertyValue> = {},
): Record<string, PropertyValue> {
  if (Array.isArray(value)) {
    value.forEach((item, index) => flatten(item, file, `${prefix}[${index}]`, into));
  } else if (typeof value === "object" && value !== null && !(value instanceof Date)) {
    for (const [key, child] of Object.entries(value)) {
      flatten(child, file, prefix === "" ? key : `${prefix}.${key}`, into);
    }
  } else if (prefix !== "") {
    if (value === null || value === undefined) into[prefix] = "";
    else if (value instanceof Date) into[prefix] = value.toISOString();
    else if (typeof value === "number" || typeof value === "boolean") into[prefix] = value;
    else into[prefix] = String(value);
  } else if (value !== null && value !== undefined) {
    throw new RepositoryError(file, "the document must be a mapping of keys to values");
  }
  return into;
}

function parseDocument(text: string, file: string): Record<string, PropertyValue> {
  let parsed: unknown;
  try {
    parsed = file.endsWith(".json") ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    throw new RepositoryError(file, error instanceof Error ? error.message : String(error));
  }
  return flatten(parsed ?? {}, file);
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** The property sources of `application` under `profiles`, most specific first. */
export async function readPropertySources(
  folder: string,
  application: string,
  profiles: readonly string[],
): Promise<PropertySource[]> {
  const bases = [
    ...[...profiles].reverse().flatMap((profile) =>
      profile === "default" ? [] : [`${application}-${profile}`, `application-${profile}`]
    ),
    application,
    "application",
  ];
  const unique = [...new Set(bases)];
  const sources: PropertySource[] = [];
  for (const base of unique) {
    for (const extension of EXTENSIONS) {
      const file = `${base}.${extension}`;
      const text = await readIfExists(`${folder}/${file}`);
      if (text !== undefined) {
        sources.push({ name: `file:${file}`, source: parseDocument(text, file) });
      }
    }
  }
  return sources;
}

/** The version of a set of sources: a hash of their names and values, in order. */
export async function versionOf(sources: readonly PropertySource[]): Promise<string> {
  const canonical = JSON.stringify(
    sources.map(({ name, source }) => [name, Object.entries(source).sort()]),
  );
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(canonical));
  return Array.from(
    new Uint8Array(digest).slice(0, 10),
    (byte) => byte.toString(16).padStart(2, "0"),
  ).join("");
}

/**
 * Calls `onChange` (debounced by `debounceMs`) whenever a file of the folder
 * changes, until the returned function is called.
 */
export function watchFolder(
  folder: string,
  onChange: () => void,
  options: { readonly debounceMs?: number; readonly onError?: (error: unknown) => void } = {},
): () => void {
  const { debounceMs = 50 } = options;
  const watcher = Deno.watchFs(folder, { recursive: false });
  let timer: ReturnType<typeof setTimeout> | undefined;
  (async () => {
    try {
      for await (const _event of watcher) {
        clearTimeout(timer);
        timer = setTimeout(onChange, debounceMs);
      }
    } catch (error) {
      options.onError?.(error);
    }
  })();
  return () => {
    clearTimeout(timer);
    try {
      watcher.close();
    } catch {
      // Already closed.
    }
  };
}
