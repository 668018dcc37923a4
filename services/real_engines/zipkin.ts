/** Traces in Zipkin (ZIPKIN_URL set): exported there, and read back. */
import { ZipkinExporter } from "@opentelemetry/exporter-zipkin";
import type { SpanExporter } from "@opentelemetry/sdk-trace";
import type { TraceReader } from "../../shared/trace/trace_reader.ts";
import { ZipkinTraceReader } from "../../shared/trace/zipkin_trace_reader.ts";

/** Exports spans to Zipkin's v2 span intake at `spansUrl`. */
export function zipkinExporter(spansUrl: string): SpanExporter {
  return new ZipkinExporter({ url: spansUrl });
}

/** Reads recorded traces back from Zipkin. */
export function zipkinTraceReader(zipkinUrl: string): TraceReader {
  return new ZipkinTraceReader({ url: zipkinUrl });
}
