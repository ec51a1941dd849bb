/**
 * The REST API of idds-jupyter under `<base_url>idds/api/v1/`, called with
 * `ServerConnection.makeRequest`, so every request carries the Jupyter token
 * or login cookie and the XSRF header (also behind a JupyterHub base URL).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type { IDag, IMonitor, IRun } from './model';
import type { IJobResult, ITrialsPage } from './studies';

export const API_PREFIX = 'idds/api/v1';
export type Action = 'abort' | 'suspend' | 'resume' | 'retry';

export interface IJobRow {
  id: number;
  idx: number;
  status: string;
  attempt: number;
  wall_s: number | null;
  error: string | null;
  exit_code: number | null;
  log: boolean;
  submitted_at: number | null;
  started_at: number | null;
  finished_at: number | null;
}

export interface IJobsPage {
  work: string;
  total: number;
  offset: number;
  jobs: IJobRow[];
}

export interface IRunStatus {
  id: number;
  name: string;
  status: string;
  params?: Record<string, unknown>;
  conditions?: Record<string, unknown>;
  loops?: Record<string, number>;
  loop_info?: Record<string, { iterations: number; converged: boolean; status: string }>;
  works: Array<Record<string, unknown>>;
  [k: string]: unknown;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

export class IddsApi {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  get base(): string {
    return URLExt.join(this.settings.baseUrl, API_PREFIX);
  }

  /** The websocket URL of the live stream (token appended where Jupyter appends it). */
  streamUrl(): string {
    let url = URLExt.join(this.settings.wsUrl, API_PREFIX, 'stream');
    if (this.settings.appendToken && this.settings.token) {
      url += `?token=${encodeURIComponent(this.settings.token)}`;
    }
    return url;
  }

  private url(path: string, query?: Record<string, string | number | null | undefined>): string {
    let url = URLExt.join(this.base, path);
    if (query) {
      const q = Object.entries(query)
        .filter(([, v]) => v !== null && v !== undefined && v !== '')
        .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
      if (q.length) {
        url += '?' + q.join('&');
      }
    }
    return url;
  }

  async raw(
    path: string,
    init: RequestInit = {},
    query?: Record<string, string | number | null | undefined>
  ): Promise<Response> {
    let resp: Response;
    try {
      resp = await ServerConnection.makeRequest(this.url(path, query), init, this.settings);
    } catch (err) {
      throw new ApiError(0, `the iDDS server cannot be reached: ${(err as Error).message}`);
    }
    if (!resp.ok) {
      let msg = resp.statusText;
      try {
        const body = await resp.json();
        msg = body.error || body.message || msg;
      } catch {
        // not JSON
      }
      throw new ApiError(resp.status, msg || `HTTP ${resp.status}`);
    }
    return resp;
  }

  async json<T>(
    path: string,
    init: RequestInit = {},
    query?: Record<string, string | number | null | undefined>
  ): Promise<T> {
    const resp = await this.raw(path, init, query);
    return (await resp.json()) as T;
  }

  private post<T>(path: string, body: unknown): Promise<T> {
    return this.json<T>(path, { method: 'POST', body: JSON.stringify(body ?? {}) });
  }

  listRuns(opts: { status?: string; name?: string; limit?: number; offset?: number } = {}): Promise<IRun[]> {
    return this.json<{ requests: IRun[] }>('requests', {}, opts).then(r => r.requests);
  }

  status(id: number): Promise<IRunStatus> {
    return this.json<IRunStatus>(`requests/${id}`);
  }

  monitor(id: number): Promise<IMonitor> {
    return this.json<IMonitor>(`monitor/${id}`);
  }

  dag(id: number): Promise<IDag> {
    return this.json<IDag>(`monitor/${id}/dag`);
  }

  jobs(id: number, work: string, opts: { offset?: number; limit?: number; status?: string } = {}): Promise<IJobsPage> {
    return this.json<IJobsPage>(`monitor/${id}/works/${encodeURIComponent(work)}/jobs`, {}, opts);
  }

  /** Every trial (ended job) of a run ended after cursor `since`, in one compact page. */
  trials(id: number, since = '', limit = 10000): Promise<ITrialsPage> {
    return this.json<ITrialsPage>(`monitor/${id}/trials`, {}, { since, limit });
  }

  results(id: number, work: string, offset = 0, limit = 10000): Promise<IJobResult[]> {
    return this.json<{ results: IJobResult[] }>(
      `requests/${id}/works/${encodeURIComponent(work)}/results`,
      {},
      { offset, limit }
    ).then(r => r.results);
  }

  async log(jobId: number, tail = 200): Promise<{ text: string; size: number }> {
    const resp = await this.raw(`logs/${jobId}`, {}, { tail });
    return { text: await resp.text(), size: Number(resp.headers.get('X-Log-Size') || 0) };
  }

  control(id: number, action: Action, work?: string): Promise<{ id: number; action: string; changed: boolean }> {
    return this.post(`requests/${id}/${action}`, work ? { work } : {});
  }

  submit(template: Record<string, unknown>, params?: Record<string, unknown>): Promise<{ id: number }> {
    return this.post('requests', { template, params });
  }
}
