/**
 * The trace reader over Zipkin's read API (`/api/v2/trace/{id}`,
 * `/api/v2/traces`, `/api/v2/services`), the spans as Zipkin stores them.
 */
import {
  checkTraceId,
  type RecentTracesQuery,
  resolveRecentQuery,
  type TraceReader,
} from "./trace_reader.ts";
import { sortSpans, type TraceSpan } from "./trace_span.ts";

export interface ZipkinTraceReaderOptions {
  /** Zipkin's base URL, e.g. `http://127.0.0.1:9411`. */
  readonly url: string;
  /**
   * Longest wait for one answer, in milliseconds.
   * @default 5_000
   */
  readonly timeoutMs?: number;
  /** @default globalThis.fetch */
  readonly fetch?: typeof fetch;
}

export class ZipkinTraceReader implements TraceReader {
  readonly #baseUrl: string;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;

  constructor(options: ZipkinTraceReaderOptions) {
    this.#baseUrl = options.url.replace(/\/+$/, "");
    this.#timeoutMs = options.timeoutMs ?? 5_000;
    this.#fetch = options.fetch ?? fetch;
  }

  async trace(traceId: string): Promise<TraceSpan[] | undefined> {
    checkTraceId(traceId);
    const spans = await this.#get<TraceSpan[]>(`/api/v2/trace/${traceId}`, "read a trace");
    return spans === undefined || spans.length === 0 ? undefined : sortSpans(spans);
  }

  async recentTraces(query: RecentTracesQuery): Promise<TraceSpan[][]> {
    const { serviceName, limit, lookbackMs, endTs } = resolveRecentQuery(query);
    const parameters = new URLSearchParams({
      serviceName,
      limit: String(limit),
      lookback: String(lookbackMs),
      endTs: String(endTs),
    });
    const traces = await this.#get<TraceSpan[][]>(
      `/api/v2/traces?${parameters}`,
      "read recent traces",
    ) ?? [];
    return traces.map(sortSpans);
  }

  async serviceNames(): Promise<string[]> {
    const names = await this.#get<string[]>("/api/v2/services", "read service names") ?? [];
    return [...names].sort();
  }

  /** The JSON answer, or undefined for 404. */
  async #get<T>(path: string, action: string): Promise<T | undefined> {
    const url = this.#baseUrl + path;
    let response: Response;
    try {
      response = await this.#fetch(url, {
        headers: { accept: "application/json" },
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (error) {
      throw new Error(`Cannot ${action} from Zipkin at ${this.#baseUrl}: ${String(error)}`, {
        cause: error,
      });
    }
    if (response.status === 404) {
      await response.body?.cancel();
      return undefined;
    }
    if (!response.ok) {
      const body = (await response.text()).slice(0, 300);
      throw new Error(`Cannot ${action} from Zipkin: ${url} answered ${response.status} ${body}`);
    }
    return await response.json() as T;
  }
}
