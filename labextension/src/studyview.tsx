/**
 * HPO view (trials table, objective per trial with best-so-far, parallel
 * coordinates in SVG) and active-learning view (metric per iteration, proposals per
 * iteration), live as trials end. plotly.js is loaded on first use only.
 *
 * Results of works at rest are cached: a refresh re-reads only the works still
 * running (and the run summary), so a long study does not re-download itself.
 */
import { ReactWidget, UseSignal } from '@jupyterlab/apputils';
import { ISignal, Signal } from '@lumino/signaling';
import * as React from 'react';

import { Coalescer } from './coalesce';
import { IddsContext } from './context';
import { IMonitor, isTerminal } from './model';
import type { IStreamEvent } from './stream';
import {
  Direction,
  IIteration,
  IJobResult,
  ITrial,
  ITrialRow,
  bestIndex,
  bestSoFar,
  bestTrials,
  iterationWorks,
  iterationsOf,
  parallelCoordinates,
  parcoordsDimensions,
  plotIndices,
  trialRows,
  trialsOf,
  trialsOfRows
} from './studies';
import { ErrorLine, StatusBadge } from './widgets';

type Plotly = {
  react: (el: HTMLElement, data: unknown[], layout: unknown, config?: unknown) => Promise<unknown>;
  purge: (el: HTMLElement) => void;
  Plots: { resize: (el: HTMLElement) => void };
};

let plotlyPromise: Promise<Plotly> | null = null;
export function loadPlotly(): Promise<Plotly> {
  if (!plotlyPromise) {
    plotlyPromise = import(/* webpackChunkName: "plotly" */ 'plotly.js-dist-min').then(
      (m: { default?: Plotly } & Partial<Plotly>) => (m.default ?? m) as Plotly
    );
  }
  return plotlyPromise;
}

function cssVar(name: string, fallback: string): string {
  const v = getComputedStyle(document.body).getPropertyValue(name).trim();
  return v || fallback;
}

/** Plotly layout colours from the JupyterLab theme. */
function themed(layout: Record<string, unknown>): Record<string, unknown> {
  const fg = cssVar('--jp-ui-font-color1', '#222');
  const grid = cssVar('--jp-border-color2', '#ddd');
  const font = cssVar('--jp-ui-font-family', 'sans-serif');
  const axis = { gridcolor: grid, zerolinecolor: grid, linecolor: grid };
  return {
    paper_bgcolor: 'rgba(0,0,0,0)',
    plot_bgcolor: 'rgba(0,0,0,0)',
    font: { color: fg, family: font, size: 11 },
    margin: { l: 50, r: 20, t: 30, b: 40 },
    ...layout,
    xaxis: { ...axis, ...((layout.xaxis as object) || {}) },
    yaxis: { ...axis, ...((layout.yaxis as object) || {}) }
  };
}

/** Points of a plot's first trace. */
function pointsOf(data: unknown[]): number {
  return ((data[0] || {}) as { y?: unknown[] }).y?.length ?? 0;
}

function Plot(props: {
  data: unknown[];
  layout: Record<string, unknown>;
  className: string;
  /** what data-points says once drawn (default: the first trace's points) */
  points?: number;
}): JSX.Element {
  const ref = React.useRef<HTMLDivElement>(null);
  React.useEffect(() => {
    let live = true;
    void loadPlotly().then(P => {
      const el = ref.current;
      if (live && el) {
        const t0 = performance.now();
        void P.react(el, props.data, themed(props.layout), { displaylogo: false, responsive: true }).then(() => {
          // drawn: for tests and render timings
          el.dataset.plotMs = (performance.now() - t0).toFixed(1);
          el.dataset.points = String(props.points ?? pointsOf(props.data));
        });
      }
    });
    return () => {
      live = false;
    };
  });
  React.useEffect(() => {
    const el = ref.current;
    return () => {
      if (el && plotlyPromise) {
        void plotlyPromise.then(P => P.purge(el));
      }
    };
  }, []);
  return <div ref={ref} className={props.className} />;
}

/** How many trials the table shows before "show more" (the plots show them all). */
export const TABLE_ROWS = 200;
/** Markers of the objective plot and lines of the parallel coordinates drawn at most. */
export const PLOT_POINTS = 1000;
export const PARCOORDS_LINES = 200;

