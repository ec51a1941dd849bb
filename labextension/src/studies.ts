/**
 * HPO trials and active-learning iterations from job results (pure; the same
 * rules as the notebook widgets of `idds_jupyter.kernel.widgets`):
 * a trial is a job result `{"objective"|"value"|"loss": x, "params": {...}}`
 * (or a bare number); an active-learning iteration is a loop iteration work
 * `loop[i].work` whose results hold `{"metric": x}`.
 */
import type { IMonitorWork } from './model';

export interface IJobResult {
  idx: number;
  job_id?: number;
  status: string;
  result?: unknown;
  error?: string | null;
  attempt?: number;
}

export interface ITrial {
  /** 0-based trial number (order of work, then job idx) */
  n: number;
  work: string;
  idx: number;
  jobId: number | null;
  objective: number;
  params: Record<string, unknown>;
}

export type Direction = 'minimize' | 'maximize';

const OBJECTIVE_KEYS = ['objective', 'value', 'loss'];

function isNum(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

/** The objective and parameters of one result, or null when it holds none. */
export function trialOf(result: unknown): { objective: number; params: Record<string, unknown> } | null {
  if (isNum(result)) {
    return { objective: result, params: {} };
  }
  if (result && typeof result === 'object' && !Array.isArray(result)) {
    const r = result as Record<string, unknown>;
    for (const k of OBJECTIVE_KEYS) {
      if (isNum(r[k])) {
        const p = r.params;
        return {
          objective: r[k] as number,
          params: p && typeof p === 'object' && !Array.isArray(p) ? { ...(p as object) } : {}
        };
      }
    }
  }
  return null;
}

/** Trials of works' results, in the order given (works in run order, jobs by idx). */
export function trialsOf(byWork: Array<[string, IJobResult[]]>): ITrial[] {
  const out: ITrial[] = [];
  for (const [work, results] of byWork) {
    for (const r of results) {
      const t = trialOf(r.result);
      if (t) {
        out.push({ n: out.length, work, idx: r.idx, jobId: r.job_id ?? null, ...t });
      }
    }
  }
  return out;
}

/** A page of `GET /monitor/{id}/trials`: rows of `columns`, parameters in the order of `params`. */
export interface ITrialsPage {
  workflow_id: number;
  name: string;
  status: string;
  columns: string[];
  params: string[];
  trials: unknown[][];
  cursor: string;
  more: boolean;
}

/** One ended job of a trials page. */
export interface ITrialRow {
  work: string;
  idx: number;
  trial: number | null;
  segment: string | null;
  status: string;
  value: number | null;
  params: Record<string, unknown>;
  job_id: number;
  finished_at: number;
}

/** The rows of a trials page as objects. */
export function trialRows(page: ITrialsPage): ITrialRow[] {
  const at = new Map(page.columns.map((c, i) => [c, i]));
  const col = (row: unknown[], name: string): unknown => row[at.get(name) ?? -1];
  return page.trials.map(row => {
    const values = (col(row, 'params') as unknown[]) || [];
    const params: Record<string, unknown> = {};
    page.params.forEach((k, i) => {
      if (i < values.length && values[i] !== null && values[i] !== undefined) {
        params[k] = values[i];
      }
    });
    const value = col(row, 'value');
    return {
      work: String(col(row, 'work')),
      idx: Number(col(row, 'idx')),
      trial: (col(row, 'trial') as number | null) ?? null,
      segment: (col(row, 'segment') as string | null) ?? null,
      status: String(col(row, 'status')),
      value: isNum(value) ? value : null,
      params,
      job_id: Number(col(row, 'job_id')),
      finished_at: Number(col(row, 'finished_at'))
    };
  });
}

/**
 * Trials from the latest row of each job: those with a value, by trial number (then
 * segment), rows of other runs' works by job id; `n` is the position.
 */
export function trialsOfRows(rows: Iterable<ITrialRow>): ITrial[] {
  const ended = Array.from(rows).filter(r => r.value !== null);
  ended.sort((a, b) => {
    const an = a.trial === null ? 1 : 0;
    const bn = b.trial === null ? 1 : 0;
    return (
      an - bn ||
      (a.trial ?? 0) - (b.trial ?? 0) ||
      (a.segment ?? '').localeCompare(b.segment ?? '') ||
      a.job_id - b.job_id
    );
  });
  return ended.map((r, n) => ({
    n,
    work: r.work,
    idx: r.idx,
    jobId: r.job_id,
    objective: r.value as number,
    params: r.params
  }));
}

/** Running best: `out[i]` is the best of `values[0..i]`. */
export function bestSoFar(values: number[], direction: Direction = 'minimize'): number[] {
  const out: number[] = new Array(values.length);
  let best = NaN;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isNaN(best) || (direction === 'minimize' ? v < best : v > best)) {
      best = v;
    }
    out[i] = best;
  }
  return out;
}

