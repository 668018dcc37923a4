/**
 * A service's settings from the config service (Spring Cloud Config's
 * client side). At start: `GET {url}/{application}/{profile}` with the
 * service's own token, retried with back-off for `startTimeoutMs`, then the
 * last good copy on disk (said loudly), else a clear failure: never the
 * defaults in silence. The repository's dotted keys name the same settings
 * as the environment (`gateway.rate-limits` is `GATEWAY_RATE_LIMITS`; a list
 * may be a YAML list), and an environment variable still wins.
 *
 * While running: a watch stream (server-sent `version` events) announces each
 * change; the client fetches it with `If-None-Match` and proposes it to the
 * `RefreshableConfig`. While the stream is down it polls every `pollMs` and
 * keeps reopening the stream, so an outage only delays a change.
 */
import { sleep } from "../async/retry.ts";
import type { TokenSource } from "../auth/client_credentials.ts";
import { readServerSentEvents } from "../discovery/registry_client.ts";
import { writeFileAtomically } from "../files/write_file_atomically.ts";
import type { Logger } from "../log/log.ts";
import { RefreshableConfig, type Variables } from "./refreshable_config.ts";
import { ConfigError } from "./setting.ts";

/** Where a variable's value came from: the repository's key and file. */
export interface Origin {
  readonly key: string;
  readonly file: string;
}

interface PropertySource {
  readonly name: string;
  readonly source: Readonly<Record<string, unknown>>;
}

interface Fetched {
  readonly version: string;
  readonly variables: Variables;
  readonly origins: Readonly<Record<string, Origin>>;
}

export class ConfigServiceError extends Error {
  readonly code = "config-service";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConfigServiceError";
  }
}

/** `gateway.rate-limits` and `GATEWAY_RATE_LIMITS` both name `GATEWAY_RATE_LIMITS`. */
export function variableName(key: string): string {
  return key.replace(/\[\d+\]$/, "").replace(/[.-]/g, "_").toUpperCase();
}

/**
 * The variables of a config-service answer: sources are most specific first,
 * so the first source naming a variable wins; a YAML list joins with commas.
 * Throws `ConfigError` for a key that names no setting or one read from the
 * environment only.
 */
