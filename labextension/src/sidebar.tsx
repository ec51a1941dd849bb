/**
 * The "Workflows" sidebar: the user's runs, newest first, with live status and
 * progress; filters by status and name; abort / suspend / resume / retry
 * failed with confirmation; a click opens the run view.
 *
 * Requests stay few whatever the event rate: the list is re-read at most once
 * per `refreshInterval` (and only when an event can change it), a run's
 * progress (`monitor/{id}`) at most once per interval per run and only for
 * runs still moving, at most 3 requests in flight; nothing is fetched while
 * the panel is hidden.
 */
import { Dialog, Notification, ReactWidget, UseSignal, showDialog } from '@jupyterlab/apputils';
import { pauseIcon, redoIcon, refreshIcon, runIcon, stopIcon } from '@jupyterlab/ui-components';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { Action } from './api';
import { Coalescer } from './coalesce';
import { IddsContext } from './context';
import { IJobAggregate, IRun, RUN_STATUSES, isTerminal, runProgress } from './model';
import type { IStreamEvent } from './stream';
import { CountsBar, ErrorLine, StatusBadge, age } from './widgets';
import { workflowIcon } from './icons';

const LIST = -1;
const MAX_IN_FLIGHT = 3;

interface IProgress {
  /** client time of the fetch, in s */
  at: number;
  /** re-reads after the run ended (bounded) */
  after: number;
  status: string;
  agg: IJobAggregate;
  counts: Record<string, number>;
}

export class RunsModel {
  runs: IRun[] = [];
  progress = new Map<number, IProgress>();
  statusFilter = '';
  nameFilter = '';
  limit: number;
  error: string | null = null;
  loaded = false;
  /** requests sent, by kind (read by the UI tests to check there is no storm) */
  readonly counters = { list: 0, monitor: 0 };
  private _changed = new Signal<this, void>(this);
  private coalescer: Coalescer<number>;
  private inFlight = 0;
  private stale = new Set<number>();
  /** the fallback re-read (events are hints, the store is truth): lumino's Poll */
  private poll: Poll;
  private active = false;
  private lastPoll = 0;

