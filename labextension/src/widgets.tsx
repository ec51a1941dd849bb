/** Small shared React pieces: status badge, job-count bar, progress, time formats. */
import * as React from 'react';

import { IJobAggregate, JobCounts, formatCount, orderedCounts } from './model';

export function StatusBadge(props: { status: string | null | undefined }): JSX.Element {
  const s = props.status || 'unknown';
  return <span className={`idds-badge idds-status-${s}`}>{s}</span>;
}

/** A stacked bar of job counts by status, with the done/total text. */
export function CountsBar(props: { counts: JobCounts; agg: IJobAggregate; compact?: boolean }): JSX.Element {
  const { counts, agg } = props;
  const total = Math.max(agg.total, 1);
  const parts = orderedCounts(counts);
  const title = parts.map(([s, n]) => `${s}: ${n}`).join(', ') || 'no jobs yet';
  return (
    <div className="idds-progress" title={title}>
      <div className="idds-progress-track">
        {parts.map(([s, n]) => (
          <div key={s} className={`idds-progress-seg idds-fill-${s}`} style={{ width: `${(100 * n) / total}%` }} />
        ))}
      </div>
      {!props.compact && (
        <span className="idds-progress-text">
          {formatCount(agg.done)}/{formatCount(agg.total)}
          {agg.failed ? <span className="idds-failed-count"> · {formatCount(agg.failed)} failed</span> : null}
        </span>
      )}
    </div>
  );
}

export function age(ts: number | null | undefined, nowMs = Date.now()): string {
  if (!ts) {
    return '';
  }
  const s = Math.max(0, nowMs / 1000 - ts);
  if (s < 60) {
    return `${Math.floor(s)}s ago`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ago`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)}h ago`;
  }
  return `${Math.floor(s / 86400)}d ago`;
}

export function duration(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s)) {
    return '';
  }
  if (s < 1) {
    return `${(s * 1000).toFixed(s < 0.01 ? 2 : 0)} ms`;
  }
  if (s < 120) {
    return `${s.toFixed(1)} s`;
  }
  if (s < 7200) {
    return `${(s / 60).toFixed(1)} min`;
  }
  return `${(s / 3600).toFixed(1)} h`;
}

export function ErrorLine(props: { error: string | null }): JSX.Element | null {
  return props.error ? <div className="idds-error">{props.error}</div> : null;
}