/**
 * Indices of the trials to draw: all of them up to `max`, else one in every
 * `ceil(n / max)` and every trial that set a new best (`best` from `bestSoFar`), and the
 * last; `max = 0`: only the new bests and the last (the steps of the best-so-far line).
 */
export function plotIndices(values: number[], best: number[], max: number): number[] {
  const n = values.length;
  if (max > 0 && n <= max) {
    return values.map((_v, i) => i);
  }
  const stride = max > 0 ? Math.ceil(n / max) : Infinity;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    if (i % stride === 0 || i === n - 1 || values[i] === best[i]) {
      out.push(i);
    }
  }
  return out;
}

/** The `k` best trials (by direction), in trial order. */
export function bestTrials(trials: ITrial[], direction: Direction, k: number): ITrial[] {
  const sign = direction === 'minimize' ? 1 : -1;
  return [...trials]
    .sort((a, b) => sign * (a.objective - b.objective))
    .slice(0, k)
    .sort((a, b) => a.n - b.n);
}

/** Index of the best trial (-1 if none). */
export function bestIndex(values: number[], direction: Direction = 'minimize'): number {
  let bi = -1;
  for (let i = 0; i < values.length; i++) {
    if (bi < 0 || (direction === 'minimize' ? values[i] < values[bi] : values[i] > values[bi])) {
      bi = i;
    }
  }
  return bi;
}

export interface IDimension {
  label: string;
  values: number[];
  /** categorical parameters: tick values and their texts */
  tickvals?: number[];
  ticktext?: string[];
}

/**
 * Parallel-coordinates dimensions: one per parameter (numbers as they are,
 * strings and booleans as categories), then the objective.
 */
export function parcoordsDimensions(trials: ITrial[]): IDimension[] {
  const keys: string[] = [];
  const seen = new Set<string>();
  for (const t of trials) {
    for (const k of Object.keys(t.params)) {
      if (!seen.has(k)) {
        seen.add(k);
        keys.push(k);
      }
    }
  }
  keys.sort();
  const dims: IDimension[] = [];
  for (const k of keys) {
    const vals = trials.map(t => t.params[k]);
    if (vals.every(v => v === undefined || isNum(v))) {
      dims.push({ label: k, values: vals.map(v => (isNum(v) ? v : NaN)) });
    } else if (vals.every(v => v === undefined || typeof v === 'string' || typeof v === 'boolean' || isNum(v))) {
      const cats = Array.from(new Set(vals.filter(v => v !== undefined).map(v => String(v)))).sort();
      const at = new Map(cats.map((c, i) => [c, i]));
      dims.push({
        label: k,
        values: vals.map(v => (v === undefined ? NaN : at.get(String(v))!)),
        tickvals: cats.map((_c, i) => i),
        ticktext: cats
      });
    }
  }
  dims.push({ label: 'objective', values: trials.map(t => t.objective) });
  return dims;
}

/** Viridis at ten stops, dark (low) to bright (high). */
export const VIRIDIS = [
  '#440154',
  '#482878',
  '#3e4989',
  '#31688e',
  '#26828e',
  '#1f9e89',
  '#35b779',
  '#6ece58',
  '#b5de2b',
  '#fde725'
];

