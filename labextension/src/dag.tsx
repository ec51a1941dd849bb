/**
 * The DAG drawing: SVG nodes coloured by status with job counts, typed edges,
 * pan and zoom. Large runs are drawn as an overview: collapsed groups of works
 * (click one to expand it), semantic zoom (labels stay readable when zoomed
 * out, counts, bars and each member's status appear as you zoom in), a
 * minimap and a search box that finds and centres a work.
 */
import * as React from 'react';

import { IGroup, IViewEdge, IViewNode, ZoomLevel, gridCells, zoomLevel } from './grouping';
import { ILayout, ILayoutNode, edgePath } from './layout';
import { IWorkProvenance, memoLabel, memoState } from './memo';
import { IGraphEdge, IGraphNode, formatCount, orderedCounts } from './model';

export interface IDagViewProps {
  graph: { nodes: IViewNode[]; edges: IGraphEdge[] };
  layout: ILayout;
  selected: string | null;
  onSelect: (id: string | null) => void;
  /** bumped to ask for a fit-to-view */
  fitToken: number;
  onCommit?: () => void;
  /** expand or collapse a group */
  onToggleGroup?: (id: string) => void;
  /** groups drawn expanded (a frame with a collapse handle around their members) */
  expanded?: ReadonlySet<string>;
  /** member ids of every group, expanded or not */
  groups?: Map<string, IGroup>;
  /** searches: returns how many works match and which one is shown (it is expanded, selected and centred) */
  onFind?: (query: string, nth: number) => { matches: number; id: string | null };
  /** centre this node (when it is drawn) each time `token` changes */
  focus?: { id: string; token: number } | null;
  onCollapseAll?: () => void;
  /** per work: jobs that ran, were cached, failed (a cached work is marked) */
  memo?: Map<string, IWorkProvenance>;
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

/** Characters of a label of font size `fs` that fit in a box `w` wide. */
function fitChars(w: number, fs: number): number {
  return Math.max(3, Math.floor((w - 10) / (fs * 0.62)));
}

const GROUP_BY: Record<string, string> = { 'sub-workflow': 'sub-workflow', prefix: 'name prefix', level: 'level' };

/** A collapsed group: a stack of cards with its label, member count and aggregate status; zoomed in, each member's status. */
function GroupShape(props: {
  n: IViewNode;
  g: IGroup;
  x: number;
  y: number;
  w: number;
  h: number;
  selected: boolean;
  level: ZoomLevel;
  k: number;
  onToggle: (id: string) => void;
  /** members whose jobs all came from the cache */
  cached: number;
}): JSX.Element {
  const { n, g, x, y, w, h, level, k } = props;
  const left = x - w / 2;
  const top = y - h / 2;
  const status = g.status || 'none';
  const failed = g.statuses.failed || 0;
  const ws = Object.entries(g.statuses)
    .sort((a, b) => b[1] - a[1])
    .map(([s, c]) => `${s === 'null' ? 'not started' : s} ${c}`)
    .join(', ');
  const onClick = (e: React.MouseEvent): void => {
    e.stopPropagation();
    props.onToggle(g.id);
  };
  const cls = `idds-node idds-node-group idds-status-${status}${props.selected ? ' idds-node-selected' : ''}`;
  const title = `${g.label}: ${g.members.length} works grouped by ${GROUP_BY[g.by]} (click to expand)\n${ws}\njobs ${formatCount(g.agg.done)}/${formatCount(g.agg.total)} done`;
  const stack = <path className="idds-group-stack" d={`M${left + 5},${top - 5}h${w}v${h}`} />;
  if (level === 'overview') {
    const fs = Math.max(13, 12 / k);
    return (
      <g className={cls} data-node={n.id} data-status={status} data-members={g.members.length} onClick={onClick}>
        <title>{title}</title>
        <rect x={left} y={top} width={w} height={h} rx={6} />
        {stack}
        <text x={x} y={y + fs * 0.35} className="idds-node-label" textAnchor="middle" style={{ fontSize: fs }}>
          {truncate(`${g.label} (${g.members.length})`, fitChars(w, fs))}
        </text>
      </g>
    );
  }
  let grid: JSX.Element | null = null;
  if (level === 'detail') {
    const gw = w - 12;
    const gh = h - 40;
    const { size, cols } = gridCells(g.members.length, gw, gh);
    const cell = Math.max(size - 1, 0.5);
    grid = (
      <g className="idds-group-grid">
        {g.memberStatuses.map((s, i) => (
          <path
            key={i}
            d={`M${left + 6 + (i % cols) * size},${top + 36 + Math.floor(i / cols) * size}h${cell}v${cell}h${-cell}z`}
            className={`idds-cell idds-cell-${s ?? 'none'}`}
          >
            <title>{`${g.members[i]}: ${s ?? 'not started'}`}</title>
          </path>
        ))}
      </g>
    );
  }
  const total = Math.max(g.agg.total, 1);
  let acc = 0;
  const barW = w - 12;
  return (
    <g className={cls} data-node={n.id} data-status={status} data-members={g.members.length} onClick={onClick}>
      <title>{title}</title>
      <rect x={left} y={top} width={w} height={h} rx={6} />
      {stack}
      <text x={left + 8} y={top + 16} className="idds-node-label">
        ▸ {truncate(g.label, 20)}
      </text>
      <text x={left + 8} y={top + 31} className="idds-node-sub">
        {g.members.length} works · {g.status || 'not started'} · {formatCount(g.agg.done)}/{formatCount(g.agg.total)}
        {failed ? ` · ${failed}✗` : ''}
        {props.cached ? ` · ${props.cached} cached` : ''}
      </text>
      {grid ?? (
        <g className="idds-node-bar">
          <rect x={left + 6} y={top + h - 11} width={barW} height={5} className="idds-bar-track" />
          {orderedCounts(g.jobs).map(([s, c]) => {
            const bw = (barW * c) / total;
            const el = (
              <rect key={s} x={left + 6 + acc} y={top + h - 11} width={bw} height={5} className={`idds-fill-${s}`} />
            );
            acc += bw;
            return el;
          })}
        </g>
      )}
    </g>
  );
}

/** The frame around an expanded group's members, with a handle that collapses it. */
function GroupFrame(props: {
  g: IGroup;
  layout: ILayout;
  k: number;
  onToggle: (id: string) => void;
}): JSX.Element | null {
  const { g, layout } = props;
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (const id of g.members) {
    const p = layout.nodes.get(id);
    if (p) {
      x0 = Math.min(x0, p.x - p.width / 2);
      y0 = Math.min(y0, p.y - p.height / 2);
      x1 = Math.max(x1, p.x + p.width / 2);
      y1 = Math.max(y1, p.y + p.height / 2);
    }
  }
  if (x0 === Infinity) {
    return null;
  }
  const fs = Math.max(11, 11 / props.k);
  return (
    <g className="idds-group-frame" data-group={g.id}>
      <rect x={x0 - 6} y={y0 - 6} width={x1 - x0 + 12} height={y1 - y0 + 12} rx={8} />
      <text
        x={x0 - 4}
        y={y0 - 10}
        className="idds-group-collapse"
        style={{ fontSize: fs }}
        onClick={e => {
          e.stopPropagation();
          props.onToggle(g.id);
        }}
      >
        <title>Collapse this group</title>▾ {g.label} ({g.members.length}) — collapse
      </text>
    </g>
  );
}

const MINI_W = 180;
const MINI_H = 130;

/** The whole graph in a corner, with the part in view; click or drag in it to move there. */
function Minimap(props: {
  layout: ILayout;
  graph: { nodes: IGraphNode[] };
  view: { k: number; x: number; y: number };
  size: { W: number; H: number };
  onCentre: (x: number, y: number) => void;
}): JSX.Element {
  const { layout, view, size } = props;
  const s = Math.min(MINI_W / Math.max(layout.width, 1), MINI_H / Math.max(layout.height, 1));
  // the graph centred in a box of fixed size (a long chain is a thin strip in the middle)
  const ox = (MINI_W - layout.width * s) / 2;
  const oy = (MINI_H - layout.height * s) / 2;
  const rects = React.useMemo(() => {
    const out: JSX.Element[] = [];
    for (const n of props.graph.nodes) {
      const p = layout.nodes.get(n.id);
      if (p) {
        out.push(
          <rect
            key={n.id}
            x={ox + (p.x - p.width / 2) * s}
            y={oy + (p.y - p.height / 2) * s}
            width={Math.max(p.width * s, 1)}
            height={Math.max(p.height * s, 1)}
            className={`idds-cell idds-cell-${n.status ?? 'none'}`}
          />
        );
      }
    }
    return out;
  }, [layout, props.graph, s, ox, oy]);
  const drag = React.useRef(false);
  const centre = (e: React.MouseEvent<SVGSVGElement>): void => {
    const r = e.currentTarget.getBoundingClientRect();
    props.onCentre((e.clientX - r.left - ox) / s, (e.clientY - r.top - oy) / s);
  };
  // the view in graph units
  const vx = -view.x / view.k;
  const vy = -view.y / view.k;
  return (
    <svg
      className="idds-minimap"
      width={MINI_W}
      height={MINI_H}
      onMouseDown={e => {
        e.stopPropagation();
        drag.current = true;
        centre(e);
      }}
      onMouseMove={e => drag.current && centre(e)}
      onMouseUp={() => (drag.current = false)}
      onMouseLeave={() => (drag.current = false)}
      onClick={e => e.stopPropagation()}
    >
      <title>Minimap: click or drag to move the view</title>
      <rect x={0} y={0} width={MINI_W} height={MINI_H} className="idds-minimap-bg" />
      {rects}
      <rect
        className="idds-minimap-view"
        x={ox + vx * s}
        y={oy + vy * s}
        width={(size.W / view.k) * s}
        height={(size.H / view.k) * s}
      />
    </svg>
  );
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
  level: ZoomLevel;
  k: number;
  memo?: IWorkProvenance;
}): JSX.Element {
  const { n, x, y, w, h, level, k } = props;
  const memo = memoState(props.memo);
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
  if (level === 'overview') {
    // zoomed out: the label alone, at a size that stays readable on screen
    const fs = Math.max(12, 11 / k);
    return (
      <g className={cls} data-node={n.id} data-status={status} data-memo={memo ?? undefined} onClick={onClick}>
        <title>{`${n.id}\n${n.status || ''}${counts ? '\n' + counts : ''}${memo ? '\n' + memoLabel(props.memo) : ''}`}</title>
        <rect x={left} y={top} width={w} height={h} rx={5} />
        <text x={x} y={y + fs * 0.35} className="idds-node-label" textAnchor="middle" style={{ fontSize: fs }}>
          {truncate(n.label, fitChars(w, fs))}
        </text>
      </g>
    );
  }
  return (
    <g className={cls} data-node={n.id} data-status={status} data-memo={memo ?? undefined} onClick={onClick}>
      <title>{`${n.id}\n${n.status || ''}${counts ? '\n' + counts : ''}${memo ? '\n' + memoLabel(props.memo) : ''}`}</title>
      <rect x={left} y={top} width={w} height={h} rx={5} />
      <text x={left + 8} y={top + 16} className="idds-node-label">
        {truncate(n.label, memo ? 14 : 22)}
      </text>
      {memo ? (
        <text x={left + w - 6} y={top + 15} className={`idds-memo idds-memo-${memo}`} textAnchor="end">
          {memo === 'cached' ? '⟲ cached' : memo === 'mixed' ? '⟲ part cached' : 'ran'}
        </text>
      ) : null}
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
  const [size, setSize] = React.useState({ W: 800, H: 500 });
  const drag = React.useRef<{ x: number; y: number; vx: number; vy: number } | null>(null);
  const touched = React.useRef(false);
  /** a node the view stays centred on (after a search) until the user pans or zooms */
  const centred = React.useRef<string | null>(null);
  const [query, setQuery] = React.useState('');
  const [found, setFound] = React.useState<{ query: string; nth: number; matches: number } | null>(null);

  const measure = (): { W: number; H: number } => {
    const el = ref.current;
    return { W: el?.clientWidth || 800, H: el?.clientHeight || 500 };
  };

  const fit = React.useCallback(() => {
    if (!ref.current) {
      return;
    }
    const { W, H } = measure();
    const k = Math.min(1, W / Math.max(layout.width, 1), H / Math.max(layout.height, 1));
    const kk = Math.max(k, 0.02);
    setView({ k: kk, x: (W - layout.width * kk) / 2, y: Math.max(8, Math.min(24, (H - layout.height * kk) / 2)) });
  }, [layout]);

  /** Centres graph point (gx, gy) at scale k (the current one when omitted). */
  const centreAt = React.useCallback((gx: number, gy: number, k?: number) => {
    const { W, H } = measure();
    setView(v => {
      const kk = k ?? v.k;
      return { k: kk, x: W / 2 - gx * kk, y: H / 2 - gy * kk };
    });
  }, []);

  const centreNode = React.useCallback(
    (id: string): boolean => {
      const p: ILayoutNode | undefined = layout.nodes.get(id);
      if (!p) {
        return false;
      }
      setView(v => {
        const { W, H } = measure();
        const k = Math.max(v.k, 1.2); // zoomed in: the work's details are drawn
        return { k, x: W / 2 - p.x * k, y: H / 2 - p.y * k };
      });
      return true;
    },
    [layout]
  );

  React.useLayoutEffect(() => {
    setSize(measure());
    if (centred.current && layout.nodes.has(centred.current)) {
      return; // a search result stays in the centre when the layout changes (its group was expanded)
    }
    touched.current = false;
    fit();
  }, [props.fitToken, layout.engine, layout.width, layout.height]);

  // A search result is centred once, as soon as it is drawn (its group may be expanded first).
  const focusDone = React.useRef(0);
  React.useLayoutEffect(() => {
    const f = props.focus;
    if (f && f.token !== focusDone.current && centreNode(f.id)) {
      focusDone.current = f.token;
      touched.current = true;
      centred.current = f.id;
    }
  }, [props.focus?.token, layout]);

  // Re-fit (or re-centre a found work) when the view is resized (side panel opened, window resized).
  React.useEffect(() => {
    const el = ref.current;
    if (!el || typeof ResizeObserver === 'undefined') {
      return;
    }
    const ro = new ResizeObserver(() => {
      setSize(measure());
      if (centred.current) {
        centreNode(centred.current);
      } else if (!touched.current) {
        fit();
      }
    });
    ro.observe(el);
    return () => ro.disconnect();
  }, [fit, centreNode]);

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
      centred.current = null;
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

  const level = zoomLevel(view.k);
  // works are marked cached / ran only in a run where something came from the cache (a re-run)
  const memo = React.useMemo(() => {
    for (const p of props.memo?.values() ?? []) {
      if (p.cached > 0) {
        return props.memo;
      }
    }
    return undefined;
  }, [props.memo]);
  const toggle = (id: string): void => props.onToggleGroup?.(id);
  const nodeEls: JSX.Element[] = [];
  for (const n of graph.nodes) {
    const p = layout.nodes.get(n.id);
    if (!p) {
      continue;
    }
    if (n.group) {
      nodeEls.push(
        <GroupShape
          key={n.id}
          n={n}
          g={n.group}
          x={p.x}
          y={p.y}
          w={p.width}
          h={p.height}
          selected={props.selected === n.id}
          level={level}
          k={view.k}
          onToggle={toggle}
          cached={memo ? n.group.members.filter(m => memoState(memo.get(m)) === 'cached').length : 0}
        />
      );
      continue;
    }
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
        level={level}
        k={view.k}
        memo={memo?.get(n.id)}
      />
    );
  }
  const frames: JSX.Element[] = [];
  for (const id of props.expanded ?? []) {
    const g = props.groups?.get(id);
    if (g) {
      frames.push(<GroupFrame key={id} g={g} layout={layout} k={view.k} onToggle={toggle} />);
    }
  }
  const kinds = new Set<string>();
  const edgeEls: JSX.Element[] = [];
  for (const le of layout.edges) {
    const e = graph.edges[le.index] as IViewEdge | undefined;
    if (!e) {
      continue;
    }
    kinds.add(e.kind);
    const many = e.count > 1 ? ` (${e.count} edges)` : '';
    edgeEls.push(
      <path
        key={le.index}
        d={edgePath(le.points)}
        className={edgeClass(e) + (e.count > 1 ? ' idds-edge-bundle' : '')}
        markerEnd="url(#idds-arrow)"
      >
        <title>{`${e.source} → ${e.target}: ${EDGE_LABEL[e.kind] || e.kind}${e.taken === false ? ' (not taken)' : e.taken ? ' (taken)' : ''}${many}`}</title>
      </path>
    );
  }
  const bigger = layout.width * view.k > size.W + 1 || layout.height * view.k > size.H + 1 || view.k < 0.5;

  const find = (nth: number): void => {
    if (!props.onFind) {
      return;
    }
    const r = props.onFind(query, nth);
    setFound({ query, nth, matches: r.matches });
  };
  const groupCount = graph.nodes.reduce((c, n) => c + (n.group ? 1 : 0), 0);
  const grouped = (props.groups?.size ?? 0) > 0;

  return (
    <div className="idds-dag" data-zoom-level={level} data-zoom={view.k.toFixed(3)} data-groups={groupCount}>
      <div className="idds-dag-toolbar">
        <input
          className="jp-mod-styled idds-dag-search"
          type="search"
          placeholder="Find a work…"
          aria-label="Find a work"
          value={query}
          onChange={e => {
            setQuery(e.target.value);
            setFound(null);
          }}
          onKeyDown={e => {
            if (e.key === 'Enter') {
              const next = found && found.query === query && found.matches > 0 ? (found.nth + 1) % found.matches : 0;
              find(next);
            } else if (e.key === 'Escape') {
              setQuery('');
              setFound(null);
            }
          }}
        />
        <span className="idds-dag-found">
          {found ? (found.matches ? `${found.nth + 1} of ${found.matches}` : 'no match') : ''}
        </span>
        {grouped ? (
          <span className="idds-muted idds-dag-grouping">
            {groupCount} group{groupCount === 1 ? '' : 's'} · click a group to expand it
          </span>
        ) : null}
        {props.expanded && props.expanded.size ? (
          <button className="jp-mod-styled idds-collapse-all" onClick={() => props.onCollapseAll?.()}>
            Collapse all
          </button>
        ) : null}
      </div>
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
            centred.current = null;
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
          <g className="idds-frames">{frames}</g>
          <g className="idds-edges">{edgeEls}</g>
          <g className="idds-nodes">{nodeEls}</g>
        </g>
      </svg>
      {bigger ? (
        <Minimap
          layout={layout}
          graph={graph}
          view={view}
          size={size}
          onCentre={(gx, gy) => {
            touched.current = true;
            centred.current = null;
            centreAt(gx, gy);
          }}
        />
      ) : null}
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
          {graph.nodes.length} nodes · zoom {Math.round(view.k * 100)}% ({level}) · layout {layout.engine}{' '}
          {layout.ms.toFixed(0)} ms
        </span>
        <button
          className="jp-mod-styled idds-fit"
          onClick={() => {
            touched.current = false;
            centred.current = null;
            fit();
          }}
        >
          Fit
        </button>
      </div>
    </div>
  );
}
