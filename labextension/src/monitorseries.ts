/**
 * The Monitor panel's data: the aggregate monitor API's answer and its plotly traces
 * (no JupyterLab import, so the unit tests run in Node).
 */
export interface IAggregate {
  owner: string | null;
  since: number;
  until: number;
  bucket_s: number;
  times: number[];
  by_backend: Record<string, Record<string, number>>;
  by_owner: Record<string, Record<string, number>>;
  series: {
    finished: Record<string, number[]>;
    failed: Record<string, number[]>;
    submitted: Record<string, number[]>;
    queue_depth: Record<string, number[]>;
  };
}

/** The windows offered: hours shown, in 120 buckets each. */
export const WINDOWS = [1, 6, 24];
export const REFRESH_MS = 5000;
export const QUEUED = ['pending', 'ready', 'submitted'];

/** Plotly traces, one per key of ``series`` (values scaled by ``scale``): bars of the
 * counts per bucket, or a step line of a level (queue depth). */
export function traces(times: number[], series: Record<string, number[]>, scale = 1, bars = true): unknown[] {
  const x = times.map(t => new Date(t * 1000));
  return Object.keys(series)
    .sort()
    .map(name => ({
      type: bars ? 'bar' : 'scatter',
      name,
      x,
      y: series[name].map(v => v * scale),
      ...(bars ? {} : { mode: 'lines', line: { shape: 'hv' } })
    }));
}

export function total(counts: Record<string, Record<string, number>>, states: string[]): number {
  let n = 0;
  for (const byState of Object.values(counts)) {
    for (const s of states) {
      n += byState[s] || 0;
    }
  }
  return n;
}