export function variablesOf(
  sources: readonly PropertySource[],
  names: ReadonlySet<string>,
  environmentOnly: ReadonlySet<string>,
): { variables: Variables; origins: Record<string, Origin> } {
  const variables: Record<string, string> = {};
  const origins: Record<string, Origin> = {};
  const issues: { env: string; message: string }[] = [];
  for (const { name: file, source } of sources) {
    const lists = new Map<string, { index: number; value: string }[]>();
    const here: Record<string, { key: string; value: string }> = {};
    for (const [key, value] of Object.entries(source)) {
      const name = variableName(key);
      if (!names.has(name)) {
        issues.push({ env: name, message: `'${key}' in ${file} names no setting` });
        continue;
      }
      if (environmentOnly.has(name)) {
        issues.push({
          env: name,
          message: `'${key}' in ${file}: this setting configures the process (engines, ` +
            "addresses, the config client) and is read from the environment only",
        });
        continue;
      }
      const index = /\[(\d+)\]$/.exec(key);
      if (index !== null) {
        const items = lists.get(name) ?? [];
        items.push({ index: Number(index[1]), value: String(value) });
        lists.set(name, items);
        here[name] = { key: key.replace(/\[\d+\]$/, ""), value: "" };
      } else {
        here[name] = { key, value: String(value) };
      }
    }
    for (const [name, items] of lists) {
      here[name] = {
        key: here[name]!.key,
        value: items.sort((a, b) => a.index - b.index).map((item) => item.value).join(","),
      };
    }
    for (const [name, { key, value }] of Object.entries(here)) {
      if (name in variables) continue;
      variables[name] = value;
      origins[name] = { key, file };
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return { variables, origins };
}

/** A `ConfigError` whose issues name the repository key and file of each bad variable. */
function withOrigins(
  error: ConfigError,
  origins: Readonly<Record<string, Origin>>,
  environment: Variables,
): ConfigError {
  return new ConfigError(error.issues.map((issue) => {
    const origin = origins[issue.env];
    if (origin === undefined || issue.env in environment) return issue;
    return { env: `${issue.env} ('${origin.key}' in ${origin.file})`, message: issue.message };
  }));
}

export interface RemoteConfigOptions<C> {
  /** The config service's base URL. */
  readonly url: string;
  readonly application: string;
  /** Comma-separated profiles. */
  readonly profile: string;
  /** The service's own access tokens (audience `config`). */
  readonly tokens: TokenSource;
  /** The process environment: it wins over the repository. */
  readonly environment: Variables;
  /** Parses and validates a whole set of variables; throws `ConfigError`. */
  readonly load: (variables: Variables) => C;
  readonly names: readonly string[];
  readonly refreshable: ReadonlySet<string>;
  /** Settings the repository must not set. */
  readonly environmentOnly: ReadonlySet<string>;
  /** Folder of the last good copies, one file per application and profile. */
  readonly cacheDir: string;
  /** @default 20_000 */
  readonly startTimeoutMs?: number;
  /** @default 1_000 */
  readonly pollMs?: number;
  /** Per request. @default 5_000 */
  readonly requestTimeoutMs?: number;
  readonly logger: Logger;
  /** @default globalThis.fetch */
  readonly fetch?: typeof fetch;
}

export interface RemoteConfig<C> {
  readonly config: RefreshableConfig<C>;
  /** Stops following the config service. */
  close(): void;
}

const CACHE_FORMAT = 1;

/** Loads the configuration at start and follows its changes; see the module comment. */
export async function loadRemoteConfig<C>(
  options: RemoteConfigOptions<C>,
): Promise<RemoteConfig<C>> {
  const {
    url,
    application,
    profile,
    tokens,
    environment,
    logger,
    startTimeoutMs = 20_000,
    pollMs = 1_000,
    requestTimeoutMs = 5_000,
  } = options;
  const doFetch = options.fetch ?? globalThis.fetch;
  const names = new Set(options.names);
  const resource = `${url}/${encodeURIComponent(application)}/${encodeURIComponent(profile)}`;
  const cacheFile = `${options.cacheDir}/${application}-${profile.replaceAll(",", "+")}.json`;
  const closing = new AbortController();

  async function request(headers: Record<string, string>, signal: AbortSignal): Promise<Response> {
    for (let attempt = 0;; attempt++) {
      const response = await doFetch(resource, {
        headers: { ...headers, authorization: `Bearer ${await tokens.token()}` },
        signal,
      });
      if (response.status === 401 && attempt === 0) {
        await response.body?.cancel();
        tokens.invalidate();
        continue;
      }
      return response;
    }
  }

  /** The current configuration, or undefined when `version` is still current. */
  async function fetchConfig(knownVersion?: string): Promise<Fetched | undefined> {
    const signal = AbortSignal.any([closing.signal, AbortSignal.timeout(requestTimeoutMs)]);
    const response = await request(
      knownVersion === undefined ? { accept: "application/json" } : {
        accept: "application/json",
        "if-none-match": `"${knownVersion}"`,
      },
      signal,
    );
    if (response.status === 304) {
      await response.body?.cancel();
      return undefined;
    }
    if (!response.ok) {
      const text = await response.text();
      let detail = text.slice(0, 500);
      try {
        detail = JSON.parse(text).detail ?? detail;
      } catch {
        // Not problem+json: the text as it is.
      }
      throw new ConfigServiceError(
        `Cannot read the configuration of ${application} (${profile}) from ${url}: ` +
          `${response.status} ${detail}`,
      );
    }
    const body = await response.json() as { version?: unknown; propertySources?: unknown };
    if (typeof body.version !== "string" || !Array.isArray(body.propertySources)) {
      throw new ConfigServiceError(`Cannot read ${resource}: the answer has no version or sources`);
    }
    const { variables, origins } = variablesOf(
      body.propertySources as PropertySource[],
      names,
      options.environmentOnly,
    );
    return { version: body.version, variables, origins };
  }

  const merged = (variables: Variables): Variables => ({ ...variables, ...environment });

  function validate(fetched: Fetched): void {
    try {
      options.load(merged(fetched.variables));
    } catch (error) {
      if (error instanceof ConfigError) throw withOrigins(error, fetched.origins, environment);
      throw error;
    }
  }

  async function saveCopy(fetched: Fetched): Promise<void> {
    try {
      // It holds decrypted secrets: readable by this user only.
      await writeFileAtomically(
        cacheFile,
        JSON.stringify({ format: CACHE_FORMAT, savedAt: new Date().toISOString(), ...fetched }),
        { mode: 0o600 },
      );
    } catch (error) {
      logger.warn("Cannot keep a copy of the configuration in {file}", { file: cacheFile, error });
    }
  }

  async function readCopy(): Promise<(Fetched & { savedAt: string }) | undefined> {
    try {
      const saved = JSON.parse(await Deno.readTextFile(cacheFile));
      if (saved.format !== CACHE_FORMAT) return undefined;
      return saved;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return undefined;
      logger.error("Cannot read the cached configuration {file}", { file: cacheFile, error });
      return undefined;
    }
  }

  // Start: the config service, retried with back-off; then the copy on disk.
  const deadline = Date.now() + startTimeoutMs;
  let initial: Fetched | undefined;
  let lastError: unknown;
  for (let failures = 0;; failures++) {
    try {
      initial = await fetchConfig();
      break;
    } catch (error) {
      if (error instanceof ConfigError) throw withOrigins(error, {}, environment);
      lastError = error;
      const delayMs = Math.min(5_000, 200 * 2 ** failures);
      if (Date.now() + delayMs > deadline) break;
      logger.warn(
        "Cannot read the configuration of {application} from {url}, retrying in {delayMs} ms",
        { application, url, delayMs, error },
      );
      await sleep(delayMs);
    }
  }
  let source: "config-service" | "cache" = "config-service";
  if (initial === undefined) {
    const copy = await readCopy();
    const reason = lastError instanceof Error ? lastError.message : String(lastError);
    if (copy === undefined) {
      throw new ConfigServiceError(
        `Cannot start ${application}: the config service at ${url} did not answer within ` +
          `${startTimeoutMs} ms (${reason}) and there is no cached copy in ${cacheFile}. ` +
          "Start the config service, or unset CONFIG_URL to run on the environment only",
      );
    }
    logger.error(
      "STARTING FROM A CACHED CONFIGURATION: the config service at {url} did not answer within " +
        "{timeoutMs} ms; using version {version} saved {savedAt} in {file} until it answers",
      {
        url,
        timeoutMs: startTimeoutMs,
        version: copy.version,
        savedAt: copy.savedAt,
        file: cacheFile,
        error: lastError,
      },
    );
    initial = copy;
    source = "cache";
  }
  validate(initial);
  if (source === "config-service") await saveCopy(initial);
  const config = new RefreshableConfig<C>({
    load: options.load,
    names: options.names,
    refreshable: options.refreshable,
    initial: { variables: merged(initial.variables), version: initial.version, source },
  });
  logger.info("Configuration {version} of {application} ({profile}) from {source}", {
    version: initial.version,
    application,
    profile,
    source: source === "cache" ? cacheFile : url,
  });

  let applying = Promise.resolve();
  /** Fetches and proposes the current configuration; one at a time. */
  function refresh(): Promise<void> {
    const run = applying.then(async () => {
      const known = config.status.source === "config-service" ? config.status.version : undefined;
      const fetched = await fetchConfig(known);
      // Not modified: the repository holds the applied version again.
      if (fetched === undefined) return config.confirm();
      if (fetched.version === config.status.refused?.version) return;
      const result = (() => {
        try {
          validate(fetched);
        } catch (error) {
          return {
            outcome: "refused" as const,
            reason: error instanceof Error ? error.message : String(error),
          };
        }
        return config.propose(merged(fetched.variables), fetched.version, "config-service");
      })();
      switch (result.outcome) {
        case "unchanged":
          if (known !== fetched.version) await saveCopy(fetched);
          break;
        case "applied":
          await saveCopy(fetched);
          logger.info("Configuration {version} applied: {changed}", {
            version: fetched.version,
            changed: result.changed.join(", ") || "nothing refreshable",
          });
          if (result.restartRequired.length > 0) {
            logger.warn("Configuration {version}: restart required for {settings}", {
              version: fetched.version,
              settings: result.restartRequired.join(", "),
            });
          }
          break;
        case "refused":
          logger.error("Configuration {version} refused, keeping {current}: {reason}", {
            version: fetched.version,
            current: config.status.version,
            reason: result.reason,
          });
          config.refuse(fetched.version, result.reason);
          break;
      }
    }).catch((error) => {
      if (!closing.signal.aborted) {
        logger.warn("Cannot refresh the configuration of {application}", { application, error });
      }
      throw error;
    });
    // The chain itself never rejects, so a failed refresh does not block the next.
    applying = run.catch(() => {});
    return run;
  }

  /** Follows the watch stream; polls while it is down. */
  async function follow(): Promise<void> {
    let down = false;
    while (!closing.signal.aborted) {
      try {
        const response = await request({ accept: "text/event-stream" }, closing.signal);
        if (!response.ok || response.body === null) {
          await response.body?.cancel();
          throw new ConfigServiceError(`The watch of ${resource} answered ${response.status}`);
        }
        if (down) {
          logger.info("Following the config service at {url} again", { url });
          down = false;
        }
        for await (const event of readServerSentEvents(response.body)) {
          if (event.event !== "version") continue;
          const { version } = JSON.parse(event.data) as { version: string };
          if (version !== config.status.version || config.status.source !== "config-service") {
            await refresh().catch(() => {});
          } else {
            // Back at the applied version (after a refused change): nothing is pending.
            config.confirm();
          }
        }
      } catch (error) {
        if (closing.signal.aborted) return;
        if (!down) {
          logger.warn(
            "Cannot follow the config service at {url}; polling every {pollMs} ms, the current " +
              "configuration {version} stays",
            { url, pollMs, version: config.status.version, error },
          );
          down = true;
        }
      }
      if (closing.signal.aborted) return;
      await sleep(pollMs, closing.signal);
      if (closing.signal.aborted) return;
      // A poll between reconnections: catches up even while streams fail.
      await refresh().catch(() => {});
    }
  }
  void follow();

  return {
    config,
    close: () => closing.abort(),
  };
}
