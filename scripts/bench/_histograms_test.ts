import assert from "node:assert/strict";
import { MetricsRegistry } from "../../shared/metrics/metrics.ts";
import { countOf, mergeHistograms, parseHistograms, quantile } from "./_histograms.ts";

async function rendered(values: readonly number[], labels = { stage: "received" }) {
  const metrics = new MetricsRegistry();
  const histogram = metrics.histogram("x_age_seconds", "Ages.", [0.1, 0.2, 0.4]);
  for (const value of values) histogram.observe(labels, value);
  metrics.counter("x_other_total", "Not a histogram.").inc({}, 3);
  return parseHistograms(await metrics.render());
}

Deno.test("parseHistograms reads back what the registry renders, by series without le", async () => {
  const histograms = await rendered([0.05, 0.15, 0.15, 0.3, 7]);
  assert.deepEqual([...histograms.keys()], ['x_age_seconds{stage="received"}']);
  assert.deepEqual(histograms.get('x_age_seconds{stage="received"}'), {
    bounds: [0.1, 0.2, 0.4, Infinity],
    cumulative: [1, 3, 4, 5],
  });
});

Deno.test("quantile interpolates within the bucket, as histogram_quantile does", async () => {
  const series = (await rendered([0.05, 0.15, 0.15, 0.3]))
    .get('x_age_seconds{stage="received"}')!;
  // Rank 2 of 4 is the first of the two in (0.1, 0.2]: halfway through the bucket.
  const close = (actual: number, expected: number) =>
    assert.ok(Math.abs(actual - expected) < 1e-12, `${actual} is not ${expected}`);
  close(quantile(series, 0.5), 0.15);
  close(quantile(series, 1), 0.4);
  close(quantile(series, 0.125), 0.05);
  const beyond = (await rendered([1, 2])).get('x_age_seconds{stage="received"}')!;
  assert.equal(quantile(beyond, 0.5), 0.4, "in +Inf: the highest finite bound");
  assert.ok(Number.isNaN(quantile({ bounds: [1, Infinity], cumulative: [0, 0] }, 0.5)));
});

Deno.test("mergeHistograms adds the counts of the runs, series by series", async () => {
  const merged = mergeHistograms([await rendered([0.05]), await rendered([0.3, 0.3])]);
  const series = merged.get('x_age_seconds{stage="received"}')!;
  assert.equal(countOf(series), 3);
  assert.deepEqual(series.cumulative, [1, 1, 3, 3]);
});
