/**
 * A small Prometheus registry: counters, gauges and histograms with labels,
 * rendered in the text exposition format (version 0.0.4).
 */

import process from "node:process";

export type Labels = Readonly<Record<string, string>>;

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Latency buckets in seconds, from 0.5 ms to 10 s. */
export const LATENCY_BUCKETS = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
] as const;

/**
 * Buckets for a pipeline's stage times, where a percentile must be read
 * closely (a freshness p99 against 1.5 s): 0.5 ms to about 21 s, each bound
 * 2^(1/3) times the previous, so an interpolated percentile is within a
 * quarter of its bucket.
 */
export const STAGE_BUCKETS: readonly number[] = Array.from(
  { length: 47 },
  (_, i) => Number((0.0005 * 2 ** (i / 3)).toPrecision(3)),
);

interface Metric {
  readonly name: string;
  render(): Promise<string[]>;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
/**
 * Labels Prometheus sets on every series of a target: a metric's own label of
 * the same name would be renamed `exported_<name>` at scrape time. Name
 * what a metric is about otherwise (`upstream`, `registered_service`).
 */
export const TARGET_LABELS: ReadonlySet<string> = new Set(["job", "instance", "service"]);

/** Refuses names Prometheus would reject or that break its naming conventions. */
function checkName(name: string, type: "counter" | "gauge" | "histogram"): void {
  const problem = !METRIC_NAME.test(name)
    ? "must match [a-zA-Z_:][a-zA-Z0-9_:]*"
    : type === "counter" && !name.endsWith("_total")
    ? "a counter's name must end in _total"
    : type !== "counter" && name.endsWith("_total")
    ? "only a counter's name ends in _total"
    : /_(ms|milliseconds|millis|micros|microseconds)$/.test(name)
    ? "durations are in seconds (_seconds)"
    : undefined;
  if (problem !== undefined) {
    throw new TypeError(`Cannot register metric '${name}': ${problem}`);
  }
}

/** Checks the labels of a metric's new series (once per series, not per update). */
function checkLabels(metric: string, labels: Labels, reserved: readonly string[] = []): void {
  for (const label of Object.keys(labels)) {
    const problem = !LABEL_NAME.test(label) || label.startsWith("__")
      ? "must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __"
      : TARGET_LABELS.has(label)
      ? "is a target label Prometheus sets itself"
      : reserved.includes(label)
      ? "is reserved"
      : undefined;
    if (problem !== undefined) {
      throw new TypeError(`Cannot record metric '${metric}' as label '${label}' ${problem}`);
    }
  }
}

const NEEDS_ESCAPE = /[\\\n"]/;

/** Label values rarely need escaping: the test spares three scans per label on every update. */
function escapeLabel(value: string): string {
  if (!NEEDS_ESCAPE.test(value)) return value;
  return value.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');
}

/**
 * The series key of `labels`, in label-name order. Called on every update:
 * callers mostly write their labels in order already, so the sort is skipped
 * then, and the key is built without intermediate arrays.
 */
function labelKey(labels: Labels): string {
  let names = Object.keys(labels);
  for (let index = 1; index < names.length; index++) {
    if (names[index - 1]! > names[index]!) {
      names = names.sort();
      break;
    }
  }
  let key = "";
  for (const name of names) {
    key += `${key === "" ? "" : ","}${name}="${escapeLabel(labels[name]!)}"`;
  }
  return key;
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  return Number.isFinite(value) ? String(value) : value > 0 ? "+Inf" : "-Inf";
}

function series(name: string, key: string, value: number): string {
  const rendered = formatValue(value);
  return key === "" ? `${name} ${rendered}` : `${name}{${key}} ${rendered}`;
}

function header(name: string, help: string, type: string): string[] {
  // HELP text escapes only backslash and line feed.
  const escaped = help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
  return [`# HELP ${name} ${escaped}`, `# TYPE ${name} ${type}`];
}

/** A sample computed at scrape time. */
export interface GaugeSample {
  readonly labels: Labels;
  readonly value: number;
}

export class Counter implements Metric {
  readonly #values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
    /** Reads totals kept elsewhere at scrape time (the process's CPU time). */
    readonly collect?: () => Promise<GaugeSample[]> | GaugeSample[],
  ) {
    checkName(name, "counter");
  }

  inc(labels: Labels = {}, amount = 1): void {
    if (!(amount >= 0)) {
      throw new RangeError(
        `Cannot increase counter '${this.name}' as 'amount' must be >= 0: current value is ${amount}`,
      );
    }
    const key = labelKey(labels);
    const value = this.#values.get(key);
    if (value === undefined) checkLabels(this.name, labels);
    this.#values.set(key, (value ?? 0) + amount);
  }

  get(labels: Labels = {}): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }

  async render(): Promise<string[]> {
    const collected = this.collect ? await this.collect() : [];
    for (const sample of collected) checkLabels(this.name, sample.labels);
    return [
      ...header(this.name, this.help, "counter"),
      ...[...this.#values].map(([key, value]) => series(this.name, key, value)),
      ...collected.map((sample) => series(this.name, labelKey(sample.labels), sample.value)),
    ];
  }
}

export class Gauge implements Metric {
  readonly #values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
    /** Computes samples at scrape time (for values owned elsewhere, like lag). */
    readonly collect?: () => Promise<GaugeSample[]> | GaugeSample[],
  ) {
    checkName(name, "gauge");
  }

