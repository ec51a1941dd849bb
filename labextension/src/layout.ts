/**
 * Layered layout of a run graph. Small graphs go through dagre (network
 * simplex ranking, crossing minimisation, edge routing); large ones through a
 * linear-time layered layout here (longest-path layers, a few barycenter
 * sweeps, straight edges) because dagre takes seconds to minutes on dense
 * 1,000-node graphs while this takes milliseconds.
 */
import dagre from '@dagrejs/dagre';

import { longestPathLayers } from './model';

export type LayoutEngine = 'auto' | 'dagre' | 'layers';

export interface ILayoutOptions {
  engine?: LayoutEngine;
  /** 'TB' (top to bottom) or 'LR' (left to right) */
  direction?: 'TB' | 'LR';
  nodeWidth?: number;
  nodeHeight?: number;
  nodeGap?: number;
  layerGap?: number;
  /** auto: dagre up to this many nodes + edges */
  dagreMaxSize?: number;
  /** crossing-reduction sweeps of the layered layout */
  sweeps?: number;
}

export interface IPoint {
  x: number;
  y: number;
}

export interface ILayoutNode extends IPoint {
  id: string;
  width: number;
  height: number;
  layer: number;
}

export interface ILayoutEdge {
  /** position of the edge in the input */
  index: number;
  source: string;
  target: string;
  points: IPoint[];
}

export interface ILayout {
  engine: 'dagre' | 'layers';
  nodes: Map<string, ILayoutNode>;
  edges: ILayoutEdge[];
  width: number;
  height: number;
  /** milliseconds spent in the layout */
  ms: number;
}

interface IInput {
  nodes: Array<{ id: string; width?: number; height?: number }>;
  edges: Array<{ source: string; target: string; kind?: string }>;
}

const DEFAULTS: Required<ILayoutOptions> = {
  engine: 'auto',
  direction: 'TB',
  nodeWidth: 168,
  nodeHeight: 52,
  nodeGap: 24,
  layerGap: 56,
  dagreMaxSize: 400,
  sweeps: 4
};

function now(): number {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}

export function chooseEngine(g: IInput, opts: ILayoutOptions = {}): 'dagre' | 'layers' {
  const o = { ...DEFAULTS, ...opts };
  if (o.engine === 'dagre' || o.engine === 'layers') {
    return o.engine;
  }
  return g.nodes.length + g.edges.length <= o.dagreMaxSize ? 'dagre' : 'layers';
}

export function layoutGraph(g: IInput, opts: ILayoutOptions = {}): ILayout {
  const o = { ...DEFAULTS, ...opts };
  const t0 = now();
  const out = chooseEngine(g, o) === 'dagre' ? dagreLayout(g, o) : layeredLayout(g, o);
  out.ms = now() - t0;
  return out;
}

function dagreLayout(g: IInput, o: Required<ILayoutOptions>): ILayout {
  const dg = new dagre.graphlib.Graph({ multigraph: true });
  dg.setGraph({ rankdir: o.direction, nodesep: o.nodeGap, ranksep: o.layerGap, marginx: 8, marginy: 8 });
  dg.setDefaultEdgeLabel(() => ({}));
  for (const n of g.nodes) {
    dg.setNode(n.id, { width: n.width ?? o.nodeWidth, height: n.height ?? o.nodeHeight });
  }
  g.edges.forEach((e, i) => {
    if (e.source !== e.target && dg.hasNode(e.source) && dg.hasNode(e.target)) {
      // iteration chains and loop edges rank their targets below; branch edges too
      dg.setEdge(e.source, e.target, { minlen: 1 }, String(i));
    }
  });
  dagre.layout(dg);
  const nodes = new Map<string, ILayoutNode>();
  for (const n of g.nodes) {
    const d = dg.node(n.id) as { x: number; y: number; width: number; height: number; rank?: number };
    nodes.set(n.id, { id: n.id, x: d.x, y: d.y, width: d.width, height: d.height, layer: d.rank ?? 0 });
  }
  const edges: ILayoutEdge[] = [];
  g.edges.forEach((e, i) => {
    const d = dg.edge({ v: e.source, w: e.target, name: String(i) }) as { points?: IPoint[] } | undefined;
    if (d && d.points) {
      edges.push({ index: i, source: e.source, target: e.target, points: d.points.map(p => ({ x: p.x, y: p.y })) });
    } else if (nodes.has(e.source) && nodes.has(e.target)) {
      edges.push({
        index: i,
        source: e.source,
        target: e.target,
        points: straight(nodes.get(e.source)!, nodes.get(e.target)!, o.direction)
      });
    }
  });
  const gg = dg.graph() as { width?: number; height?: number };
  return { engine: 'dagre', nodes, edges, width: gg.width ?? 0, height: gg.height ?? 0, ms: 0 };
}