export interface IParallel {
  /** plotly traces: one SVG line trace per colour band (lines split by null), then the colour bar */
  data: Array<Record<string, unknown>>;
  /** plotly layout: the axes (shapes), their labels, ranges and categories (annotations) */
  layout: Record<string, unknown>;
  /** lines drawn: one per trial */
  lines: number;
}

function short(v: number): string {
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(3)));
}

/**
 * Parallel coordinates drawn as SVG lines (plotly `scatter`), not plotly's WebGL
 * `parcoords`: without a GPU a browser runs WebGL in software, where each draw of
 * `parcoords` costs about a second whatever its lines, and a live view redraws.
 *
 * Each dimension is scaled to [0, 1] on its own vertical axis (categories evenly
 * spaced); a trial is one line, missing values break it. Lines are coloured by the
 * last dimension (the objective) in ten bands of its range, best band drawn last.
 */
export function parallelCoordinates(dims: IDimension[], direction: Direction = 'minimize'): IParallel {
  const n = dims.length ? dims[0].values.length : 0;
  const scaled = dims.map(d => {
    if (d.tickvals) {
      const top = Math.max(1, d.tickvals.length - 1);
      return { lo: 0, hi: top, y: d.values.map(v => (Number.isFinite(v) ? v / top : null)) };
    }
    const finite = d.values.filter(v => Number.isFinite(v));
    const lo = finite.length ? Math.min(...finite) : 0;
    const hi = finite.length ? Math.max(...finite) : 1;
    const span = hi - lo;
    return { lo, hi, y: d.values.map(v => (Number.isFinite(v) ? (span > 0 ? (v - lo) / span : 0.5) : null)) };
  });
  const color = dims.length ? scaled[scaled.length - 1] : { lo: 0, hi: 1, y: [] as Array<number | null> };
  const bands: Array<{ x: Array<number | null>; y: Array<number | null> }> = VIRIDIS.map(() => ({ x: [], y: [] }));
  for (let j = 0; j < n; j++) {
    const c = color.y[j];
    const band = bands[c === null ? 0 : Math.min(VIRIDIS.length - 1, Math.floor(c * VIRIDIS.length))];
    for (let i = 0; i < dims.length; i++) {
      band.x.push(i);
      band.y.push(scaled[i].y[j]);
    }
    band.x.push(null);
    band.y.push(null);
  }
  const colors = direction === 'maximize' ? [...VIRIDIS].reverse() : VIRIDIS;
  // the best band last, on top: the lowest objective when minimizing, the highest otherwise
  const order = VIRIDIS.map((_c, k) => k);
  if (direction === 'minimize') {
    order.reverse();
  }
  const data: Array<Record<string, unknown>> = order
    .filter(k => bands[k].x.length)
    .map(k => ({
      type: 'scatter',
      mode: 'lines',
      x: bands[k].x,
      y: bands[k].y,
      line: { color: colors[k], width: 1 },
      opacity: 0.75,
      hoverinfo: 'skip',
      showlegend: false
    }));
  if (dims.length) {
    data.push({
      type: 'scatter',
      mode: 'markers',
      x: [null],
      y: [null],
      hoverinfo: 'skip',
      showlegend: false,
      marker: {
        color: [color.lo, color.hi],
        cmin: color.lo,
        cmax: color.hi,
        colorscale: colors.map((c, k) => [k / (colors.length - 1), c]),
        showscale: true,
        colorbar: { thickness: 12, title: { text: dims[dims.length - 1].label } }
      }
    });
  }
  const axis = { color: '#888', width: 1 };
  const shapes = dims.map((_d, i) => ({ type: 'line', x0: i, x1: i, y0: 0, y1: 1, line: axis, layer: 'below' }));
  const annotations: Array<Record<string, unknown>> = [];
  dims.forEach((d, i) => {
    const marks = d.tickvals
      ? d.tickvals.map((t, k) => ({ y: t / scaled[i].hi, text: d.ticktext?.[k] ?? String(t) }))
      : scaled[i].hi > scaled[i].lo
        ? [
            { y: 0, text: short(scaled[i].lo) },
            { y: 1, text: short(scaled[i].hi) }
          ]
        : [{ y: 0.5, text: short(scaled[i].lo) }]; // one value: drawn mid-axis
    for (const m of marks) {
      annotations.push({
        x: i,
        y: m.y,
        text: m.text,
        showarrow: false,
        xanchor: 'right',
        xshift: -3,
        font: { size: 10 }
      });
    }
  });
  const layout = {
    xaxis: {
      tickvals: dims.map((_d, i) => i),
      ticktext: dims.map(d => d.label),
      range: [-0.5, Math.max(0, dims.length - 1) + 0.2],
      showgrid: false,
      zeroline: false,
      side: 'top',
      fixedrange: true
    },
    yaxis: { visible: false, range: [-0.06, 1.06], fixedrange: true },
    shapes,
    annotations,
    hovermode: false
  };
  return { data, layout, lines: n };
}

