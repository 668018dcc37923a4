/**
 * Typed settings read from environment variables. A setting names its
 * variable, its default and how to parse it; `loadSettings` reads a whole tree
 * of settings at once and reports every bad variable in one `ConfigError`.
 */

export interface Setting<T> {
  readonly env: string;
  readonly default: T;
  readonly doc: string;
  /** Parses the raw variable; throws `RangeError` with a human message. */
  parse(raw: string): T;
  /** How the value is written back, for documentation. */
  format(value: T): string;
}

/** A tree of settings; leaves are `Setting`s. */
export interface SettingsTree {
  readonly [key: string]: Setting<unknown> | SettingsTree;
}

export type ConfigOf<S> = {
  readonly [K in keyof S]: S[K] extends Setting<infer T> ? T : ConfigOf<S[K]>;
};

export interface ConfigIssue {
  readonly env: string;
  readonly message: string;
}

export class ConfigError extends Error {
  readonly code = "invalid-config";
  constructor(readonly issues: readonly ConfigIssue[]) {
    super(
      `Cannot start with this configuration: ${
        issues.map((issue) => `${issue.env}: ${issue.message}`).join("; ")
      }`,
    );
    this.name = "ConfigError";
  }
}

interface CommonOptions<T> {
  readonly default: T;
  readonly doc: string;
}

export interface IntegerOptions extends CommonOptions<number> {
  /** @default 0 */
  readonly min?: number;
  /** @default Number.MAX_SAFE_INTEGER */
  readonly max?: number;
}

export function integer(env: string, options: IntegerOptions): Setting<number> {
  const { min = 0, max = Number.MAX_SAFE_INTEGER } = options;
  return {
    env,
    default: options.default,
    doc: options.doc,
    parse(raw) {
      const value = Number(raw.trim());
      if (!/^-?\d+$/.test(raw.trim()) || !Number.isSafeInteger(value)) {
        throw new RangeError(`must be an integer, got '${raw}'`);
      }
      if (value < min || value > max) {
        throw new RangeError(`must be between ${min} and ${max}, got ${value}`);
      }
      return value;
    },
    format: String,
  };
}

export interface DecimalOptions extends CommonOptions<number> {
  readonly min: number;
  readonly max: number;
}

/** A finite number from `min` to `max`, such as a ratio. */
export function decimal(env: string, options: DecimalOptions): Setting<number> {
  const { min, max } = options;
  return {
    env,
    default: options.default,
    doc: options.doc,
    parse(raw) {
      const value = Number(raw.trim());
      if (!/^-?(\d+\.?\d*|\.\d+)$/.test(raw.trim()) || !Number.isFinite(value)) {
        throw new RangeError(`must be a number, got '${raw}'`);
      }
      if (value < min || value > max) {
        throw new RangeError(`must be between ${min} and ${max}, got ${value}`);
      }
      return value;
    },
    format: String,
  };
}

export interface TextOptions extends CommonOptions<string> {
  /** Values must match this pattern. */
  readonly pattern?: RegExp;
  /** Describes `pattern` in error messages. */
  readonly patternDescription?: string;
  /**
   * An empty value is accepted (it turns off what the default turns on, as
   * "keep nothing in a file") although the default is not empty.
   * @default false
   */
  readonly allowEmpty?: boolean;
}

export function text(env: string, options: TextOptions): Setting<string> {
  return {
    env,
    default: options.default,
    doc: options.doc,
    parse(raw) {
      const value = raw.trim();
      // Where empty is the default, it means what the default means (off, derived).
      if (value === "" && (options.default === "" || options.allowEmpty === true)) return "";
      if (value === "") throw new RangeError("must not be empty");
      if (options.pattern && !options.pattern.test(value)) {
        throw new RangeError(
          `must be ${options.patternDescription ?? `like ${options.pattern}`}, got '${raw}'`,
        );
      }
      return value;
    },
    format: (value) => value,
  };
}

export function oneOf<const T extends string>(
  env: string,
  values: readonly T[],
  options: CommonOptions<T>,
): Setting<T> {
  return {
    env,
    default: options.default,
    doc: `${options.doc} (one of: ${values.join(", ")})`,
    parse(raw) {
      const value = raw.trim();
      const found = values.find((candidate) => candidate === value);
      if (found === undefined) {
        throw new RangeError(`must be one of ${values.join(", ")}, got '${raw}'`);
      }
      return found;
    },
    format: (value) => value,
  };
}

export function boolean(env: string, options: CommonOptions<boolean>): Setting<boolean> {
  return {
    env,
    default: options.default,
    doc: options.doc,
    parse(raw) {
      const value = raw.trim().toLowerCase();
      if (value === "true" || value === "1") return true;
      if (value === "false" || value === "0") return false;
      throw new RangeError(`must be true or false, got '${raw}'`);
    },
    format: String,
  };
}

/** A comma-separated list of non-empty items. */
export function list(env: string, options: CommonOptions<readonly string[]>): Setting<string[]> {
  return {
    env,
    default: [...options.default],
    doc: `${options.doc} (comma-separated)`,
    parse(raw) {
      const items = raw.split(",").map((item) => item.trim());
      if (items.some((item) => item === "")) {
        throw new RangeError(`must be a comma-separated list of non-empty items, got '${raw}'`);
      }
      return items;
    },
    format: (value) => value.join(","),
  };
}

/** An ISO-8601 date-time with an explicit offset, kept as epoch milliseconds. */
export function instant(env: string, options: CommonOptions<number>): Setting<number> {
  return {
    env,
    default: options.default,
    doc: options.doc,
    parse(raw) {
      const value = raw.trim();
      const millis = Date.parse(value);
      if (!/(Z|[+-]\d\d:\d\d)$/.test(value) || Number.isNaN(millis)) {
        throw new RangeError(`must be an ISO-8601 date-time with offset, got '${raw}'`);
      }
      return millis;
    },
    format: (value) => new Date(value).toISOString(),
  };
}

function isSetting(node: Setting<unknown> | SettingsTree): node is Setting<unknown> {
  return typeof node.parse === "function";
}

/** Every setting of a tree, depth first, for validation and documentation. */
export function listSettings(tree: SettingsTree): Setting<unknown>[] {
  return Object.values(tree).flatMap((node) => isSetting(node) ? [node] : listSettings(node));
}

/**
 * Reads every setting of `tree` from `env`, falling back to defaults.
 * Throws one `ConfigError` naming every invalid variable.
 */
export function loadSettings<S extends SettingsTree>(
  tree: S,
  env: Readonly<Record<string, string | undefined>>,
): ConfigOf<S> {
  const issues: ConfigIssue[] = [];
  const read = (node: SettingsTree): Record<string, unknown> =>
    Object.fromEntries(
      Object.entries(node).map(([key, child]) => {
        if (!isSetting(child)) return [key, read(child)];
        const raw = env[child.env];
        if (raw === undefined) return [key, child.default];
        try {
          return [key, child.parse(raw)];
        } catch (error) {
          issues.push({
            env: child.env,
            message: error instanceof Error ? error.message : String(error),
          });
          return [key, child.default];
        }
      }),
    );
  const config = read(tree);
  if (issues.length > 0) throw new ConfigError(issues);
  return config as ConfigOf<S>;
}
