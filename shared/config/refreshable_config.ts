/**
 * A configuration that changes while the process runs. A new set of
 * variables is validated whole (`load` plus every subscriber's `validate`)
 * before anything changes; then the refreshable settings take their new
 * values at once, and the others keep theirs and are reported as needing a
 * restart. A set that fails validation is refused and the old one stays.
 */
import { ConfigError, type ConfigIssue } from "./setting.ts";

export type Variables = Readonly<Record<string, string>>;

/** Where the applied configuration came from. */
export type ConfigSource = "environment" | "config-service" | "cache";

export interface ConfigStatus {
  /** The config service's version of the applied variables; "" for the environment only. */
  readonly version: string;
  readonly source: ConfigSource;
  /** Settings changed in the repository that apply only after a restart. */
  readonly restartRequired: readonly string[];
  /** The last refused change, with why. */
  readonly refused?: { readonly version: string; readonly reason: string };
}

export interface ConfigSubscriber<C> {
  /** Throws (a `ConfigError` or any `Error`) to refuse `next`; nothing is applied then. */
  validate?(next: C): void;
  /** Called with the applied configuration, after every subscriber validated it. */
  apply(next: C, previous: C): void;
}

export interface RefreshableConfigOptions<C> {
  /** Parses and validates a whole set of variables; throws `ConfigError`. */
  readonly load: (variables: Variables) => C;
  /** Every variable name the configuration has. */
  readonly names: readonly string[];
  /** The variables whose changes apply without a restart. */
  readonly refreshable: ReadonlySet<string>;
  readonly initial: {
    readonly variables: Variables;
    readonly version: string;
    readonly source: ConfigSource;
  };
}

/** The outcome of `propose`. */
export type ProposeResult =
  | { readonly outcome: "unchanged" }
  | {
    readonly outcome: "applied";
    readonly changed: readonly string[];
    readonly restartRequired: readonly string[];
  }
  | { readonly outcome: "refused"; readonly reason: string };

function describe(error: unknown): string {
  if (error instanceof ConfigError) {
    return error.issues.map((issue: ConfigIssue) => `${issue.env}: ${issue.message}`).join("; ");
  }
  return error instanceof Error ? error.message : String(error);
}

export class RefreshableConfig<C> {
  readonly #options: RefreshableConfigOptions<C>;
  readonly #subscribers = new Set<ConfigSubscriber<C>>();
  /** The variables applied (non-refreshable ones as at start). */
  #variables: Variables;
  /** The variables last proposed, to tell what changed since. */
  #proposed: Variables;
  #current: C;
  #status: ConfigStatus;

  constructor(options: RefreshableConfigOptions<C>) {
    this.#options = options;
    this.#variables = options.initial.variables;
    this.#proposed = options.initial.variables;
    this.#current = options.load(options.initial.variables);
    this.#status = {
      version: options.initial.version,
      source: options.initial.source,
      restartRequired: [],
    };
  }

  get current(): C {
    return this.#current;
  }

  get status(): ConfigStatus {
    return this.#status;
  }

  /** The variables applied, for the on-disk copy. */
  get variables(): Variables {
    return this.#variables;
  }

  /** Adds a subscriber; returns the unsubscribe. */
  subscribe(subscriber: ConfigSubscriber<C>): () => void {
    this.#subscribers.add(subscriber);
    return () => this.#subscribers.delete(subscriber);
  }

  /** Marks the applied configuration as coming from `source` (the service after a cached start). */
  markSource(source: ConfigSource, version: string): void {
    this.#status = { ...this.#status, source, version };
  }

  /** Records a change refused before it reached `propose` (a repository error). */
  refuse(version: string, reason: string): void {
    this.#status = { ...this.#status, refused: { version, reason } };
  }

  /** Records that the repository is back at the applied version: no refused change is pending. */
  confirm(): void {
    const { refused: _refused, ...rest } = this.#status;
    this.#status = rest;
  }

  /**
   * Validates `variables` whole and applies their refreshable settings at
   * once; a setting that needs a restart keeps its value and is reported.
   */
  propose(variables: Variables, version: string, source: ConfigSource): ProposeResult {
    const { names, refreshable } = this.#options;
    const changed = names.filter((name) => variables[name] !== this.#variables[name]);
    const sinceProposed = names.filter((name) => variables[name] !== this.#proposed[name]);
    if (sinceProposed.length === 0 && changed.length === 0) {
      // The repository is back at the applied values: no refused change is pending.
      const { refused: _refused, ...rest } = this.#status;
      this.#status = { ...rest, version, source };
      return { outcome: "unchanged" };
    }
    const restartRequired = changed.filter((name) => !refreshable.has(name));
    const applied: Record<string, string> = {};
    for (const name of names) {
      const value = refreshable.has(name) ? variables[name] : this.#variables[name];
      if (value !== undefined) applied[name] = value;
    }
    let next: C;
    try {
      // The whole new set must be valid, restart-only settings included.
      this.#options.load(variables);
      next = this.#options.load(applied);
      for (const subscriber of this.#subscribers) subscriber.validate?.(next);
    } catch (error) {
      const reason = describe(error);
      this.#status = { ...this.#status, refused: { version, reason } };
      return { outcome: "refused", reason };
    }
    const previous = this.#current;
    this.#current = next;
    this.#variables = applied;
    this.#proposed = variables;
    const { refused: _refused, ...rest } = this.#status;
    this.#status = { ...rest, version, source, restartRequired };
    for (const subscriber of this.#subscribers) subscriber.apply(next, previous);
    return {
      outcome: "applied",
      changed: changed.filter((name) => refreshable.has(name)),
      restartRequired,
    };
  }
}
