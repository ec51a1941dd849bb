/**
 * Memoization at a glance: per work of a run, whether its jobs ran here, were
 * taken from the cache (memoized results of earlier runs, see
 * docs/provenance.md) or both. Reads the per-work summary of
 * `GET monitor/{id}/provenance` (one grouped query on the server).
 */
import type { IddsApi } from './api';

/** Jobs of one work that ran (succeeded), were cached, failed — as the server counts them. */
export interface IWorkProvenance {
  ran: number;
  cached: number;
  failed: number;
}

/** `cached`: every recorded job came from the cache; `ran`: none did; `mixed`: some did. */
export type MemoState = 'cached' | 'ran' | 'mixed';

export function memoState(p: IWorkProvenance | null | undefined): MemoState | null {
  if (!p) {
    return null;
  }
  const computed = (p.ran || 0) + (p.failed || 0);
  if (p.cached > 0) {
    return computed > 0 ? 'mixed' : 'cached';
  }
  return computed > 0 ? 'ran' : null;
}

/** Label of a work's memo state for the DAG and the work panel. */
export function memoLabel(p: IWorkProvenance | null | undefined): string {
  const s = memoState(p);
  if (!p || s === null) {
    return '';
  }
  if (s === 'cached') {
    return 'cached';
  }
  if (s === 'ran') {
    return 'ran';
  }
  return `${p.cached}/${p.cached + p.ran + p.failed} cached`;
}

/** Per-work provenance summary of a run (`works` of the run's provenance page; one job row is read). */
export async function fetchWorkProvenance(api: IddsApi, runId: number): Promise<Map<string, IWorkProvenance>> {
  const page = await api.json<{ works?: Record<string, IWorkProvenance> }>(
    `monitor/${runId}/provenance`,
    {},
    { limit: 1 }
  );
  return new Map(Object.entries(page.works || {}));
}
