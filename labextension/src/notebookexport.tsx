/**
 * Notebooks exported to batch workflows from JupyterLab: "Export as workflow…" and
 * "Submit notebook as workflow…" on an open notebook (a form built from its `parameters`
 * cell), and the executed notebook of a job opened or downloaded from the run view.
 *
 * The parameters cell is parsed by the server (`POST notebooks/export` returns its
 * defaults), so the form and the exported template never disagree.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, Notification, ReactWidget, showDialog } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import * as React from 'react';

import { IddsApi } from './api';

export namespace NotebookCommandIDs {
  export const exportNotebook = 'idds:export-notebook';
  export const submitNotebook = 'idds:submit-notebook';
}

/** Where executed notebooks opened from the run view are saved (a contents API path; not a hidden one, which Jupyter refuses to write by default). */
export const EXECUTED_DIR = 'idds-executed';

/** What the commands need of a notebook panel (kept structural: no @jupyterlab/notebook dependency). */
interface INotebookLike {
  context: { path: string; model: { toJSON(): unknown } };
}

function currentNotebook(app: JupyterFrontEnd): INotebookLike | null {
  const w = app.shell.currentWidget as unknown as Partial<INotebookLike> | null;
  const path = w?.context?.path;
  return w && typeof path === 'string' && path.endsWith('.ipynb') ? (w as INotebookLike) : null;
}

export interface IExportForm {
  mode: 'notebook' | 'cells';
  params: Record<string, unknown>;
  sweep: Record<string, unknown[]> | null;
  backend: string;
}

/** A parameter's text in the form: JSON, which is Python's literal syntax for these values. */
function literal(v: unknown): string {
  return JSON.stringify(v);
}

/** The value typed for a parameter: JSON when it parses, else the text as a string. */
export function parseValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** `seed=1,2,3` lines (or a JSON object of lists) as a sweep; null when empty. */
export function parseSweep(text: string): Record<string, unknown[]> | null {
  const t = text.trim();
  if (!t) {
    return null;
  }
  if (t.startsWith('{')) {
    const o = JSON.parse(t) as Record<string, unknown>;
    for (const [k, v] of Object.entries(o)) {
      if (!Array.isArray(v)) {
        throw new Error(`sweep: '${k}' must be a list of values`);
      }
    }
    return o as Record<string, unknown[]>;
  }
  const out: Record<string, unknown[]> = {};
  for (const line of t.split(/\n|;/)) {
    if (!line.trim()) {
      continue;
    }
    const m = /^\s*([A-Za-z_]\w*)\s*=\s*(.+)$/.exec(line);
    if (!m) {
      throw new Error(`sweep: '${line.trim()}' is not 'name=v1,v2,…'`);
    }
    out[m[1]] = m[2].split(',').map(s => parseValue(s.trim()));
  }
  return out;
}

/** The body of the dialog: the parameters cell's names with their defaults, mode, sweep, backend. */
class ExportFormWidget extends ReactWidget {
  private state: { mode: 'notebook' | 'cells'; values: Record<string, string>; sweep: string; backend: string };

  constructor(
    readonly defaults: Record<string, unknown>,
    readonly submit: boolean
  ) {
    super();
    this.addClass('idds-export-form');
    const values: Record<string, string> = {};
    for (const [k, v] of Object.entries(defaults)) {
      values[k] = literal(v);
    }
    this.state = { mode: 'notebook', values, sweep: '', backend: '' };
  }

  getValue(): IExportForm {
    const params: Record<string, unknown> = {};
    for (const [k, text] of Object.entries(this.state.values)) {
      params[k] = parseValue(text);
    }
    return { mode: this.state.mode, params, sweep: parseSweep(this.state.sweep), backend: this.state.backend.trim() };
  }

  protected render(): JSX.Element {
    return <ExportForm initial={this.state} submit={this.submit} onChange={s => (this.state = s)} />;
  }
}

