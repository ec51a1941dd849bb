/**
 * The run view (a main-area tab): header with status, progress and metrics;
 * the DAG of works; a work's jobs table and a job's log.
 *
 * A refresh reads `monitor/{id}/dag` (per-work job counts: a 100,000-job run
 * is as cheap as a 10-job one) and `monitor/{id}`; the layout is recomputed
 * only when the graph's shape changes. Timings (`performance.now()`) are kept
 * on the DOM node (`data-*-ms`) and in `window.__iddsTimings`.
 *
 * Runs of more than OVERVIEW_MIN_NODES works open as an overview: works grouped
 * (grouping.ts) into collapsible nodes; expanding a group or finding a work
 * lays the drawn graph out again (milliseconds: it has few nodes).
 */
import { Dialog, Notification, ReactWidget, UseSignal, showDialog } from '@jupyterlab/apputils';
import { ISignal, Signal } from '@lumino/signaling';
import * as React from 'react';

import { Action, IJobRow, IJobsPage } from './api';
import { Coalescer } from './coalesce';
import { IddsContext } from './context';
import { DagView } from './dag';
import {
  IGrouping,
  IViewGraph,
  OVERVIEW_MIN_NODES,
  collapseGraph,
  groupToExpand,
  groupWorks,
  noGrouping,
  searchNodes
} from './grouping';
import { ILayout, layoutGraph } from './layout';
import { Lineage } from './lineage';
import { IWorkProvenance, fetchWorkProvenance, memoLabel } from './memo';
import { IMonitor, IRunGraph, aggregateCounts, isTerminal, runProgress, runToGraph, sumCounts } from './model';
import { ExecutedNotebookLinks } from './notebookexport';
import type { IStreamEvent } from './stream';
import { CountsBar, ErrorLine, StatusBadge, duration } from './widgets';

export interface ITiming {
  run: number;
  nodes: number;
  edges: number;
  jobs: number;
  engine: string;
  fetchMs: number;
  graphMs: number;
  layoutMs: number;
  renderMs: number;
  totalMs: number;
}

declare global {
  interface Window {
    __iddsTimings?: ITiming[];
  }
}

/** Size of a collapsed group's node in the layout. */
const GROUP_W = 240;
const GROUP_H = 64;

export class RunModel {
  monitor: IMonitor | null = null;
  /** the run's graph, every work */
  full: IRunGraph | null = null;
  /** the graph as drawn: collapsed groups in place of their members */
  graph: IViewGraph | null = null;
  layout: ILayout | null = null;
  grouping: IGrouping = noGrouping();
  /** groups drawn expanded */
  expanded = new Set<string>();
  /** the node to centre (after a search) */
  focus: { id: string; token: number } | null = null;
  /** per work: jobs that ran, were cached, failed (read once the run is at rest) */
  memo = new Map<string, IWorkProvenance>();
  private memoKey = '';
  error: string | null = null;
  selected: string | null = null;
  /** bumped on every new data */
  version = 0;
  private shape = '';
  private _changed = new Signal<this, void>(this);
  private coalescer: Coalescer<number>;
  private hasConditions = false;
  pendingTiming: (Omit<ITiming, 'renderMs' | 'totalMs'> & { t0: number; tData: number }) | null = null;
  timing: ITiming | null = null;

