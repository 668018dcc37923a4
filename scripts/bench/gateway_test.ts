import assert from "node:assert/strict";
import { parseWrk } from "./gateway.ts";

Deno.test("parseWrk() reads throughput, percentiles in every unit, and failures", () => {
  const failing = `Running 1s test @ http://127.0.0.1:9200/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.77ms   17.18ms 113.50ms   93.99%
    Req/Sec     2.48k     1.58k    6.24k    90.00%
  Latency Distribution
     50%  341.00us
     75%    2.75ms
     90%    9.03ms
     99%    1.02s
  2519 requests in 1.04s, 565.79KB read
  Socket errors: connect 0, read 3, write 0, timeout 12
  Non-2xx or 3xx responses: 2519
Requests/sec:   2423.89
Transfer/sec:    544.43KB
`;
  assert.deepEqual(parseWrk(failing), {
    requestsPerSecond: 2423.89,
    p50Ms: 0.341,
    p99Ms: 1020,
    requests: 2519,
    non2xx: 2519,
    socketErrors: 15,
  });
  const clean = failing.replace(/ {2}Socket errors.*\n {2}Non-2xx.*\n/, "")
    .replace("50%  341.00us", "50%    4.20ms");
  assert.deepEqual(parseWrk(clean), {
    requestsPerSecond: 2423.89,
    p50Ms: 4.2,
    p99Ms: 1020,
    requests: 2519,
    non2xx: 0,
    socketErrors: 0,
  });
  assert.throws(() => parseWrk("unable to connect to 127.0.0.1:1 Connection refused"), /wrk/);
});
