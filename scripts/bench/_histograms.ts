/**
 * Histograms read back from a service's `/metrics` (Prometheus text format),
 * for the benchmarks' stage breakdowns: series merged over runs, and their
 * percentiles interpolated within buckets as Prometheus's
 * `histogram_quantile` does.
 */

/** One histogram series: cumulative counts per upper bound, ascending, `+Inf` last. */
export interface HistogramSeries {
  readonly bounds: readonly number[];
  readonly cumulative: readonly number[];
}

/** Series by `<name>{<labels>}` as rendered (labels sorted, without `le`). */
export type Histograms = Map<string, HistogramSeries>;

const BUCKET = /^([a-zA-Z_:][a-zA-Z0-9_:]*)_bucket\{(.*)\} (\S+)$/;
const LE = /(?:^|,)le="([^"]*)"/;

/** The histogram series of a `/metrics` text. */
export function parseHistograms(text: string): Histograms {
  const buckets = new Map<string, [number, number][]>();
  for (const line of text.split("\n")) {
    const match = BUCKET.exec(line);
    if (match === null) continue;
    const [, name, labels, value] = match;
    const le = LE.exec(labels!);
    if (le === null) continue;
    const rest = labels!.replace(LE, "").replace(/^,/, "");
    const key = rest === "" ? name! : `${name}{${rest}}`;
    const bound = le[1] === "+Inf" ? Infinity : Number(le[1]);
    buckets.set(key, [...buckets.get(key) ?? [], [bound, Number(value)]]);
  }
  const result: Histograms = new Map();
  for (const [key, entries] of buckets) {
    entries.sort((a, b) => a[0] - b[0]);
    result.set(key, {
      bounds: entries.map(([bound]) => bound),
      cumulative: entries.map(([, count]) => count),
    });
  }
  return result;
}

/** The sum of histograms of equal buckets (runs of one kind, over rounds). */
export function mergeHistograms(all: readonly Histograms[]): Histograms {
  const result: Histograms = new Map();
  for (const histograms of all) {
    for (const [key, series] of histograms) {
      const sum = result.get(key);
      if (sum !== undefined && sum.bounds.join() !== series.bounds.join()) {
        throw new Error(`Cannot merge histogram ${key}: its buckets differ between runs`);
      }
      result.set(key, {
        bounds: series.bounds,
        cumulative: series.cumulative.map((count, i) => count + (sum?.cumulative[i] ?? 0)),
      });
    }
  }
  return result;
}

/** Observations in the series. */
export function countOf(series: HistogramSeries): number {
  return series.cumulative.at(-1) ?? 0;
}

/**
 * The `p` quantile (0 to 1) of the series, linearly interpolated within its
 * bucket (the first bucket from 0); NaN without observations, the highest
 * finite bound when it falls in `+Inf`.
 */
export function quantile(series: HistogramSeries, p: number): number {
  const total = countOf(series);
  if (total === 0) return NaN;
  const rank = p * total;
  const index = series.cumulative.findIndex((count) => count >= rank);
  const upper = series.bounds[index]!;
  const lower = index === 0 ? 0 : series.bounds[index - 1]!;
  if (upper === Infinity) return lower;
  const below = index === 0 ? 0 : series.cumulative[index - 1]!;
  const inBucket = series.cumulative[index]! - below;
  return inBucket === 0 ? upper : lower + (upper - lower) * (rank - below) / inBucket;
}
