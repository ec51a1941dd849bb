/**
 * The staging view of a dataset (the data carousel): how many of its files are
 * queued, staging, available, stuck or failed, and a table of the files with
 * their Rucio DID, RSE and state, from `GET catalog/datasets/{name}`. Refreshed
 * every few seconds while it is open.
 */
import { ReactWidget } from '@jupyterlab/apputils';
import * as React from 'react';

import { IddsContext } from './context';
import { ErrorLine } from './widgets';

export const STAGING_REFRESH_MS = 5000;
/** Rows drawn at most (the counts always cover every file). */
export const STAGING_MAX_ROWS = 2000;
/** The states in the order a file goes through them (`new`: not reported yet). */
export const STAGING_STATES = ['new', 'queued', 'staging', 'available', 'stuck', 'failed'];

export interface IStagedFile {
  id: number;
  name: string;
  status: string;
  size: number | null;
  available_at: number | null;
  meta: { did?: string; rse?: string; [k: string]: unknown } | null;
}

export function stagingCounts(files: IStagedFile[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of STAGING_STATES) {
    out[s] = 0;
  }
  for (const f of files) {
    out[f.status] = (out[f.status] || 0) + 1;
  }
  return out;
}

function StagingBody(props: { ctx: IddsContext; dataset: string }): JSX.Element {
  const [files, setFiles] = React.useState<IStagedFile[] | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  React.useEffect(() => {
    let live = true;
    const load = async (): Promise<void> => {
      try {
        const r = await props.ctx.api.json<{ files: IStagedFile[] }>(
          `catalog/datasets/${encodeURIComponent(props.dataset)}`
        );
        if (live) {
          setFiles(r.files);
          setError(null);
        }
      } catch (err) {
        if (live) {
          setError((err as Error).message);
        }
      }
    };
    void load();
    const timer = window.setInterval(() => void load(), STAGING_REFRESH_MS);
    return () => {
      live = false;
      window.clearInterval(timer);
    };
  }, [props.dataset]);
  const counts = stagingCounts(files || []);
  const shown = (files || []).slice(0, STAGING_MAX_ROWS);
  return (
    <div className="idds-staging" data-dataset={props.dataset} data-files={files ? files.length : ''}>
      <h3>Staging of {props.dataset}</h3>
      <ErrorLine error={error} />
      <div className="idds-staging-counts">
        {Object.entries(counts)
          .filter(([s, n]) => n > 0 || s !== 'new')
          .map(([s, n]) => (
            <span key={s} className={`idds-staging-count idds-staging-${s}`} data-state={s} data-count={n}>
              {s} {n}
            </span>
          ))}
      </div>
      {files && files.length > shown.length && (
        <div className="idds-staging-note">
          the first {shown.length} of {files.length} files
        </div>
      )}
      <table className="idds-staging-table">
        <thead>
          <tr>
            <th>file (DID)</th>
            <th>RSE</th>
            <th>state</th>
            <th>size</th>
          </tr>
        </thead>
        <tbody>
          {shown.map(f => (
            <tr key={f.id} data-state={f.status} title={f.name}>
              <td>{f.meta?.did || f.name}</td>
              <td>{f.meta?.rse || ''}</td>
              <td className={`idds-staging-${f.status}`}>{f.status}</td>
              <td>{f.size ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** The per-file staging state of one dataset (`rucio://SCOPE:NAME` or any catalog dataset). */
export class StagingView extends ReactWidget {
  constructor(
    readonly ctx: IddsContext,
    readonly datasetName: string
  ) {
    super();
    this.addClass('idds-staging-view');
  }

  render(): JSX.Element {
    return <StagingBody ctx={this.ctx} dataset={this.datasetName} />;
  }
}
