/**
 * A log-bucketed latency histogram (1% relative precision) that merges across processes and
 * serialises to a few hundred numbers, so generator workers can ship it over IPC.
 */
const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);

export interface HistogramData {
  /** [bucket, count] pairs for the non-empty buckets. */
  buckets: [number, number][];
  count: number;
  /** Exact extremes and sum, in milliseconds. */
  min: number;
  max: number;
  sum: number;
}

export class Histogram {
  private readonly counts = new Map<number, number>();
  count = 0;
  min = Infinity;
  max = 0;
  sum = 0;

  /** Records one value in milliseconds. */
  record(ms: number): void {
    const micros = Math.max(ms * 1000, 1);
    const bucket = Math.floor(Math.log(micros) / LOG_GROWTH);
    this.counts.set(bucket, (this.counts.get(bucket) ?? 0) + 1);
    this.count += 1;
    this.sum += ms;
    if (ms < this.min) this.min = ms;
    if (ms > this.max) this.max = ms;
  }

  merge(data: HistogramData): void {
    for (const [bucket, count] of data.buckets)
      this.counts.set(bucket, (this.counts.get(bucket) ?? 0) + count);
    this.count += data.count;
    this.sum += data.sum;
    if (data.count > 0) {
      this.min = Math.min(this.min, data.min);
      this.max = Math.max(this.max, data.max);
    }
  }

  /** The value at quantile `q` (0..1), in milliseconds; the upper edge of its bucket, capped by max. */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.count));
    const ordered = [...this.counts.entries()].sort((a, b) => a[0] - b[0]);
    let seen = 0;
    for (const [bucket, count] of ordered) {
      seen += count;
      if (seen >= rank) return Math.min(GROWTH ** (bucket + 1) / 1000, this.max);
    }
    return this.max;
  }

  toJSON(): HistogramData {
    return {
      buckets: [...this.counts.entries()],
      count: this.count,
      min: this.count === 0 ? 0 : this.min,
      max: this.max,
      sum: this.sum,
    };
  }

  static from(data: HistogramData): Histogram {
    const histogram = new Histogram();
    histogram.merge(data);
    return histogram;
  }
}

export interface LatencySummary {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

export function summarize(histogram: Histogram): LatencySummary {
  return {
    count: histogram.count,
    p50: histogram.quantile(0.5),
    p95: histogram.quantile(0.95),
    p99: histogram.quantile(0.99),
    max: histogram.max,
    mean: histogram.count === 0 ? 0 : histogram.sum / histogram.count,
  };
}
