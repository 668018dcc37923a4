/** The trace reader over the process's `MemorySpanStore`. */
import type { MemorySpanStore } from "./memory_span_store.ts";
import {
  checkTraceId,
  type RecentTracesQuery,
  resolveRecentQuery,
  type TraceReader,
} from "./trace_reader.ts";
import { sortSpans, type TraceSpan } from "./trace_span.ts";

export class MemoryTraceReader implements TraceReader {
  readonly #store: MemorySpanStore;

  constructor(store: MemorySpanStore) {
    this.#store = store;
  }

  // deno-lint-ignore require-await
  async trace(traceId: string): Promise<TraceSpan[] | undefined> {
    checkTraceId(traceId);
    const spans = this.#store.trace(traceId);
    return spans.length === 0 ? undefined : sortSpans(spans);
  }

  // deno-lint-ignore require-await
  async recentTraces(query: RecentTracesQuery): Promise<TraceSpan[][]> {
    const { serviceName, limit, lookbackMs, endTs } = resolveRecentQuery(query);
    const fromUs = (endTs - lookbackMs) * 1000;
    const toUs = endTs * 1000;
    // A trace's time is its latest matching span's start, as Zipkin orders them.
    const latest = new Map<string, number>();
    for (const span of this.#store.newestFirst()) {
      if (span.localEndpoint.serviceName !== serviceName) continue;
      if (span.timestamp < fromUs || span.timestamp > toUs) continue;
      latest.set(span.traceId, Math.max(latest.get(span.traceId) ?? 0, span.timestamp));
    }
    const traceIds = [...latest].sort((a, b) => b[1] - a[1]).slice(0, limit);
    return traceIds.map(([traceId]) => sortSpans(this.#store.trace(traceId)));
  }

  // deno-lint-ignore require-await
  async serviceNames(): Promise<string[]> {
    const names = new Set<string>();
    for (const span of this.#store.newestFirst()) {
      if (span.localEndpoint.serviceName !== undefined) names.add(span.localEndpoint.serviceName);
    }
    return [...names].sort();
  }
}