  constructor(readonly ctx: IddsContext) {
    this.limit = ctx.settings.pageSize;
    this.coalescer = new Coalescer<number>(key => this.run(key), ctx.settings.refreshInterval);
    ctx.stream.event.connect(this.onEvent, this);
    ctx.stream.reconnected.connect(() => this.refresh(), this);
    ctx.stream.stateChanged.connect(() => this._changed.emit(), this);
    ctx.settingsChanged.connect((_s, st) => {
      this.coalescer.interval = st.refreshInterval;
      if (this.limit < st.pageSize) {
        this.limit = st.pageSize;
      }
      this.poll.frequency = { ...this.poll.frequency, interval: st.pollInterval * 1000 };
    }, this);
    // While the panel shows and something moves (or the stream is down), re-read the
    // list every pollInterval (not sooner than that after any other read); at rest,
    // hidden, or the browser tab hidden: nothing.
    this.poll = new Poll({
      factory: async () => {
        const moving = this.runs.some(r => !isTerminal(r.status));
        const due = Date.now() - this.lastPoll >= this.ctx.settings.pollInterval * 1000 - 50;
        if (due && (moving || this.ctx.stream.state !== 'open')) {
          this.refresh();
        }
      },
      frequency: { interval: ctx.settings.pollInterval * 1000, backoff: false },
      standby: () => !this.active || 'when-hidden',
      name: 'idds-jupyter:runs'
    });
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Runs after the client-side name filter (a substring, case-insensitive). */
  get visible(): IRun[] {
    const q = this.nameFilter.trim().toLowerCase();
    return q ? this.runs.filter(r => r.name.toLowerCase().includes(q) || String(r.id) === q) : this.runs;
  }

  setActive(on: boolean): void {
    this.active = on;
    if (on) {
      this.refresh();
    }
  }

  refresh(): void {
    this.coalescer.trigger(LIST);
  }

  setFilters(status: string, name: string): void {
    const statusChanged = status !== this.statusFilter;
    this.statusFilter = status;
    this.nameFilter = name;
    if (statusChanged) {
      this.refresh();
    }
    this._changed.emit();
  }

  more(): void {
    this.limit += this.ctx.settings.pageSize;
    this.refresh();
  }

  private onEvent(_s: unknown, e: IStreamEvent): void {
    const id = Number(e.workflow_id ?? e.key);
    if (!Number.isFinite(id)) {
      return;
    }
    const known = this.runs.some(r => r.id === id);
    if (!this.active) {
      this.stale.add(id);
      return;
    }
    if (!known || e.type !== 'job.result') {
      this.refresh(); // a new run, or a status that may have changed
    }
    if (known) {
      this.coalescer.trigger(id);
    }
  }

  private async run(key: number): Promise<void> {
    if (!this.active) {
      if (key !== LIST) {
        this.stale.add(key);
      }
      return;
    }
    if (key === LIST) {
      await this.fetchList();
    } else {
      await this.fetchMonitor(key);
    }
  }

  private async fetchList(): Promise<void> {
    this.counters.list++;
    this.lastPoll = Date.now();
    try {
      this.runs = await this.ctx.api.listRuns({ status: this.statusFilter || undefined, limit: this.limit });
      this.error = null;
    } catch (err) {
      this.error = (err as Error).message;
    }
    this.loaded = true;
    // Progress: fetch for runs not known yet and for runs whose status moved or that are active.
    for (const r of this.runs) {
      const p = this.progress.get(r.id);
      // a summary read around the end of a run may miss the last jobs: read it again (at most twice)
      const early = !!p && isTerminal(r.status) && !!r.finished_at && p.at < r.finished_at + 2 && p.after < 2;
      if (!p || p.status !== r.status || !isTerminal(r.status) || early || this.stale.has(r.id)) {
        this.stale.delete(r.id);
        this.coalescer.trigger(r.id);
      }
    }
    this._changed.emit();
  }

  private fetchMonitor(id: number): Promise<void> {
    return new Promise<void>(resolve => {
      const go = async (): Promise<void> => {
        this.inFlight++;
        this.counters.monitor++;
        try {
          const m = await this.ctx.api.monitor(id);
          const old = this.progress.get(id);
          const after = old && isTerminal(old.status) && isTerminal(m.status) ? old.after + 1 : 0;
          const at = Date.now() / 1000;
          this.progress.set(id, { at, after, status: m.status, agg: runProgress(m), counts: m.jobs });
          if (isTerminal(m.status) && m.finished_at && at < m.finished_at + 2 && after < 2) {
            setTimeout(() => this.coalescer.trigger(id), 2500); // the last counts may land just after the end
          }
          const r = this.runs.find(x => x.id === id);
          if (r && r.status !== m.status) {
            r.status = m.status;
            r.finished_at = m.finished_at ?? r.finished_at;
          }
          this._changed.emit();
        } catch {
          // the list shows the error of the next list refresh
        } finally {
          this.inFlight--;
          this.drain();
          resolve();
        }
      };
      this.waiting.push(go);
      this.drain();
    });
  }

  private waiting: Array<() => Promise<void>> = [];
  private drain(): void {
    while (this.inFlight < MAX_IN_FLIGHT && this.waiting.length) {
      void this.waiting.shift()!();
    }
  }

  async act(run: IRun, action: Action): Promise<void> {
    const verbs: Record<Action, [string, string]> = {
      abort: ['Abort', 'Abort run %s? Its running jobs are cancelled and it cannot be resumed.'],
      suspend: ['Suspend', 'Suspend run %s? Running jobs finish; no new job starts until it is resumed.'],
      resume: ['Resume', 'Resume run %s?'],
      retry: ['Retry failed', 'Retry the failed jobs of run %s?']
    };
    const [label, text] = verbs[action];
    const res = await showDialog({
      title: `${label}: ${run.name} (#${run.id})`,
      body: text.replace('%s', `#${run.id}`),
      buttons: [Dialog.cancelButton(), action === 'abort' ? Dialog.warnButton({ label }) : Dialog.okButton({ label })]
    });
    if (!res.button.accept) {
      return;
    }
    try {
      const out = await this.ctx.api.control(run.id, action);
      Notification.info(`${label} run #${run.id}: ${out.changed ? 'done' : 'nothing to change'}`, { autoClose: 3000 });
    } catch (err) {
      Notification.error(`${label} run #${run.id} failed: ${(err as Error).message}`, { autoClose: 6000 });
    }
    this.refresh();
    this.coalescer.trigger(run.id);
  }

  dispose(): void {
    this.coalescer.dispose();
    this.poll.dispose();
    Signal.clearData(this);
  }
}

function RunRow(props: {
  run: IRun;
  progress?: IProgress;
  model: RunsModel;
  onOpen: (id: number) => void;
}): JSX.Element {
  const { run, progress, model } = props;
  const st = run.status;
  const actions: Array<[Action, typeof stopIcon, string]> = [];
  if (!isTerminal(st)) {
    if (st === 'suspended') {
      actions.push(['resume', runIcon, 'Resume']);
    } else {
      actions.push(['suspend', pauseIcon, 'Suspend']);
    }
    actions.push(['abort', stopIcon, 'Abort']);
  }
  if (st === 'failed' || st === 'subfinished') {
    actions.push(['retry', redoIcon, 'Retry failed jobs']);
  }
  return (
    <li
      className="idds-run"
      data-run-id={run.id}
      data-status={st}
      onClick={() => props.onOpen(run.id)}
      title={`Open run #${run.id}`}
    >
      <div className="idds-run-head">
        <span className="idds-run-name">{run.name}</span>
        <span className="idds-run-id">#{run.id}</span>
        <StatusBadge status={st} />
      </div>
      <div className="idds-run-body">
        {progress ? (
          <CountsBar counts={progress.counts} agg={progress.agg} />
        ) : (
          <div className="idds-progress idds-progress-empty" />
        )}
        <span className="idds-run-age" title={new Date(run.created_at * 1000).toLocaleString()}>
          {age(run.created_at)}
        </span>
        <span className="idds-run-actions" onClick={e => e.stopPropagation()}>
          {actions.map(([a, icon, label]) => (
            <button
              key={a}
              className={`idds-icon-button idds-action-${a}`}
              title={`${label} run #${run.id}`}
              aria-label={`${label} run #${run.id}`}
              onClick={() => void model.act(run, a)}
            >
              <icon.react tag="span" elementSize="small" />
            </button>
          ))}
        </span>
      </div>
      {run.error && isTerminal(st) ? (
        <div className="idds-run-error" title={run.error}>
          {run.error}
        </div>
      ) : null}
    </li>
  );
}

function RunsList(props: { model: RunsModel; onOpen: (id: number) => void }): JSX.Element {
  const { model } = props;
  const [name, setName] = React.useState(model.nameFilter);
  const runs = model.visible;
  const streamState = model.ctx.stream.state;
  return (
    <div className="idds-sidebar-inner">
      <div className="idds-sidebar-header">
        <h2>Workflows</h2>
        <span className={`idds-live idds-live-${streamState}`} title={`live updates: ${streamState}`}>
          ● {streamState === 'open' ? 'live' : streamState}
        </span>
        <button className="idds-icon-button idds-refresh" title="Refresh" onClick={() => model.refresh()}>
          <refreshIcon.react tag="span" elementSize="small" />
        </button>
      </div>
      <div className="idds-filters">
        <select
          className="jp-mod-styled idds-status-filter"
          aria-label="Filter by status"
          value={model.statusFilter}
          onChange={e => model.setFilters(e.target.value, name)}
        >
          <option value="">all statuses</option>
          {RUN_STATUSES.map(s => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
        <input
          className="jp-mod-styled idds-name-filter"
          type="search"
          placeholder="Filter by name"
          aria-label="Filter by name"
          value={name}
          onChange={e => {
            setName(e.target.value);
            model.setFilters(model.statusFilter, e.target.value);
          }}
        />
      </div>
      <ErrorLine error={model.error} />
      {model.loaded && runs.length === 0 && !model.error ? (
        <div className="idds-empty">
          No runs
          {model.statusFilter || model.nameFilter ? ' match the filters' : ' yet: submit a workflow from a notebook'}.
        </div>
      ) : null}
      <ul className="idds-runs">
        {runs.map(r => (
          <RunRow key={r.id} run={r} progress={model.progress.get(r.id)} model={model} onOpen={props.onOpen} />
        ))}
      </ul>
      {model.runs.length >= model.limit ? (
        <button className="jp-mod-styled idds-more" onClick={() => model.more()}>
          Show more
        </button>
      ) : null}
    </div>
  );
}

export class RunsPanel extends ReactWidget {
  constructor(
    readonly model: RunsModel,
    private readonly onOpen: (id: number) => void
  ) {
    super();
    this.id = 'idds-workflows';
    this.addClass('idds-sidebar');
    this.title.icon = workflowIcon;
    this.title.caption = 'Workflows (iDDS)';
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.setActive(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.setActive(false);
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this.model.setActive(true);
    }
  }

  render(): JSX.Element {
    // re-rendered on each change of the model
    return (
      <UseSignal signal={this.model.changed}>{() => <RunsList model={this.model} onOpen={this.onOpen} />}</UseSignal>
    );
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }
}