  set(labels: Labels, value: number): void {
    const key = labelKey(labels);
    if (!this.#values.has(key)) checkLabels(this.name, labels);
    this.#values.set(key, value);
  }

  async render(): Promise<string[]> {
    const collected = this.collect ? await this.collect() : [];
    for (const sample of collected) checkLabels(this.name, sample.labels);
    return [
      ...header(this.name, this.help, "gauge"),
      ...[...this.#values].map(([key, value]) => series(this.name, key, value)),
      ...collected.map((sample) => series(this.name, labelKey(sample.labels), sample.value)),
    ];
  }
}

interface HistogramSeries {
  readonly labels: Labels;
  readonly counts: number[];
  sum: number;
  count: number;
}

export class Histogram implements Metric {
  readonly #series = new Map<string, HistogramSeries>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[] = LATENCY_BUCKETS,
  ) {
    checkName(name, "histogram");
    if (buckets.some((bound, index) => index > 0 && bound <= buckets[index - 1]!)) {
      throw new TypeError(`Cannot register histogram '${name}': buckets must increase`);
    }
  }

  observe(labels: Labels, value: number): void {
    this.#observeIn(this.#entry(labels), value);
  }

  /**
   * The series of `labels`, to observe many values into without looking it
   * up each time (per record of a batch).
   */
  labelled(labels: Labels): { observe(value: number): void } {
    const entry = this.#entry(labels);
    return { observe: (value) => this.#observeIn(entry, value) };
  }

  #entry(labels: Labels): HistogramSeries {
    const key = labelKey(labels);
    let entry = this.#series.get(key);
    if (entry === undefined) {
      checkLabels(this.name, labels, ["le"]);
      entry = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.#series.set(key, entry);
    }
    return entry;
  }

  #observeIn(entry: HistogramSeries, value: number): void {
    // The first bound >= value, by bisection: stage histograms have dozens of buckets.
    let low = 0;
    let high = this.buckets.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (value <= this.buckets[middle]!) high = middle;
      else low = middle + 1;
    }
    if (low < this.buckets.length) entry.counts[low]! += 1;
    entry.sum += value;
    entry.count += 1;
  }

  render(): Promise<string[]> {
    const lines = header(this.name, this.help, "histogram");
    for (const entry of this.#series.values()) {
      let cumulative = 0;
      this.buckets.forEach((bound, index) => {
        cumulative += entry.counts[index]!;
        lines.push(
          series(
            `${this.name}_bucket`,
            labelKey({ ...entry.labels, le: String(bound) }),
            cumulative,
          ),
        );
      });
      lines.push(
        series(`${this.name}_bucket`, labelKey({ ...entry.labels, le: "+Inf" }), entry.count),
        series(`${this.name}_sum`, labelKey(entry.labels), entry.sum),
        series(`${this.name}_count`, labelKey(entry.labels), entry.count),
      );
    }
    return Promise.resolve(lines);
  }
}

/**
 * The process metrics Prometheus's client libraries export under these names
 * (start time, CPU, resident memory), and the Deno heap.
 */
export function registerProcessMetrics(metrics: MetricsRegistry): void {
  metrics.gauge("process_start_time_seconds", "Start time of the process since the epoch.")
    .set({}, Math.round(performance.timeOrigin) / 1000);
  metrics.counter("process_cpu_seconds_total", "User and system CPU time spent.", () => {
    const { user, system } = process.cpuUsage();
    return [{ labels: {}, value: (user + system) / 1e6 }];
  });
  metrics.gauge("process_resident_memory_bytes", "Resident memory of the process.", () => [
    { labels: {}, value: Deno.memoryUsage().rss },
  ]);
  metrics.gauge("deno_heap_used_bytes", "JavaScript heap in use.", () => [
    { labels: {}, value: Deno.memoryUsage().heapUsed },
  ]);
  metrics.gauge("deno_heap_total_bytes", "JavaScript heap allocated.", () => [
    { labels: {}, value: Deno.memoryUsage().heapTotal },
  ]);
}

/** The metrics of one service, rendered by its `/metrics` endpoint. */
export class MetricsRegistry {
  readonly #metrics = new Map<string, Metric>();

  #add<M extends Metric>(metric: M): M {
    if (this.#metrics.has(metric.name)) {
      throw new TypeError(`Cannot register metric '${metric.name}': the name is taken`);
    }
    this.#metrics.set(metric.name, metric);
    return metric;
  }

  counter(name: string, help: string, collect?: Counter["collect"]): Counter {
    return this.#add(new Counter(name, help, collect));
  }

  gauge(name: string, help: string, collect?: Gauge["collect"]): Gauge {
    return this.#add(new Gauge(name, help, collect));
  }

  histogram(name: string, help: string, buckets?: readonly number[]): Histogram {
    return this.#add(new Histogram(name, help, buckets));
  }

  async render(): Promise<string> {
    const blocks = await Promise.all([...this.#metrics.values()].map((metric) => metric.render()));
    return blocks.flat().join("\n") + "\n";
  }
}
