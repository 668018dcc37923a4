import { MemorySpanStore } from "./memory_span_store.ts";
import { MemoryTraceReader } from "./memory_trace_reader.ts";
import { runTraceReaderContract } from "./trace_reader_contract.ts";

runTraceReaderContract("MemoryTraceReader", () => {
  const store = new MemorySpanStore();
  return Promise.resolve({
    exporter: store,
    reader: new MemoryTraceReader(store),
    close: () => Promise.resolve(),
  });
});
