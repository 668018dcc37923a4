/**
 * A small Prometheus registry: counters, gauges and histograms with labels,
 * rendered in the text exposition format (version 0.0.4).
 */

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

interface Metric {
  readonly name: string;
  render(): Promise<string[]>;
}

function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');
}

function labelKey(labels: Labels): string {
  return Object.keys(labels).sort().map((key) => `${key}="${escapeLabel(labels[key]!)}"`)
    .join(",");
}

function series(name: string, key: string, value: number): string {
  const rendered = Number.isFinite(value) ? String(value) : value > 0 ? "+Inf" : "-Inf";
  return key === "" ? `${name} ${rendered}` : `${name}{${key}} ${rendered}`;
}

function header(name: string, help: string, type: string): string[] {
  return [`# HELP ${name} ${help.replaceAll("\n", " ")}`, `# TYPE ${name} ${type}`];
}

export class Counter implements Metric {
  readonly #values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string) {}

  inc(labels: Labels = {}, amount = 1): void {
    const key = labelKey(labels);
    this.#values.set(key, (this.#values.get(key) ?? 0) + amount);
  }

  get(labels: Labels = {}): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }

  render(): Promise<string[]> {
    return Promise.resolve([
      ...header(this.name, this.help, "counter"),
      ...[...this.#values].map(([key, value]) => series(this.name, key, value)),
    ]);
  }
}

/** A sample of a gauge computed at scrape time. */
export interface GaugeSample {
  readonly labels: Labels;
  readonly value: number;
}

export class Gauge implements Metric {
  readonly #values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
    /** Computes samples at scrape time (for values owned elsewhere, like lag). */
    readonly collect?: () => Promise<GaugeSample[]> | GaugeSample[],
  ) {}

  set(labels: Labels, value: number): void {
    this.#values.set(labelKey(labels), value);
  }

  async render(): Promise<string[]> {
    const collected = this.collect ? await this.collect() : [];
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
  ) {}

  observe(labels: Labels, value: number): void {
    const key = labelKey(labels);
    let entry = this.#series.get(key);
    if (entry === undefined) {
      entry = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.#series.set(key, entry);
    }
    const index = this.buckets.findIndex((bound) => value <= bound);
    if (index >= 0) entry.counts[index]! += 1;
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

  counter(name: string, help: string): Counter {
    return this.#add(new Counter(name, help));
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
