/*
 * The Lineage tab of a job: what produced its result (issue 22).
 *
 * Reads GET monitor/{id}/works/{name}/jobs/{idx}/provenance: the job's code, input and
 * result digests, the environment it ran in, its attempts and times, whether it was
 * taken from the cache (and from which job), and the upstream jobs and values that fed it.
 */

import * as React from 'react';

import type { IddsApi } from './api';

export interface IUpstream {
  job_id: number;
  work: string;
  idx: number;
  status: string;
  result: unknown;
  result_hash: string | null;
}

export interface IJobProvenance {
  job_id: number;
  status: string;
  attempts: number;
  code_hash: string | null;
  input_hash: string | null;
  result_hash: string | null;
  cached: boolean;
  cached_source?: { job_id: number; workflow_id: number; work: string; idx: number } | null;
  backend: string | null;
  started_at: number | null;
  finished_at: number | null;
  environment: { python?: string; host?: string; platform?: string } | null;
  upstream: IUpstream[];
}

export function provenanceOf(api: IddsApi, runId: number, work: string, idx: number): Promise<IJobProvenance> {
  return api.json<IJobProvenance>(`monitor/${runId}/works/${encodeURIComponent(work)}/jobs/${idx}/provenance`);
}

function short(digest: string | null | undefined): string {
  return digest ? digest.slice(0, 12) : '—';
}

function value(v: unknown): string {
  const text = JSON.stringify(v);
  return text === undefined ? '' : text.length > 80 ? `${text.slice(0, 77)}…` : text;
}

export function Lineage(props: {
  api: IddsApi;
  runId: number;
  work: string;
  idx: number;
  version: string;
}): JSX.Element {
  const { api, runId, work, idx, version } = props;
  const [prov, setProv] = React.useState<IJobProvenance | null>(null);
  const [err, setErr] = React.useState<string | null>(null);
  React.useEffect(() => {
    let live = true;
    setProv(null);
    setErr(null);
    provenanceOf(api, runId, work, idx)
      .then(p => live && setProv(p))
      .catch(e => live && setErr((e as Error).message));
    return () => {
      live = false;
    };
  }, [runId, work, idx, version]);
  if (err) {
    return <div className="idds-muted idds-lineage">{err}</div>;
  }
  if (!prov) {
    return <div className="idds-muted idds-lineage">loading…</div>;
  }
  const env = prov.environment;
  return (
    <div className="idds-lineage" data-job-id={prov.job_id}>
      <table className="idds-table">
        <tbody>
          <tr>
            <th>origin</th>
            <td className="idds-lineage-origin">
              {prov.cached
                ? `cached from job ${prov.cached_source?.job_id ?? '?'} (run #${prov.cached_source?.workflow_id ?? '?'}, ${prov.cached_source?.work ?? '?'}[${prov.cached_source?.idx ?? '?'}])`
                : `ran (${prov.attempts} attempt${prov.attempts === 1 ? '' : 's'}, ${prov.backend ?? '?'})`}
            </td>
          </tr>
          <tr>
            <th>code</th>
            <td title={prov.code_hash ?? ''}>{short(prov.code_hash)}</td>
          </tr>
          <tr>
            <th>inputs</th>
            <td title={prov.input_hash ?? ''}>{short(prov.input_hash)}</td>
          </tr>
          <tr>
            <th>result</th>
            <td title={prov.result_hash ?? ''}>{short(prov.result_hash)}</td>
          </tr>
          <tr>
            <th>environment</th>
            <td>{env ? `Python ${env.python ?? '?'} on ${env.host ?? '?'}` : '—'}</td>
          </tr>
        </tbody>
      </table>
      <div className="idds-lineage-upstream">
        {prov.upstream.length ? `fed by ${prov.upstream.length} upstream job(s):` : 'no upstream jobs'}
      </div>
      {prov.upstream.length ? (
        <table className="idds-table">
          <thead>
            <tr>
              <th>job</th>
              <th>status</th>
              <th>value</th>
              <th>digest</th>
            </tr>
          </thead>
          <tbody>
            {prov.upstream.map(u => (
              <tr key={u.job_id} className="idds-lineage-parent">
                <td>
                  {u.work}[{u.idx}]
                </td>
                <td>{u.status}</td>
                <td>{value(u.result)}</td>
                <td title={u.result_hash ?? ''}>{short(u.result_hash)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </div>
  );
}
