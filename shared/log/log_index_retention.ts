/**
 * Retention of the shipped log lines: deletes the daily `<prefix>-YYYY.MM.DD`
 * indices older than the retention, at start and then every hour, so that log
 * shipping never fills Elasticsearch's disk. Done by the shipping process
 * itself rather than by an index lifecycle policy, which the distributions we
 * run (and OpenSearch) do not all have. Several processes pruning at once is
 * harmless: a deletion that finds the index gone is ignored.
 */
import type { Client } from "@elastic/elasticsearch";
import { indexPattern } from "./ecs_log_document.ts";
import type { ShippingStatusLogger } from "./elasticsearch_log_sink.ts";

const DAY_MS = 86_400_000;

export interface LogIndexRetentionOptions {
  /** Reports pruning failures; like the sink's, it must not ship to Elasticsearch. */
  readonly logger: ShippingStatusLogger;
  /** The daily indices' prefix. @default "logs-twitterapi" */
  readonly indexPrefix?: string;
  /** Days of lines kept: the indices of today and the `retentionDays - 1` days before. @default 7 */
  readonly retentionDays?: number;
  /** Time between two prunings. @default 3_600_000 */
  readonly intervalMs?: number;
  /** The clock, for tests. @default Date.now */
  readonly now?: () => number;
}

/**
 * The daily indices of `prefix` among `names` whose day is `retentionDays` or
 * more before today's (UTC). Other names under the pattern are never chosen.
 */
export function expiredLogIndices(
  prefix: string,
  names: readonly string[],
  retentionDays: number,
  now: number,
): string[] {
  const today = Math.floor(now / DAY_MS);
  const daily = new RegExp(
    `^${prefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}-(\\d{4})\\.(\\d{2})\\.(\\d{2})$`,
  );
  return names.filter((name) => {
    const match = daily.exec(name);
    if (match === null) return false;
    const day = Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])) / DAY_MS;
    return today - day >= retentionDays;
  }).sort();
}

export class LogIndexRetention {
  readonly #client: Client;
  readonly #logger: ShippingStatusLogger;
  readonly #prefix: string;
  readonly #retentionDays: number;
  readonly #intervalMs: number;
  readonly #now: () => number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #pruning: Promise<readonly string[]> | undefined;

  constructor(client: Client, options: LogIndexRetentionOptions) {
    const { indexPrefix = "logs-twitterapi", retentionDays = 7, intervalMs = 3_600_000 } = options;
    for (const [name, value] of Object.entries({ retentionDays, intervalMs })) {
      if (!Number.isSafeInteger(value) || value < 1) {
        throw new RangeError(
          `Cannot keep log indices: '${name}' must be a positive integer, got ${value}`,
        );
      }
    }
    this.#client = client;
    this.#logger = options.logger;
    this.#prefix = indexPrefix;
    this.#retentionDays = retentionDays;
    this.#intervalMs = intervalMs;
    this.#now = options.now ?? Date.now;
  }

  /** Prunes now, then every interval until `close()`. */
  start(): void {
    if (this.#timer !== undefined) return;
    void this.prune();
    this.#timer = setInterval(() => void this.prune(), this.#intervalMs);
    Deno.unrefTimer(this.#timer);
  }

  /**
   * Deletes the expired indices; resolves with their names. A failure is
   * logged and resolves with none: the next pruning tries again.
   */
  prune(): Promise<readonly string[]> {
    this.#pruning ??= this.#prune().finally(() => this.#pruning = undefined);
    return this.#pruning;
  }

  async #prune(): Promise<readonly string[]> {
    try {
      const indices = await this.#client.indices.get({
        index: indexPattern(this.#prefix),
        allow_no_indices: true,
        ignore_unavailable: true,
        features: ["settings"],
      });
      const expired = expiredLogIndices(
        this.#prefix,
        Object.keys(indices),
        this.#retentionDays,
        this.#now(),
      );
      // Named, not by wildcard: Elasticsearch refuses wildcard deletes by default.
      if (expired.length > 0) {
        await this.#client.indices.delete({ index: expired, ignore_unavailable: true });
        this.#logger.info("Deleted {count} log indices older than {days} days: {indices}", {
          count: expired.length,
          days: this.#retentionDays,
          indices: expired,
        });
      }
      return expired;
    } catch (error) {
      this.#logger.warn("Cannot delete expired log indices {pattern}; retrying in {minutes} min", {
        pattern: indexPattern(this.#prefix),
        minutes: Math.round(this.#intervalMs / 60_000),
        error,
      });
      return [];
    }
  }

  /** Stops pruning and waits for a pruning in progress. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#pruning;
  }
}