function ExportForm(props: {
  initial: ExportFormWidget['state'];
  submit: boolean;
  onChange: (s: ExportFormWidget['state']) => void;
}): JSX.Element {
  const [s, setS] = React.useState(props.initial);
  const update = (patch: Partial<ExportFormWidget['state']>): void => {
    const next = { ...s, ...patch };
    setS(next);
    props.onChange(next);
  };
  const names = Object.keys(s.values);
  return (
    <div className="idds-export-fields">
      <fieldset className="idds-export-params">
        <legend>Parameters {names.length ? '(the notebook’s parameters cell)' : ''}</legend>
        {names.length === 0 ? (
          <div className="idds-muted">no cell tagged “parameters” in this notebook</div>
        ) : (
          names.map(k => (
            <label key={k} className="idds-export-row">
              <span className="idds-export-name">{k}</span>
              <input
                className="jp-mod-styled idds-export-param"
                data-param={k}
                value={s.values[k]}
                disabled={!props.submit}
                title={props.submit ? 'a JSON / Python literal' : 'the exported template keeps the defaults'}
                onChange={e => update({ values: { ...s.values, [k]: e.target.value } })}
              />
            </label>
          ))
        )}
      </fieldset>
      <label className="idds-export-row">
        <span className="idds-export-name">Mode</span>
        <select
          className="jp-mod-styled idds-export-mode"
          value={s.mode}
          onChange={e => update({ mode: e.target.value as 'notebook' | 'cells' })}
        >
          <option value="notebook">notebook — one job runs the whole notebook</option>
          <option value="cells">cells — one work per cell, a DAG from the variables</option>
        </select>
      </label>
      <label className="idds-export-row">
        <span className="idds-export-name">Sweep</span>
        <input
          className="jp-mod-styled idds-export-sweep"
          placeholder="optional: seed=1,2,3; lr=0.1,0.01"
          value={s.sweep}
          onChange={e => update({ sweep: e.target.value })}
        />
      </label>
      {props.submit ? (
        <label className="idds-export-row">
          <span className="idds-export-name">Backend</span>
          <input
            className="jp-mod-styled idds-export-backend"
            placeholder="default"
            value={s.backend}
            onChange={e => update({ backend: e.target.value })}
          />
        </label>
      ) : null}
    </div>
  );
}

interface IExportReply {
  yaml: string;
  parameters: Record<string, unknown>;
  template: { name: string };
}

function body(nb: INotebookLike, form?: IExportForm): Record<string, unknown> {
  return {
    notebook: nb.context.model.toJSON(),
    name: PathExt.basename(nb.context.path),
    mode: form?.mode ?? 'notebook',
    sweep: form?.sweep ?? undefined
  };
}

async function ask(api: IddsApi, nb: INotebookLike, submit: boolean): Promise<IExportForm | null> {
  // the parameters cell read by the server (one parser for the form and the template)
  const reply = await api.json<IExportReply>('notebooks/export', { method: 'POST', body: JSON.stringify(body(nb)) });
  const form = new ExportFormWidget(reply.parameters, submit);
  const label = submit ? 'Submit' : 'Export';
  const res = await showDialog<IExportForm>({
    title: `${submit ? 'Submit' : 'Export'} ${PathExt.basename(nb.context.path)} as a workflow`,
    body: form,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label })]
  });
  return res.button.accept ? res.value : null;
}

async function ensureDir(app: JupyterFrontEnd, path: string): Promise<void> {
  const contents = app.serviceManager.contents;
  let at = '';
  for (const part of path.split('/').filter(Boolean)) {
    at = at ? `${at}/${part}` : part;
    try {
      await contents.get(at, { content: false });
    } catch {
      await contents.save(at, { type: 'directory' });
    }
  }
}

function fail(what: string, err: unknown): void {
  Notification.error(`${what}: ${(err as Error).message}`, { autoClose: 8000 });
}

