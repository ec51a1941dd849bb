/**
 * The Monitor panel: throughput, failures and queue depth over the last hours,
 * from the aggregate monitor API (`GET monitor`): per backend for throughput and
 * failures, per owner for the queue depth. A user sees their own runs, an admin
 * everyone's. Refreshed every few seconds while it is open.
 */
import { ReactWidget } from '@jupyterlab/apputils';
import * as React from 'react';

import { IddsContext } from './context';
import { IAggregate, QUEUED, REFRESH_MS, WINDOWS, total, traces } from './monitorseries';
import { loadPlotly } from './studyview';
import { ErrorLine } from './widgets';

function MonitorPlot(props: { data: unknown[]; title: string; yTitle: string; className: string }): JSX.Element {
  const ref = React.useRef<HTMLDivElement>(null);
  React.useEffect(() => {
    let live = true;
    void loadPlotly().then(P => {
      if (live && ref.current) {
        const fg = getComputedStyle(document.body).getPropertyValue('--jp-ui-font-color1').trim() || '#222';
        void P.react(
          ref.current,
          props.data,
          {
            title: { text: props.title },
            paper_bgcolor: 'rgba(0,0,0,0)',
            plot_bgcolor: 'rgba(0,0,0,0)',
            font: { color: fg, size: 11 },
            margin: { l: 50, r: 20, t: 30, b: 40 },
            yaxis: { title: { text: props.yTitle }, rangemode: 'tozero' },
            showlegend: true,
            barmode: 'stack',
            bargap: 0
          },
          { displaylogo: false, responsive: true }
        );
      }
    });
    return () => {
      live = false;
    };
  });
  React.useEffect(() => {
    const el = ref.current;
    return () => {
      if (el) {
        void loadPlotly().then(P => P.purge(el));
      }
    };
  }, []);
  return <div ref={ref} className={`idds-plot ${props.className}`} />;
}

function MonitorBody(props: { ctx: IddsContext }): JSX.Element {
  const [hours, setHours] = React.useState(1);
  const [data, setData] = React.useState<IAggregate | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  React.useEffect(() => {
    let live = true;
    const load = async (): Promise<void> => {
      try {
        const m = await props.ctx.api.json<IAggregate>('monitor', {}, { hours, bucket: (hours * 3600) / 120 });
        if (live) {
          setData(m);
          setError(null);
        }
      } catch (err) {
        if (live) {
          setError((err as Error).message);
        }
      }
    };
    void load();
    const timer = window.setInterval(() => void load(), REFRESH_MS);
    return () => {
      live = false;
      window.clearInterval(timer);
    };
  }, [hours]);

  const perSecond = data ? 1 / data.bucket_s : 1;
  return (
    <div className="idds-study idds-monitor">
      <div className="idds-monitor-header" style={{ display: 'flex', gap: 16, alignItems: 'center', padding: 6 }}>
        <h2 style={{ margin: 0, fontSize: 'var(--jp-ui-font-size2)' }}>Monitor</h2>
        <label>
          last{' '}
          <select
            className="idds-monitor-hours"
            value={hours}
            onChange={e => setHours(Number((e.target as HTMLSelectElement).value))}
          >
            {WINDOWS.map(h => (
              <option key={h} value={h}>
                {h} h
              </option>
            ))}
          </select>
        </label>
        {data && (
          <span className="idds-monitor-totals">
            <span className="idds-monitor-finished">finished {total(data.by_backend, ['finished'])}</span>
            {' · '}
            <span className="idds-monitor-failed">failed {total(data.by_backend, ['failed'])}</span>
            {' · '}
            <span className="idds-monitor-queued">queued {total(data.by_backend, QUEUED)}</span>
            {' · '}
            <span>{data.owner === null ? 'all users' : `user ${data.owner}`}</span>
          </span>
        )}
      </div>
      {error && <ErrorLine error={error} />}
      {data && (
        <div className="idds-plots">
          <MonitorPlot
            className="idds-monitor-throughput"
            title="Throughput (jobs finished per second, by backend)"
            yTitle="jobs/s"
            data={traces(data.times, data.series.finished, perSecond)}
          />
          <MonitorPlot
            className="idds-monitor-failures"
            title="Failures (jobs failed per bucket, by backend)"
            yTitle="jobs"
            data={traces(data.times, data.series.failed)}
          />
          <MonitorPlot
            className="idds-monitor-queue"
            title="Queue depth (jobs waiting to run, by owner)"
            yTitle="jobs"
            data={traces(data.times, data.series.queue_depth, 1, false)}
          />
        </div>
      )}
    </div>
  );
}

/** The Monitor panel's widget (main area). */
export class MonitorView extends ReactWidget {
  constructor(readonly ctx: IddsContext) {
    super();
    this.addClass('idds-monitor-widget');
  }

  render(): JSX.Element {
    return <MonitorBody ctx={this.ctx} />;
  }
}