function straight(a: ILayoutNode, b: ILayoutNode, dir: 'TB' | 'LR'): IPoint[] {
  if (dir === 'LR') {
    return [
      { x: a.x + a.width / 2, y: a.y },
      { x: b.x - b.width / 2, y: b.y }
    ];
  }
  return [
    { x: a.x, y: a.y + a.height / 2 },
    { x: b.x, y: b.y - b.height / 2 }
  ];
}

/** Longest-path layers, barycenter ordering sweeps, centred rows, straight edges: O(sweeps·(V+E)·log V). */
export function layeredLayout(g: IInput, opts: ILayoutOptions = {}): ILayout {
  const o = { ...DEFAULTS, ...opts };
  const t0 = now();
  const ids = g.nodes.map(n => n.id);
  const layerOf = longestPathLayers(ids, g.edges);
  const rows: string[][] = [];
  for (const id of ids) {
    const l = layerOf.get(id) ?? 0;
    (rows[l] = rows[l] || []).push(id);
  }
  for (let l = 0; l < rows.length; l++) {
    rows[l] = rows[l] || [];
  }
  const ups = new Map<string, string[]>();
  const downs = new Map<string, string[]>();
  for (const id of ids) {
    ups.set(id, []);
    downs.set(id, []);
  }
  for (const e of g.edges) {
    if (ups.has(e.target) && downs.has(e.source) && e.source !== e.target) {
      ups.get(e.target)!.push(e.source);
      downs.get(e.source)!.push(e.target);
    }
  }
  const order = new Map<string, number>();
  const renumber = (row: string[]): void => row.forEach((id, i) => order.set(id, i / Math.max(row.length - 1, 1)));
  rows.forEach(renumber);
  const sweep = (row: string[], nbrs: Map<string, string[]>): void => {
    const bary = new Map<string, number>();
    for (const id of row) {
      const ns = nbrs.get(id)!;
      if (ns.length) {
        let s = 0;
        for (const n of ns) {
          s += order.get(n)!;
        }
        bary.set(id, s / ns.length);
      } else {
        bary.set(id, order.get(id)!);
      }
    }
    row.sort((a, b) => bary.get(a)! - bary.get(b)!);
    renumber(row);
  };
  for (let s = 0; s < o.sweeps; s++) {
    for (let l = 1; l < rows.length; l++) {
      sweep(rows[l], ups);
    }
    for (let l = rows.length - 2; l >= 0; l--) {
      sweep(rows[l], downs);
    }
  }
  const sizeOf = new Map(g.nodes.map(n => [n.id, { w: n.width ?? o.nodeWidth, h: n.height ?? o.nodeHeight }]));
  const lr = o.direction === 'LR';
  const along = lr ? o.nodeWidth : o.nodeHeight; // size along the layer axis
  const across = (lr ? o.nodeHeight : o.nodeWidth) + o.nodeGap;
  let widest = 0;
  for (const row of rows) {
    widest = Math.max(widest, row.length);
  }
  const nodes = new Map<string, ILayoutNode>();
  const span = widest * across;
  rows.forEach((row, l) => {
    const offset = (span - row.length * across) / 2 + across / 2;
    const main = 8 + along / 2 + l * (along + o.layerGap);
    row.forEach((id, i) => {
      const sz = sizeOf.get(id)!;
      const cross = 8 + offset + i * across;
      nodes.set(id, { id, x: lr ? main : cross, y: lr ? cross : main, width: sz.w, height: sz.h, layer: l });
    });
  });
  const edges: ILayoutEdge[] = [];
  g.edges.forEach((e, i) => {
    const a = nodes.get(e.source);
    const b = nodes.get(e.target);
    if (a && b && a !== b) {
      edges.push({ index: i, source: e.source, target: e.target, points: straight(a, b, o.direction) });
    }
  });
  const extentMain = 16 + rows.length * (along + o.layerGap) - o.layerGap;
  const extentCross = 16 + span;
  return {
    engine: 'layers',
    nodes,
    edges,
    width: lr ? extentMain : extentCross,
    height: lr ? extentCross : extentMain,
    ms: now() - t0
  };
}

/** SVG path of an edge's points (a smooth curve through dagre's control points). */
export function edgePath(points: IPoint[]): string {
  if (points.length === 0) {
    return '';
  }
  if (points.length === 2) {
    return `M${points[0].x},${points[0].y}L${points[1].x},${points[1].y}`;
  }
  let d = `M${points[0].x},${points[0].y}`;
  for (let i = 1; i < points.length - 1; i++) {
    const mx = (points[i].x + points[i + 1].x) / 2;
    const my = (points[i].y + points[i + 1].y) / 2;
    d += `Q${points[i].x},${points[i].y} ${mx},${my}`;
  }
  const last = points[points.length - 1];
  return d + `L${last.x},${last.y}`;
}
