/**
 * ZipkinTraceReader against the real Zipkin (`deno task engines up zipkin`,
 * or ZIPKIN_URL), written to by the real `@opentelemetry/exporter-zipkin`.
 * These tests fail, never skip, when Zipkin is not reachable.
 */
import { ZipkinExporter } from "@opentelemetry/exporter-zipkin";
import { runTraceReaderContract } from "./trace_reader_contract.ts";
import { ZipkinTraceReader } from "./zipkin_trace_reader.ts";

const ZIPKIN_URL = Deno.env.get("ZIPKIN_URL") || "http://127.0.0.1:9411";

async function assertZipkinUp(): Promise<void> {
  try {
    const response = await fetch(`${ZIPKIN_URL}/health`, { signal: AbortSignal.timeout(2000) });
    await response.body?.cancel();
    if (!response.ok) throw new Error(`/health answered ${response.status}`);
  } catch (error) {
    throw new Error(
      `Zipkin is not reachable at ${ZIPKIN_URL} (${
        String(error)
      }): run \`deno task engines up zipkin\``,
    );
  }
}

runTraceReaderContract("ZipkinTraceReader", async () => {
  await assertZipkinUp();
  const exporter = new ZipkinExporter({ url: `${ZIPKIN_URL}/api/v2/spans` });
  return {
    exporter,
    reader: new ZipkinTraceReader({ url: ZIPKIN_URL }),
    close: () => exporter.shutdown(),
  };
});