/** Adds the two commands and puts them on the notebook's context menu; returns their ids (for the palette). */
export function addNotebookCommands(app: JupyterFrontEnd, api: IddsApi, openRun: (id: number) => void): string[] {
  const enabled = (): boolean => currentNotebook(app) !== null;
  app.commands.addCommand(NotebookCommandIDs.exportNotebook, {
    label: 'Export as workflow…',
    caption: 'Write this notebook as a workflow template (YAML) next to it',
    isEnabled: enabled,
    execute: async () => {
      const nb = currentNotebook(app);
      if (!nb) {
        return;
      }
      try {
        const form = await ask(api, nb, false);
        if (!form) {
          return;
        }
        const reply = await api.json<IExportReply>('notebooks/export', {
          method: 'POST',
          body: JSON.stringify(body(nb, form))
        });
        const dir = PathExt.dirname(nb.context.path);
        const file = PathExt.join(dir, `${PathExt.basename(nb.context.path, '.ipynb')}.workflow.yaml`);
        await app.serviceManager.contents.save(file, { type: 'file', format: 'text', content: reply.yaml });
        await app.commands.execute('docmanager:open', { path: file });
      } catch (err) {
        fail('export failed', err);
      }
    }
  });
  app.commands.addCommand(NotebookCommandIDs.submitNotebook, {
    label: 'Submit notebook as workflow…',
    caption: 'Run this notebook headless as an iDDS workflow, with the parameters given',
    isEnabled: enabled,
    execute: async () => {
      const nb = currentNotebook(app);
      if (!nb) {
        return;
      }
      try {
        const form = await ask(api, nb, true);
        if (!form) {
          return;
        }
        const reply = await api.json<{ id: number; name: string }>('notebooks/submit', {
          method: 'POST',
          body: JSON.stringify({ ...body(nb, form), params: form.params, backend: form.backend || undefined })
        });
        Notification.success(`submitted ${reply.name} as run #${reply.id}`, { autoClose: 5000 });
        await app.commands.execute('idds:show-workflows');
        openRun(reply.id);
      } catch (err) {
        fail('submit failed', err);
      }
    }
  });
  for (const command of [NotebookCommandIDs.exportNotebook, NotebookCommandIDs.submitNotebook]) {
    app.contextMenu.addItem({ command, selector: '.jp-Notebook', rank: 90 });
  }
  executedOpener = (id: number) => openExecuted(app, api, id);
  return [NotebookCommandIDs.exportNotebook, NotebookCommandIDs.submitNotebook];
}

let executedOpener: ((jobId: number) => Promise<void>) | null = null;

async function fetchExecuted(api: IddsApi, jobId: number): Promise<string> {
  const resp = await api.raw(`logs/${jobId}/notebook`);
  return resp.text();
}

/** Saves job `jobId`'s executed notebook under idds-executed/ and opens it. */
async function openExecuted(app: JupyterFrontEnd, api: IddsApi, jobId: number): Promise<void> {
  const text = await fetchExecuted(api, jobId);
  await ensureDir(app, EXECUTED_DIR);
  const path = `${EXECUTED_DIR}/job-${jobId}.ipynb`;
  await app.serviceManager.contents.save(path, { type: 'notebook', format: 'json', content: JSON.parse(text) });
  await app.commands.execute('docmanager:open', { path });
}

/** The run view's links of a whole-notebook job: open its executed notebook, or download it. */
export function ExecutedNotebookLinks(props: { api: IddsApi; jobId: number }): JSX.Element {
  const { api, jobId } = props;
  const open = (): void => {
    if (executedOpener) {
      executedOpener(jobId).catch(err => fail(`job ${jobId}`, err));
    }
  };
  const download = (): void => {
    fetchExecuted(api, jobId)
      .then(text => {
        const url = URL.createObjectURL(new Blob([text], { type: 'application/x-ipynb+json' }));
        const a = document.createElement('a');
        a.href = url;
        a.download = `job-${jobId}.ipynb`;
        a.click();
        setTimeout(() => URL.revokeObjectURL(url), 1000);
      })
      .catch(err => fail(`job ${jobId}`, err));
  };
  return (
    <span className="idds-executed-links">
      <button className="jp-mod-styled idds-open-executed" onClick={open} title="Open the notebook this job executed">
        Open executed notebook
      </button>
      <button className="jp-mod-styled idds-download-executed" onClick={download} title="Download it (.ipynb)">
        Download
      </button>
    </span>
  );
}