  constructor(
    readonly ctx: IddsContext,
    readonly id: number
  ) {
    this.coalescer = new Coalescer<number>(() => this.fetch(), ctx.settings.refreshInterval);
    ctx.stream.event.connect(this.onEvent, this);
    ctx.stream.reconnected.connect(() => this.refresh(), this);
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  refresh(): void {
    this.coalescer.trigger(0);
  }

  private onEvent(_s: unknown, e: IStreamEvent): void {
    if (Number(e.workflow_id ?? e.key) === this.id) {
      this.refresh();
    }
  }

  select(id: string | null): void {
    this.selected = id;
    this._changed.emit();
  }

  /** Collapses the graph by the current groups and lays it out again when its shape changed. */
  private relayout(): void {
    const full = this.full;
    if (!full) {
      return;
    }
    const view = collapseGraph(full, this.grouping, this.expanded);
    const shape =
      view.nodes.map(n => n.id).join('\n') + '\n#' + view.edges.map(e => `${e.source}>${e.target}`).join('\n');
    const s = this.ctx.settings;
    if (shape !== this.shape || !this.layout) {
      const grouped = this.grouping.groups.size > 0;
      this.layout = layoutGraph(
        {
          nodes: view.nodes.map(n => (n.group ? { id: n.id, width: GROUP_W, height: GROUP_H } : n)),
          edges: view.edges
        },
        {
          engine: s.layoutEngine,
          direction: s.layoutDirection,
          dagreMaxSize: s.dagreMaxSize,
          ...(grouped ? { nodeWidth: GROUP_W, nodeHeight: GROUP_H, layerGap: 32 } : {})
        }
      );
      this.shape = shape;
    }
    this.graph = view;
  }

  /** Expands a collapsed group or collapses an expanded one. */
  toggleGroup(id: string): void {
    if (!this.grouping.groups.has(id)) {
      return;
    }
    if (this.expanded.has(id)) {
      this.expanded.delete(id);
    } else {
      this.expanded.add(id);
    }
    this.redraw();
  }

  collapseAll(): void {
    this.expanded.clear();
    this.focus = null;
    this.redraw();
  }

  /** Lays out again after a change of the groups drawn, timing it like a refresh. */
  private redraw(): void {
    const t0 = performance.now();
    this.relayout();
    const t1 = performance.now();
    if (this.full && this.layout) {
      this.pendingTiming = {
        run: this.id,
        nodes: this.full.nodes.length,
        edges: this.full.edges.length,
        jobs: this.full.nodes.reduce((a, n) => a + n.agg.total, 0),
        engine: this.layout.engine,
        fetchMs: 0,
        graphMs: 0,
        layoutMs: t1 - t0,
        t0,
        tData: t0
      };
    }
    this.version++;
    this._changed.emit();
  }

  /**
   * Finds the `nth` work matching `query` (see searchNodes): its group is
   * expanded, it is selected and centred. Returns how many matched.
   */
  find(query: string, nth: number): { matches: number; id: string | null } {
    if (!this.full) {
      return { matches: 0, id: null };
    }
    const hits = searchNodes(this.full, this.grouping, query);
    if (!hits.length) {
      return { matches: 0, id: null };
    }
    const id = hits[Math.min(nth, hits.length - 1)];
    const g = groupToExpand(this.grouping, this.expanded, id);
    if (g) {
      this.expanded.add(g);
    }
    this.selected = this.grouping.groups.has(id) ? null : id;
    this.focus = { id, token: (this.focus?.token ?? 0) + 1 };
    this.redraw();
    return { matches: hits.length, id };
  }

  private async fetch(): Promise<void> {
    const t0 = performance.now();
    // The summary (header, metrics) comes on its own: the DAG does not wait for it.
    const monitorDone = this.ctx.api.monitor(this.id).then(
      m => {
        this.monitor = m;
        this._changed.emit();
      },
      err => {
        this.error = (err as Error).message;
        this._changed.emit();
      }
    );
    try {
      const [dag, status] = await Promise.all([
        this.ctx.api.dag(this.id),
        this.hasConditions ? this.ctx.api.status(this.id).catch(() => null) : Promise.resolve(null)
      ]);
      const tData = performance.now();
      this.hasConditions = dag.nodes.some(n => n.kind === 'condition');
      const graph = runToGraph(dag, status?.conditions ?? null);
      const tGraph = performance.now();
      this.full = graph;
      this.grouping = graph.nodes.length > OVERVIEW_MIN_NODES ? groupWorks(graph) : noGrouping();
      for (const g of this.expanded) {
        if (!this.grouping.groups.has(g)) {
          this.expanded.delete(g);
        }
      }
      this.relayout();
      const tLayout = performance.now();
      this.error = null;
      this.version++;
      let jobs = 0;
      for (const n of graph.nodes) {
        jobs += n.agg.total;
      }
      this.pendingTiming = {
        run: this.id,
        nodes: graph.nodes.length,
        edges: graph.edges.length,
        jobs,
        engine: this.layout?.engine ?? '',
        fetchMs: tData - t0,
        graphMs: tGraph - tData,
        layoutMs: tLayout - tGraph,
        t0,
        tData
      };
    } catch (err) {
      this.error = (err as Error).message;
    }
    this._changed.emit();
    await monitorDone;
    await this.fetchMemo();
  }

  /** Which works were cached: read when the run comes to rest (not at every live refresh). */
  private async fetchMemo(): Promise<void> {
    const m = this.monitor;
    if (!m || !isTerminal(m.status)) {
      return;
    }
    const key = `${m.status}:${JSON.stringify(m.jobs)}`;
    if (key === this.memoKey) {
      return;
    }
    this.memoKey = key;
    try {
      this.memo = await fetchWorkProvenance(this.ctx.api, this.id);
      this.version++;
      this._changed.emit();
    } catch {
      // a server without provenance records: nothing to show
    }
  }

  /** Called after React committed the DOM: the paint follows in the next frame. */
  committed(node: HTMLElement | null): void {
    const p = this.pendingTiming;
    if (!p) {
      return;
    }
    this.pendingTiming = null;
    const tCommit = performance.now();
    requestAnimationFrame(() => {
      const tPaint = performance.now();
      const t: ITiming = {
        run: p.run,
        nodes: p.nodes,
        edges: p.edges,
        jobs: p.jobs,
        engine: p.engine,
        fetchMs: p.fetchMs,
        graphMs: p.graphMs,
        layoutMs: p.layoutMs,
        renderMs: Math.max(tPaint, tCommit) - p.tData,
        totalMs: Math.max(tPaint, tCommit) - p.t0
      };
      this.timing = t;
      (window.__iddsTimings = window.__iddsTimings || []).push(t);
      if (node) {
        node.dataset.renderMs = t.renderMs.toFixed(1);
        node.dataset.totalMs = t.totalMs.toFixed(1);
        node.dataset.layoutMs = t.layoutMs.toFixed(1);
        node.dataset.fetchMs = t.fetchMs.toFixed(1);
        node.dataset.nodes = String(t.nodes);
        node.dataset.jobs = String(t.jobs);
        node.dataset.renders = String(Number(node.dataset.renders || 0) + 1);
      }
    });
  }

  async act(action: Action, work?: string): Promise<void> {
    const m = this.monitor;
    const what = work ? `work ${work} of run #${this.id}` : `run #${this.id}${m ? ` (${m.name})` : ''}`;
    const label = { abort: 'Abort', suspend: 'Suspend', resume: 'Resume', retry: 'Retry failed' }[action];
    const res = await showDialog({
      title: `${label} ${what}?`,
      body:
        action === 'abort'
          ? 'Running jobs are cancelled; an aborted run cannot be resumed.'
          : action === 'retry'
            ? 'Failed jobs run again.'
            : action === 'suspend'
              ? 'No new job starts until it is resumed.'
              : 'Jobs start again.',
      buttons: [Dialog.cancelButton(), action === 'abort' ? Dialog.warnButton({ label }) : Dialog.okButton({ label })]
    });
    if (!res.button.accept) {
      return;
    }
    try {
      const out = await this.ctx.api.control(this.id, action, work);
      Notification.info(`${label} ${what}: ${out.changed ? 'done' : 'nothing to change'}`, { autoClose: 3000 });
    } catch (err) {
      Notification.error(`${label} ${what} failed: ${(err as Error).message}`, { autoClose: 6000 });
    }
    this.refresh();
  }

  dispose(): void {
    this.coalescer.dispose();
    Signal.clearData(this);
  }
}

function Metrics(props: { m: IMonitor }): JSX.Element {
  const mt = props.m.metrics || {};
  const items: Array<[string, string]> = [];
  if (mt.throughput) {
    items.push(['throughput', `${mt.throughput.toFixed(mt.throughput < 10 ? 2 : 0)} jobs/s`]);
  }
  if (mt.latency_p50 !== null && mt.latency_p50 !== undefined) {
    items.push(['latency p50', duration(mt.latency_p50)]);
  }
  if (mt.latency_p95 !== null && mt.latency_p95 !== undefined) {
    items.push(['p95', duration(mt.latency_p95)]);
  }
  if (mt.failure_rate) {
    items.push(['failure rate', `${(100 * mt.failure_rate).toFixed(1)}%`]);
  }
  if (props.m.created_at) {
    const end = props.m.finished_at || Date.now() / 1000;
    items.push(['elapsed', duration(end - props.m.created_at)]);
  }
  return (
    <span className="idds-metrics">
      {items.map(([k, v]) => (
        <span key={k} className="idds-metric">
          <span className="idds-metric-key">{k}</span> {v}
        </span>
      ))}
    </span>
  );
}

function LogView(props: { model: RunModel; work: string; job: IJobRow; onClose: () => void }): JSX.Element {
  const [text, setText] = React.useState<string | null>(null);
  const [err, setErr] = React.useState<string | null>(null);
  const [lineage, setLineage] = React.useState(false);
  const { model, job, work } = props;
  React.useEffect(() => {
    let live = true;
    setText(null);
    setErr(null);
    if (job.log) {
      model.ctx.api
        .log(job.id, model.ctx.settings.logTailLines)
        .then(r => live && setText(r.text || '(empty log)'))
        .catch(e => live && setErr((e as Error).message));
    } else {
      // no log file (e.g. a function job): show its result, or its error with the remote traceback
      model.ctx.api
        .results(model.id, work, job.idx, 1)
        .then(rs => {
          if (!live) {
            return;
          }
          const r = rs[0] as unknown as (Record<string, unknown> & { traceback?: string | null }) | undefined;
          if (!r) {
            setErr('this job has no log file');
          } else if (r.error || r.traceback) {
            setText(
              `no log file; ${r.exc_type ? String(r.exc_type) + ': ' : ''}${r.error ?? ''}\n\n${r.traceback ?? ''}`
            );
          } else {
            setText(
              `no log file; result:\n${JSON.stringify(r.result, null, 2) ?? 'null'}${r.blob ? `\n(blob ${String(r.blob)})` : ''}`
            );
          }
        })
        .catch(e => live && setErr((e as Error).message));
    }
    return () => {
      live = false;
    };
  }, [job.id, job.status, job.attempt]);
  return (
    <div className="idds-log">
      <div className="idds-log-head">
        <span>
          job {job.id} (#{job.idx}, attempt {job.attempt})
          {job.log ? ` — last ${model.ctx.settings.logTailLines} lines of its log` : ''}
        </span>
        {job.log && model.full?.index.get(work)?.kind === 'function' ? (
          // a function job with a log: a whole-notebook job (the server says if it is not)
          <ExecutedNotebookLinks api={model.ctx.api} jobId={job.id} />
        ) : null}
        <button className="jp-mod-styled idds-lineage-tab" onClick={() => setLineage(!lineage)}>
          {lineage ? 'Log' : 'Lineage'}
        </button>
        <button className="jp-mod-styled" onClick={props.onClose}>
          Close
        </button>
      </div>
      {lineage ? (
        <Lineage
          api={model.ctx.api}
          runId={model.id}
          work={work}
          idx={job.idx}
          version={`${job.status}${job.attempt}`}
        />
      ) : err ? (
        <div className="idds-muted">{err}</div>
      ) : (
        <pre className="idds-log-text">{text ?? 'loading…'}</pre>
      )}
    </div>
  );
}

function WorkPanel(props: { model: RunModel; work: string }): JSX.Element {
  const { model, work } = props;
  const node = model.full?.index.get(work) ?? null;
  const [page, setPage] = React.useState<IJobsPage | null>(null);
  const [offset, setOffset] = React.useState(0);
  const [status, setStatus] = React.useState('');
  const [err, setErr] = React.useState<string | null>(null);
  const [job, setJob] = React.useState<IJobRow | null>(null);
  const limit = model.ctx.settings.jobsPageSize;
  const isWork = node !== null && node.kind !== 'condition' && node.kind !== 'loop';
  // Refetch when the work's counts change (the run view's refresh is already coalesced).
  const countsKey = node ? JSON.stringify(node.jobs) + node.status : '';
  React.useEffect(() => {
    setOffset(0);
    setJob(null);
  }, [work, status]);
  React.useEffect(() => {
    if (!isWork) {
      return;
    }
    let live = true;
    model.ctx.api
      .jobs(model.id, work, { offset, limit, status: status || undefined })
      .then(p => {
        if (live) {
          setPage(p);
          setErr(null);
        }
      })
      .catch(e => live && setErr((e as Error).message));
    return () => {
      live = false;
    };
  }, [work, offset, status, countsKey, isWork]);
  if (!node) {
    return <div className="idds-work-panel idds-muted">{work}: not in this run</div>;
  }
  if (!isWork) {
    return (
      <div className="idds-work-panel">
        <h3>
          {node.kind} {node.id}
        </h3>
        {node.kind === 'condition' ? <div>value: {String(node.value ?? 'not evaluated yet')}</div> : null}
        {node.kind === 'loop' ? <div>iterations: {node.iterations ?? 0}</div> : null}
      </div>
    );
  }
  const total = page?.total ?? node.agg.total;
  return (
    <div className="idds-work-panel" data-work={work}>
      <div className="idds-work-head">
        <h3 title={work}>{node.label}</h3>
        <StatusBadge status={node.status} />
        {node.agg.failed ? (
          <button className="jp-mod-styled idds-work-retry" onClick={() => void model.act('retry', work)}>
            Retry failed
          </button>
        ) : null}
      </div>
      <div className="idds-work-meta">
        {node.loop ? (
          <span>
            loop {node.loop}, iteration {node.iteration}
          </span>
        ) : null}
        <span>{node.kind}</span>
        {model.memo.has(work) ? (
          <span className="idds-memo-meta" title="jobs that ran here / were taken from the cache / failed">
            {memoLabel(model.memo.get(work))} (ran {model.memo.get(work)!.ran}, cached {model.memo.get(work)!.cached},
            failed {model.memo.get(work)!.failed})
          </span>
        ) : null}
      </div>
      <CountsBar counts={node.jobs} agg={node.agg} />
      <div className="idds-jobs-toolbar">
        <select
          className="jp-mod-styled"
          aria-label="Filter jobs by status"
          value={status}
          onChange={e => setStatus(e.target.value)}
        >
          <option value="">all jobs</option>
          {['pending', 'ready', 'submitted', 'running', 'finished', 'failed', 'cancelled'].map(s => (
            <option key={s} value={s}>
              {s} {node.jobs[s] ? `(${node.jobs[s]})` : ''}
            </option>
          ))}
        </select>
        <span className="idds-muted">
          {total ? `${offset + 1}–${Math.min(offset + limit, total)} of ${total}` : 'no jobs'}
        </span>
        <button
          className="jp-mod-styled"
          disabled={offset === 0}
          onClick={() => setOffset(Math.max(0, offset - limit))}
        >
          ‹
        </button>
        <button className="jp-mod-styled" disabled={offset + limit >= total} onClick={() => setOffset(offset + limit)}>
          ›
        </button>
      </div>
      <ErrorLine error={err} />
      <div className="idds-table-wrap">
        <table className="idds-table idds-jobs">
          <thead>
            <tr>
              <th>#</th>
              <th>job</th>
              <th>status</th>
              <th>attempts</th>
              <th>wall time</th>
              <th>error</th>
            </tr>
          </thead>
          <tbody>
            {(page?.jobs || []).map(j => (
              <tr
                key={j.id}
                className={`idds-job-row${job?.id === j.id ? ' idds-selected' : ''}`}
                data-job-id={j.id}
                onClick={() => setJob(j)}
                title="Show the log"
              >
                <td>{j.idx}</td>
                <td>{j.id}</td>
                <td>
                  <StatusBadge status={j.status} />
                </td>
                <td>{j.attempt}</td>
                <td>{duration(j.wall_s)}</td>
                <td className="idds-job-error" title={j.error || ''}>
                  {j.error || ''}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {job ? <LogView model={model} work={work} job={job} onClose={() => setJob(null)} /> : null}
    </div>
  );
}

function RunViewBody(props: { model: RunModel; openStudy: (kind: 'hpo' | 'al', id: number) => void }): JSX.Element {
  const { model } = props;
  const rootRef = React.useRef<HTMLDivElement>(null);
  const fitToken = 0;
  const m = model.monitor;
  const onCommit = React.useCallback(() => model.committed(rootRef.current), [model]);
  React.useLayoutEffect(() => {
    if (model.pendingTiming && (!model.graph || !model.layout)) {
      onCommit();
    }
  });
  const st = m?.status ?? null;
  const prog = m ? runProgress(m) : aggregateCounts({});
  return (
    <div
      className="idds-runview"
      ref={rootRef}
      data-run-id={model.id}
      data-status={st || ''}
      data-version={model.version}
    >
      <div className="idds-runview-header">
        <span className="idds-runview-title">{m ? m.name : `run ${model.id}`}</span>
        <span className="idds-run-id">#{model.id}</span>
        <StatusBadge status={st} />
        {m ? <CountsBar counts={m.jobs || sumCounts([])} agg={prog} /> : null}
        {m ? <Metrics m={m} /> : null}
        <span className="idds-spacer" />
        <button className="jp-mod-styled" onClick={() => props.openStudy('hpo', model.id)} title="Trials of this run">
          HPO view
        </button>
        <button className="jp-mod-styled" onClick={() => props.openStudy('al', model.id)} title="Metric per iteration">
          AL view
        </button>
        {st && !isTerminal(st) && st !== 'suspended' ? (
          <button className="jp-mod-styled idds-action-suspend" onClick={() => void model.act('suspend')}>
            Suspend
          </button>
        ) : null}
        {st === 'suspended' ? (
          <button className="jp-mod-styled idds-action-resume" onClick={() => void model.act('resume')}>
            Resume
          </button>
        ) : null}
        {st && !isTerminal(st) ? (
          <button className="jp-mod-styled jp-mod-warn idds-action-abort" onClick={() => void model.act('abort')}>
            Abort
          </button>
        ) : null}
        {st === 'failed' || st === 'subfinished' ? (
          <button className="jp-mod-styled idds-action-retry" onClick={() => void model.act('retry')}>
            Retry failed
          </button>
        ) : null}
        <button className="jp-mod-styled" onClick={() => model.refresh()}>
          Refresh
        </button>
      </div>
      <ErrorLine error={model.error} />
      {m?.error ? <div className="idds-error">run error: {m.error}</div> : null}
      <div className="idds-runview-main">
        {model.graph && model.layout ? (
          <DagView
            graph={model.graph}
            layout={model.layout}
            selected={model.selected}
            onSelect={id => model.select(id)}
            fitToken={fitToken}
            onCommit={onCommit}
            onToggleGroup={id => model.toggleGroup(id)}
            expanded={model.expanded}
            groups={model.grouping.groups}
            onFind={(q, nth) => model.find(q, nth)}
            focus={model.focus}
            onCollapseAll={() => model.collapseAll()}
            memo={model.memo}
          />
        ) : (
          <div className="idds-dag idds-muted">{model.error ? '' : 'loading…'}</div>
        )}
        {model.selected ? (
          <div className="idds-side">
            <button className="idds-close" title="Close" onClick={() => model.select(null)}>
              ×
            </button>
            <WorkPanel model={model} work={model.selected} />
          </div>
        ) : null}
      </div>
    </div>
  );
}

export class RunView extends ReactWidget {
  readonly model: RunModel;
  constructor(
    ctx: IddsContext,
    id: number,
    private readonly openStudy: (kind: 'hpo' | 'al', id: number) => void
  ) {
    super();
    this.model = new RunModel(ctx, id);
    this.addClass('idds-runview-widget');
    this.model.refresh();
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => <RunViewBody model={this.model} openStudy={this.openStudy} />}
      </UseSignal>
    );
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }
}