// ---------------------------------------------------------------- active learning

export interface IIteration {
  iteration: number;
  works: string[];
  status: string;
  /** metric of the iteration (the best over its jobs, by direction; null until a job reports it) */
  metric: number | null;
  /** every job's metric */
  metrics: number[];
  /** proposals evaluated in the iteration: its job count */
  proposals: number;
  /** the proposals' parameters when the results carry them (`params`, `proposal`, `x`) */
  points: unknown[];
}

/** Works that are loop iterations (`loop[i].work`), or else every work with results, in order. */
export function iterationWorks(
  works: IMonitorWork[]
): Array<{ name: string; iteration: number; status: string; jobs: number }> {
  const loops = works.filter(w => w.iteration !== null && w.iteration !== undefined && w.kind !== 'workflow');
  const jobsOf = (w: IMonitorWork): number => {
    let n = 0;
    for (const k in w.jobs || {}) {
      n += w.jobs[k];
    }
    return Math.max(n, w.n_jobs || 0);
  };
  if (loops.length) {
    return loops.map(w => ({ name: w.name, iteration: w.iteration as number, status: w.status, jobs: jobsOf(w) }));
  }
  // FaaT: each round of a body is its own work, in creation order
  return works
    .filter(w => w.kind !== 'workflow' && w.status !== 'skipped')
    .map((w, i) => ({ name: w.name, iteration: i, status: w.status, jobs: jobsOf(w) }));
}

/** Metric per iteration from the results of iteration works. */
export function iterationsOf(
  works: Array<{ name: string; iteration: number; status: string; jobs: number }>,
  results: Map<string, IJobResult[]>,
  metric = 'metric',
  direction: Direction = 'maximize'
): IIteration[] {
  const by = new Map<number, IIteration>();
  for (const w of works) {
    let it = by.get(w.iteration);
    if (!it) {
      it = { iteration: w.iteration, works: [], status: w.status, metric: null, metrics: [], proposals: 0, points: [] };
      by.set(w.iteration, it);
    }
    it.works.push(w.name);
    it.proposals += w.jobs;
    if (w.status !== 'finished') {
      it.status = w.status;
    }
    for (const r of results.get(w.name) || []) {
      const res = r.result;
      if (res && typeof res === 'object' && !Array.isArray(res)) {
        const o = res as Record<string, unknown>;
        if (isNum(o[metric])) {
          it.metrics.push(o[metric] as number);
        }
        for (const k of ['proposals', 'params', 'proposal', 'x']) {
          if (o[k] !== undefined) {
            if (k === 'proposals' && Array.isArray(o[k])) {
              it.points.push(...(o[k] as unknown[]));
            } else {
              it.points.push(o[k]);
            }
            break;
          }
        }
      } else if (isNum(res) && metric === 'metric') {
        it.metrics.push(res);
      }
    }
  }
  const out = Array.from(by.values()).sort((a, b) => a.iteration - b.iteration);
  for (const it of out) {
    if (it.metrics.length) {
      const bi = bestIndex(it.metrics, direction);
      it.metric = it.metrics[bi];
    }
  }
  return out.filter(it => it.metrics.length || it.proposals || it.status !== 'skipped');
}
