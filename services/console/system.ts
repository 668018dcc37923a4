/**
 * The system view: every service and instance the registry lists, each read
 * from its own `/health` and `/metrics`. Rates come from the difference of two
 * scrapes; an instance the registry no longer lists stays on the page, red,
 * for a minute, so a dead one is seen rather than silently gone.
 */
import type { TokenSource } from "../../shared/auth/client_credentials.ts";

export interface InstanceView {
  readonly service: string;
  readonly instanceId: string;
  readonly baseUrl: string;
  readonly version: string;
  /** "up", "down" (listed but not answering) or "evicted" (no longer listed). */
  readonly state: "up" | "down" | "evicted";
  readonly uptimeSeconds: number | undefined;
  readonly requestsPerSecond: number | undefined;
  readonly errorRatio: number | undefined;
  readonly p99Seconds: number | undefined;
  /** Consumer lag per `group/topic/partition`. */
  readonly lag: Readonly<Record<string, number>>;
  /** Breaker state per upstream service (gateway only). */
  readonly breakers: Readonly<Record<string, string>>;
}

interface Sample {
  readonly at: number;
  readonly requests: number;
  readonly errors: number;
}

interface Series {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** Prometheus text format lines into series (no comments, no timestamps). */
export function parseMetrics(text: string): Series[] {
  const series: Series[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (match === null) continue;
    const labels: Record<string, string> = {};
    for (const pair of (match[3] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!.replaceAll('\\"', '"').replaceAll("\\\\", "\\");
    }
    series.push({ name: match[1]!, labels, value: Number(match[4]) });
  }
  return series;
}

/** The 99th percentile from cumulative histogram buckets (upper bound of its bucket). */
export function p99(buckets: readonly { le: number; count: number }[]): number | undefined {
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const total = sorted.at(-1)?.count ?? 0;
  if (total === 0) return undefined;
  const bucket = sorted.find((entry) => entry.count >= total * 0.99);
  return bucket === undefined || !Number.isFinite(bucket.le) ? sorted.at(-2)?.le : bucket.le;
}

const BREAKER_STATES = ["closed", "half-open", "open"];

export interface SystemViewOptions {
  readonly registryUrls: readonly string[];
  readonly tokens: TokenSource;
  readonly fetch?: typeof fetch;
  readonly now?: () => number;
  /** How long an instance that left the registry stays shown as evicted. @default 60_000 */
  readonly keepEvictedMs?: number;
}

export class SystemView {
  readonly #options: SystemViewOptions;
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  readonly #samples = new Map<string, Sample>();
  readonly #seen = new Map<string, { view: InstanceView; lastListed: number }>();

  constructor(options: SystemViewOptions) {
    this.#options = options;
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#now = options.now ?? Date.now;
  }

  async #registry(path: string): Promise<unknown> {
    let lastError: unknown;
    for (const url of this.#options.registryUrls) {
      try {
        const response = await this.#fetch(`${url.replace(/\/+$/, "")}${path}`, {
          headers: { authorization: `Bearer ${await this.#options.tokens.token()}` },
          signal: AbortSignal.timeout(2000),
        });
        if (response.status === 401) this.#options.tokens.invalidate();
        if (!response.ok) {
          await response.body?.cancel();
          throw new Error(`registry ${url} answered ${response.status}`);
        }
        return await response.json();
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  }

  /** Every instance now, sorted by service and id. */
  async instances(): Promise<InstanceView[]> {
    const now = this.#now();
    const { services } = await this.#registry("/api/v1/registry/services") as {
      services: { service: string }[];
    };
    const listed = (await Promise.all(services.map(async ({ service }) => {
      const body = await this.#registry(
        `/api/v1/registry/services/${encodeURIComponent(service)}/instances`,
      ) as {
        instances: {
          service: string;
          instanceId: string;
          baseUrl: string;
          version: string;
          registeredAt: string;
        }[];
      };
      return body.instances;
    }))).flat();
    const views = await Promise.all(listed.map((instance) => this.#inspect(instance, now)));
    for (const view of views) {
      this.#seen.set(`${view.service}/${view.instanceId}`, { view, lastListed: now });
    }
    const keep = this.#options.keepEvictedMs ?? 60_000;
    const evicted: InstanceView[] = [];
    for (const [key, entry] of this.#seen) {
      if (entry.lastListed === now) continue;
      if (now - entry.lastListed > keep) {
        this.#seen.delete(key);
        this.#samples.delete(key);
      } else {
        evicted.push({ ...entry.view, state: "evicted", requestsPerSecond: undefined });
      }
    }
    return [...views, ...evicted].sort((a, b) =>
      a.service.localeCompare(b.service) || a.instanceId.localeCompare(b.instanceId)
    );
  }

  async #inspect(
    instance: {
      service: string;
      instanceId: string;
      baseUrl: string;
      version: string;
      registeredAt: string;
    },
    now: number,
  ): Promise<InstanceView> {
    const base = {
      service: instance.service,
      instanceId: instance.instanceId,
      baseUrl: instance.baseUrl,
      version: instance.version,
      uptimeSeconds: Math.max(0, Math.round((now - Date.parse(instance.registeredAt)) / 1000)),
    };
    try {
      const [health, metrics] = await Promise.all([
        this.#fetch(`${instance.baseUrl}/health`, { signal: AbortSignal.timeout(1500) }),
        this.#fetch(`${instance.baseUrl}/metrics`, { signal: AbortSignal.timeout(1500) }),
      ]);
      await health.body?.cancel();
      const series = parseMetrics(await metrics.text());
      const requests = series.filter((entry) => entry.name === "http_requests_total");
      const total = requests.reduce((sum, entry) => sum + entry.value, 0);
      const errors = requests.filter((entry) => Number(entry.labels.status) >= 500)
        .reduce((sum, entry) => sum + entry.value, 0);
      const key = `${instance.service}/${instance.instanceId}`;
      const previous = this.#samples.get(key);
      this.#samples.set(key, { at: now, requests: total, errors });
      const elapsed = previous === undefined ? 0 : (now - previous.at) / 1000;
      const delta = previous === undefined ? 0 : total - previous.requests;
      const buckets = new Map<number, number>();
      for (const entry of series) {
        if (entry.name !== "http_request_duration_seconds_bucket") continue;
        const le = entry.labels.le === "+Inf" ? Infinity : Number(entry.labels.le);
        buckets.set(le, (buckets.get(le) ?? 0) + entry.value);
      }
      const lag: Record<string, number> = {};
      for (const entry of series) {
        if (!entry.name.endsWith("_consumer_lag")) continue;
        lag[`${entry.labels.topic ?? ""}/${entry.labels.partition ?? ""}`] = entry.value;
      }
      const breakers: Record<string, string> = {};
      for (const entry of series) {
        if (entry.name !== "gateway_breaker_state") continue;
        breakers[entry.labels.service ?? "?"] = BREAKER_STATES[entry.value] ?? String(entry.value);
      }
      return {
        ...base,
        state: health.ok ? "up" : "down",
        requestsPerSecond: elapsed > 0 ? Math.max(0, delta) / elapsed : undefined,
        errorRatio: previous === undefined
          ? (total === 0 ? 0 : errors / total)
          : delta > 0
          ? Math.max(0, errors - previous.errors) / delta
          : 0,
        p99Seconds: p99([...buckets].map(([le, count]) => ({ le, count }))),
        lag,
        breakers,
      };
    } catch {
      return {
        ...base,
        state: "down",
        requestsPerSecond: undefined,
        errorRatio: undefined,
        p99Seconds: undefined,
        lag: {},
        breakers: {},
      };
    }
  }
}