export class StudyModel {
  monitor: IMonitor | null = null;
  results = new Map<string, IJobResult[]>();
  error: string | null = null;
  loaded = false;
  /** HPO: the run's name and status as the last trials page said */
  runName: string | null = null;
  runStatus: string | null = null;
  private atRest = new Set<string>();
  private rows = new Map<string, ITrialRow>();
  private cursor = '';
  /** the whole run was read again once it ended (late commits behind the cursor) */
  private readAtEnd = false;
  private version = 0;
  private cached: { version: number; trials: ITrial[] } | null = null;
  private _changed = new Signal<this, void>(this);
  private coalescer: Coalescer<number>;

  constructor(
    readonly ctx: IddsContext,
    readonly id: number,
    readonly kind: 'hpo' | 'al' = 'al'
  ) {
    this.coalescer = new Coalescer<number>(() => this.fetch(), Math.max(ctx.settings.refreshInterval, 500));
    ctx.stream.event.connect((_s: unknown, e: IStreamEvent) => {
      if (Number(e.workflow_id ?? e.key) === this.id) {
        this.refresh();
      }
    }, this);
    ctx.stream.reconnected.connect(() => this.refresh(), this);
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  refresh(): void {
    this.coalescer.trigger(0);
  }

  private async fetch(): Promise<void> {
    try {
      if (this.kind === 'hpo') {
        await this.fetchTrials();
      } else {
        await this.fetchResults();
      }
      this.error = null;
    } catch (err) {
      this.error = (err as Error).message;
    }
    this.loaded = true;
    this._changed.emit();
  }

  /** HPO: the trials ended since the last cursor, in one request (more only for a page full). */
  private async fetchTrials(): Promise<void> {
    let whole = this.cursor === ''; // this fetch reads the run from its start
    for (;;) {
      const page = await this.ctx.api.trials(this.id, this.cursor);
      for (const r of trialRows(page)) {
        this.rows.set(`${r.work}#${r.idx}`, r);
      }
      if (page.trials.length) {
        this.version++;
      }
      this.cursor = page.cursor;
      this.runName = page.name;
      this.runStatus = page.status;
      if (page.more) {
        continue;
      }
      if (!isTerminal(page.status)) {
        this.readAtEnd = false; // (re)started: read everything again when it ends
        return;
      }
      if (this.readAtEnd || whole) {
        this.readAtEnd = true;
        return;
      }
      // ended: nothing more will change; read the whole run once, so that a result
      // committed later than the cursor's settling time is not missed
      this.readAtEnd = true;
      this.cursor = '';
      whole = true;
    }
  }

  private async fetchResults(): Promise<void> {
    const m = await this.ctx.api.monitor(this.id);
    const todo = m.works.filter(
      w =>
        w.kind !== 'workflow' && w.status !== 'skipped' && !this.atRest.has(w.name) && Object.keys(w.jobs || {}).length
    );
    // a few at a time: a run with many works does not fire all its requests at once
    for (let i = 0; i < todo.length; i += 4) {
      const chunk = todo.slice(i, i + 4);
      const got = await Promise.all(chunk.map(w => this.ctx.api.results(this.id, w.name)));
      chunk.forEach((w, j) => {
        this.results.set(w.name, got[j]);
        if (isTerminal(w.status)) {
          this.atRest.add(w.name);
        }
      });
    }
    // a retried work is no longer at rest
    for (const w of m.works) {
      if (!isTerminal(w.status)) {
        this.atRest.delete(w.name);
      }
    }
    this.monitor = m;
  }

  trials(): ITrial[] {
    if (this.kind === 'hpo') {
      if (!this.cached || this.cached.version !== this.version) {
        this.cached = { version: this.version, trials: trialsOfRows(this.rows.values()) };
      }
      return this.cached.trials;
    }
    if (!this.monitor) {
      return [];
    }
    return trialsOf(
      this.monitor.works.filter(w => this.results.has(w.name)).map(w => [w.name, this.results.get(w.name)!])
    );
  }

  iterations(metric: string, direction: Direction): IIteration[] {
    if (!this.monitor) {
      return [];
    }
    return iterationsOf(iterationWorks(this.monitor.works), this.results, metric, direction);
  }

  dispose(): void {
    this.coalescer.dispose();
    Signal.clearData(this);
  }
}

function fmt(v: unknown): string {
  if (typeof v === 'number') {
    return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(5)));
  }
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function HpoBody(props: { model: StudyModel }): JSX.Element {
  const { model } = props;
  const [direction, setDirection] = React.useState<Direction>(model.ctx.settings.hpoDirection);
  const [sortBy, setSortBy] = React.useState<'n' | 'objective'>('n');
  const [shown, setShown] = React.useState(TABLE_ROWS);
  const trials = model.trials();
  const ys = trials.map(t => t.objective);
  const best = bestSoFar(ys, direction);
  const bi = bestIndex(ys, direction);
  const dims = parcoordsDimensions(trials);
  const keys = dims.slice(0, -1).map(d => d.label);
  const sorted =
    sortBy === 'n'
      ? trials
      : [...trials].sort((a, b) => (direction === 'minimize' ? a.objective - b.objective : b.objective - a.objective));
  // a table of 10,000 rows costs seconds to lay out: the first ones, and more on demand
  const rows = sorted.length > shown ? sorted.slice(0, shown) : sorted;
  const m = { name: model.runName, status: model.runStatus ?? undefined };
  // a large study is drawn decimated: thousands of markers and lines take seconds to draw
  // (the table and the counts hold every trial)
  const drawn = plotIndices(ys, best, PLOT_POINTS);
  const steps = plotIndices(ys, best, 0);
  const top = trials.length > PARCOORDS_LINES ? bestTrials(trials, direction, PARCOORDS_LINES) : trials;
  const par = parallelCoordinates(top === trials ? dims : parcoordsDimensions(top), direction);
  return (
    <div className="idds-study idds-hpo" data-run-id={model.id} data-trials={trials.length}>
      <div className="idds-runview-header">
        <span className="idds-runview-title">HPO: {m.name ?? `run ${model.id}`}</span>
        <span className="idds-run-id">#{model.id}</span>
        <StatusBadge status={m.status} />
        <span className="idds-trial-count">{trials.length} trials</span>
        {bi >= 0 ? (
          <span className="idds-best">
            best {fmt(ys[bi])} (trial {bi})
          </span>
        ) : null}
        <span className="idds-spacer" />
        <select
          className="jp-mod-styled"
          aria-label="Direction"
          value={direction}
          onChange={e => setDirection(e.target.value as Direction)}
        >
          <option value="minimize">minimize</option>
          <option value="maximize">maximize</option>
        </select>
        <button className="jp-mod-styled" onClick={() => model.refresh()}>
          Refresh
        </button>
      </div>
      <ErrorLine error={model.error} />
      {model.loaded && !trials.length ? (
        <div className="idds-empty">
          No trial yet: trials are job results holding an "objective" (or "value", "loss") and "params".
        </div>
      ) : null}
      {trials.length ? (
        <div className="idds-plots">
          <Plot
            className="idds-plot idds-plot-objective"
            data={[
              {
                x: drawn.map(i => trials[i].n),
                y: drawn.map(i => ys[i]),
                mode: 'markers',
                type: 'scatter',
                name: 'trial',
                text: drawn.map(i => `${trials[i].work} #${trials[i].idx}`)
              },
              {
                x: steps.map(i => trials[i].n),
                y: steps.map(i => best[i]),
                mode: 'lines',
                type: 'scatter',
                name: 'best so far',
                line: { shape: 'hv' }
              }
            ]}
            layout={{
              title: {
                text:
                  drawn.length < trials.length
                    ? `objective per trial (${drawn.length} of ${trials.length} drawn, every new best among them)`
                    : 'objective per trial'
              },
              xaxis: { title: { text: 'trial' } },
              yaxis: { title: { text: 'objective' } },
              legend: { orientation: 'h' }
            }}
          />
          <Plot
            className="idds-plot idds-plot-parcoords"
            data={par.data}
            points={par.lines}
            layout={{
              ...par.layout,
              title: {
                text:
                  top.length < trials.length
                    ? `parameters and objective (the best ${top.length} of ${trials.length} trials)`
                    : 'parameters and objective',
                y: 0.98
              },
              margin: { l: 60, r: 20, t: 80, b: 20 }
            }}
          />
        </div>
      ) : null}
      {trials.length ? (
        <div className="idds-table-wrap idds-trials-wrap">
          <table className="idds-table idds-trials">
            <thead>
              <tr>
                <th onClick={() => setSortBy('n')} className="idds-sortable">
                  trial {sortBy === 'n' ? '▾' : ''}
                </th>
                <th>work</th>
                <th>job</th>
                <th onClick={() => setSortBy('objective')} className="idds-sortable">
                  objective {sortBy === 'objective' ? '▾' : ''}
                </th>
                <th>best so far</th>
                {keys.map(k => (
                  <th key={k}>{k}</th>
                ))}
              </tr>
            </thead>
            <tbody>
              {rows.map(t => (
                <tr key={t.n} className={`idds-trial${t.n === bi ? ' idds-best-row' : ''}`}>
                  <td>{t.n}</td>
                  <td title={t.work}>{t.work}</td>
                  <td>{t.idx}</td>
                  <td>{fmt(t.objective)}</td>
                  <td>{fmt(best[t.n])}</td>
                  {keys.map(k => (
                    <td key={k}>{t.params[k] === undefined ? '' : fmt(t.params[k])}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
          {rows.length < sorted.length ? (
            <div className="idds-trials-more">
              showing {rows.length} of {sorted.length} trials{' '}
              <button className="jp-mod-styled" onClick={() => setShown(shown + 10 * TABLE_ROWS)}>
                Show more
              </button>
            </div>
          ) : null}
        </div>
      ) : null}
    </div>
  );
}

function AlBody(props: { model: StudyModel }): JSX.Element {
  const { model } = props;
  const [metric, setMetric] = React.useState('metric');
  const [direction, setDirection] = React.useState<Direction>('maximize');
  const its = model.iterations(metric, direction);
  const scored = its.filter(i => i.metric !== null);
  const m = model.monitor;
  return (
    <div className="idds-study idds-al" data-run-id={model.id} data-iterations={scored.length}>
      <div className="idds-runview-header">
        <span className="idds-runview-title">Active learning: {m ? m.name : `run ${model.id}`}</span>
        <span className="idds-run-id">#{model.id}</span>
        <StatusBadge status={m?.status} />
        <span>{scored.length} iterations</span>
        <span className="idds-spacer" />
        <label>
          metric{' '}
          <input
            className="jp-mod-styled idds-metric-name"
            value={metric}
            size={10}
            onChange={e => setMetric(e.target.value)}
          />
        </label>
        <select
          className="jp-mod-styled"
          aria-label="Direction"
          value={direction}
          onChange={e => setDirection(e.target.value as Direction)}
        >
          <option value="maximize">higher is better</option>
          <option value="minimize">lower is better</option>
        </select>
        <button className="jp-mod-styled" onClick={() => model.refresh()}>
          Refresh
        </button>
      </div>
      <ErrorLine error={model.error} />
      {model.loaded && !scored.length ? (
        <div className="idds-empty">{`No iteration reports "${metric}" yet: iterations are loop works (loop[i].work) whose results hold {"${metric}": x}.`}</div>
      ) : null}
      {scored.length ? (
        <div className="idds-plots">
          <Plot
            className="idds-plot idds-plot-metric"
            data={[
              {
                x: scored.flatMap(i => i.metrics.map(() => i.iteration)),
                y: scored.flatMap(i => i.metrics),
                mode: 'markers',
                type: 'scatter',
                name: 'jobs',
                marker: { size: 5, opacity: 0.5 }
              },
              {
                x: scored.map(i => i.iteration),
                y: scored.map(i => i.metric),
                mode: 'lines+markers',
                type: 'scatter',
                name: metric
              }
            ]}
            layout={{
              title: { text: `${metric} per iteration` },
              xaxis: { title: { text: 'iteration' }, dtick: 1 },
              legend: { orientation: 'h' }
            }}
          />
          <Plot
            className="idds-plot idds-plot-proposals"
            data={[{ x: its.map(i => i.iteration), y: its.map(i => i.proposals), type: 'bar', name: 'proposals' }]}
            layout={{ title: { text: 'proposals per iteration' }, xaxis: { title: { text: 'iteration' }, dtick: 1 } }}
          />
        </div>
      ) : null}
      {its.length ? (
        <div className="idds-table-wrap">
          <table className="idds-table idds-iterations">
            <thead>
              <tr>
                <th>iteration</th>
                <th>work</th>
                <th>status</th>
                <th>{metric}</th>
                <th>proposals</th>
                <th>points</th>
              </tr>
            </thead>
            <tbody>
              {its.map(i => (
                <tr key={i.iteration}>
                  <td>{i.iteration}</td>
                  <td>{i.works.join(', ')}</td>
                  <td>
                    <StatusBadge status={i.status} />
                  </td>
                  <td>{i.metric === null ? '' : fmt(i.metric)}</td>
                  <td>{i.proposals}</td>
                  <td className="idds-points" title={JSON.stringify(i.points)}>
                    {i.points.length ? JSON.stringify(i.points).slice(0, 120) : ''}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </div>
  );
}

export class StudyView extends ReactWidget {
  readonly model: StudyModel;
  constructor(
    ctx: IddsContext,
    id: number,
    readonly kind: 'hpo' | 'al'
  ) {
    super();
    this.model = new StudyModel(ctx, id, kind);
    this.addClass('idds-study-widget');
    this.model.refresh();
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => (this.kind === 'hpo' ? <HpoBody model={this.model} /> : <AlBody model={this.model} />)}
      </UseSignal>
    );
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }
}
