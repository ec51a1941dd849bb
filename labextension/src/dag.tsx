/** The DAG drawing: SVG nodes coloured by status with job counts, typed edges, pan and zoom. */
import * as React from 'react';

import { ILayout, edgePath } from './layout';
import { IGraphEdge, IGraphNode, IRunGraph, formatCount, orderedCounts } from './model';

export interface IDagViewProps {
  graph: IRunGraph;
  layout: ILayout;
  selected: string | null;
  onSelect: (id: string | null) => void;
  /** bumped to ask for a fit-to-view */
  fitToken: number;
  onCommit?: () => void;
}

const EDGE_LABEL: Record<string, string> = {
  dep: 'dependency',
  job_dep: 'job dependency',
  true: 'branch if true',
  false: 'branch if false',
  on_failure: 'on failure',
  loop: 'loop body',
  iteration: 'next iteration'
};

function truncate(s: string, n: number): string {
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

function edgeClass(e: IGraphEdge): string {
  let c = `idds-edge idds-edge-${e.kind}`;
  if (e.taken === true) {
    c += ' idds-edge-taken';
  } else if (e.taken === false) {
    c += ' idds-edge-nottaken';
  }
  return c;
}

function NodeShape(props: {
  n: IGraphNode;
  x: number;
  y: number;
  w: number;
  h: number;
  selected: boolean;
  onSelect: (id: string) => void;
}): JSX.Element {
  const { n, x, y, w, h } = props;
  const left = x - w / 2;
  const top = y - h / 2;
  const status = n.status || 'none';
  const cls = `idds-node idds-node-${n.kind === 'condition' || n.kind === 'loop' ? n.kind : 'work'} idds-status-${status}${
    props.selected ? ' idds-node-selected' : ''
  }`;
  const onClick = (e: React.MouseEvent): void => {
    e.stopPropagation();
    props.onSelect(n.id);
  };
  if (n.kind === 'condition') {
    const v = n.value === true ? 'true' : n.value === false ? 'false' : '?';
    return (
      <g className={cls} data-node={n.id} onClick={onClick}>
        <title>{`condition ${n.id}: ${v}`}</title>
        <polygon points={`${x},${top} ${left + w},${y} ${x},${top + h} ${left},${y}`} />
        <text x={x} y={y - 3} className="idds-node-label" textAnchor="middle">
          {truncate(n.label, 18)}
        </text>
        <text x={x} y={y + 12} className="idds-node-sub" textAnchor="middle">
          {v}
        </text>
      </g>
    );
  }
  if (n.kind === 'loop') {
    return (
      <g className={cls} data-node={n.id} onClick={onClick}>
        <title>{`loop ${n.id}: ${n.iterations ?? 0} iteration(s)`}</title>
        <rect x={left} y={top} width={w} height={h} rx={h / 2} />
        <text x={x} y={y - 3} className="idds-node-label" textAnchor="middle">
          ↻ {truncate(n.label, 20)}
        </text>
        <text x={x} y={y + 12} className="idds-node-sub" textAnchor="middle">
          {n.iterations ?? 0} iteration{n.iterations === 1 ? '' : 's'}
        </text>
      </g>
    );
  }
  const total = Math.max(n.agg.total, 1);
  const parts = orderedCounts(n.jobs);
  let acc = 0;
  const barW = w - 12;
  const counts = parts.map(([s, c]) => `${s} ${c}`).join(', ');
  return (
    <g className={cls} data-node={n.id} data-status={status} onClick={onClick}>
      <title>{`${n.id}\n${n.status || ''}${counts ? '\n' + counts : ''}`}</title>
      <rect x={left} y={top} width={w} height={h} rx={5} />
      <text x={left + 8} y={top + 16} className="idds-node-label">
        {truncate(n.label, 22)}
      </text>
      <text x={left + 8} y={top + 31} className="idds-node-sub">
        {n.status || ''} · {formatCount(n.agg.done)}/{formatCount(n.agg.total)}
        {n.agg.failed ? ` · ${formatCount(n.agg.failed)}✗` : ''}
      </text>
      <g className="idds-node-bar">
        <rect x={left + 6} y={top + h - 11} width={barW} height={5} className="idds-bar-track" />
        {parts.map(([s, c]) => {
          const bw = (barW * c) / total;
          const el = (
            <rect key={s} x={left + 6 + acc} y={top + h - 11} width={bw} height={5} className={`idds-fill-${s}`} />
          );
          acc += bw;
          return el;
        })}
      </g>
    </g>
  );
}

export function DagView(props: IDagViewProps): JSX.Element {
  const { graph, layout } = props;
  const ref = React.useRef<SVGSVGElement>(null);
  const [view, setView] = React.useState({ k: 1, x: 0, y: 0 });
  const drag = React.useRef<{ x: number; y: number; vx: number; vy: number } | null>(null);
  const touched = React.useRef(false);

  const fit = React.useCallback(() => {
    const el = ref.current;
    if (!el) {
      return;
    }
    const W = el.clientWidth || 800;
    const H = el.clientHeight || 500;
    const k = Math.min(1, W / Math.max(layout.width, 1), H / Math.max(layout.height, 1));
    const kk = Math.max(k, 0.02);
    setView({ k: kk, x: (W - layout.width * kk) / 2, y: Math.max(8, Math.min(24, (H - layout.height * kk) / 2)) });
  }, [layout]);

  React.useLayoutEffect(() => {
    touched.current = false;
    fit();
  }, [props.fitToken, layout.engine, layout.width, layout.height]);

  // Re-fit when the view is resized (side panel opened, window resized) until the user pans or zooms.
  React.useEffect(() => {
    const el = ref.current;
    if (!el || typeof ResizeObserver === 'undefined') {
      return;
    }
    const ro = new ResizeObserver(() => {
      if (!touched.current) {
        fit();
      }
    });
    ro.observe(el);
    return () => ro.disconnect();
  }, [fit]);

  React.useLayoutEffect(() => {
    props.onCommit?.();
  });

  React.useEffect(() => {
    const el = ref.current;
    if (!el) {
      return;
    }
    const onWheel = (e: WheelEvent): void => {
      e.preventDefault();
      touched.current = true;
      const r = el.getBoundingClientRect();
      const mx = e.clientX - r.left;
      const my = e.clientY - r.top;
      setView(v => {
        const k = Math.min(4, Math.max(0.02, v.k * Math.exp(-e.deltaY * 0.0015)));
        return { k, x: mx - ((mx - v.x) * k) / v.k, y: my - ((my - v.y) * k) / v.k };
      });
    };
    el.addEventListener('wheel', onWheel, { passive: false });
    return () => el.removeEventListener('wheel', onWheel);
  }, []);

  const nodeEls: JSX.Element[] = [];
  for (const n of graph.nodes) {
    const p = layout.nodes.get(n.id);
    if (p) {
      nodeEls.push(
        <NodeShape
          key={n.id}
          n={n}
          x={p.x}
          y={p.y}
          w={p.width}
          h={p.height}
          selected={props.selected === n.id}
          onSelect={props.onSelect}
        />
      );
    }
  }
  const kinds = new Set<string>();
  const edgeEls: JSX.Element[] = [];
  for (const le of layout.edges) {
    const e = graph.edges[le.index];
    if (!e) {
      continue;
    }
    kinds.add(e.kind);
    edgeEls.push(
      <path key={le.index} d={edgePath(le.points)} className={edgeClass(e)} markerEnd="url(#idds-arrow)">
        <title>{`${e.source} → ${e.target}: ${EDGE_LABEL[e.kind] || e.kind}${e.taken === false ? ' (not taken)' : e.taken ? ' (taken)' : ''}`}</title>
      </path>
    );
  }

  return (
    <div className="idds-dag">
      <svg
        ref={ref}
        className="idds-dag-svg"
        onMouseDown={e => {
          drag.current = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y };
        }}
        onMouseMove={e => {
          const d = drag.current;
          if (d) {
            touched.current = true;
            setView(v => ({ ...v, x: d.vx + e.clientX - d.x, y: d.vy + e.clientY - d.y }));
          }
        }}
        onMouseUp={() => (drag.current = null)}
        onMouseLeave={() => (drag.current = null)}
        onClick={() => props.onSelect(null)}
      >
        <defs>
          <marker
            id="idds-arrow"
            viewBox="0 0 10 10"
            refX="9"
            refY="5"
            markerWidth="7"
            markerHeight="7"
            orient="auto-start-reverse"
          >
            <path d="M0,0L10,5L0,10z" className="idds-arrow" />
          </marker>
        </defs>
        <g transform={`translate(${view.x},${view.y}) scale(${view.k})`}>
          <g className="idds-edges">{edgeEls}</g>
          <g className="idds-nodes">{nodeEls}</g>
        </g>
      </svg>
      <div className="idds-legend">
        {Array.from(kinds)
          .sort()
          .map(k => (
            <span key={k} className="idds-legend-item">
              <svg width="26" height="8">
                <line x1="0" y1="4" x2="26" y2="4" className={`idds-edge idds-edge-${k}`} />
              </svg>
              {EDGE_LABEL[k] || k}
            </span>
          ))}
        {graph.edges.some(e => e.taken === false) ? (
          <span className="idds-legend-item">
            <svg width="26" height="8">
              <line x1="0" y1="4" x2="26" y2="4" className="idds-edge idds-edge-true idds-edge-nottaken" />
            </svg>
            not taken
          </span>
        ) : null}
        <span className="idds-legend-meta">
          {graph.nodes.length} nodes · layout {layout.engine} {layout.ms.toFixed(0)} ms
        </span>
        <button
          className="jp-mod-styled idds-fit"
          onClick={() => {
            touched.current = false;
            fit();
          }}
        >
          Fit
        </button>
      </div>
    </div>
  );
}
