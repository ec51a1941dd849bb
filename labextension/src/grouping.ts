/**
 * The overview of a large run graph: works grouped into collapsible nodes that
 * carry their members' aggregate status, the graph drawn with collapsed
 * groups, semantic-zoom levels and the search that finds a work.
 *
 * Pure functions (no DOM): unit-tested, and linear in nodes + edges, so that a
 * 1,000-work run is grouped in a few milliseconds at every refresh.
 */
import {
  IGraphEdge,
  IGraphNode,
  IJobAggregate,
  IRunGraph,
  JobCounts,
  aggregateCounts,
  longestPathLayers,
  sumCounts
} from './model';

/** Graphs with more nodes than this open as an overview of groups. */
export const OVERVIEW_MIN_NODES = 150;

export type GroupBy = 'sub-workflow' | 'prefix' | 'level';

export interface IGroup {
  /** node id of the collapsed group: `group:<key>` (never a work name: those have no `group:` prefix) */
  id: string;
  label: string;
  by: GroupBy;
  /** member node ids, in graph order */
  members: string[];
  /** summed job counts of the members */
  jobs: JobCounts;
  agg: IJobAggregate;
  /** number of member works per work status */
  statuses: JobCounts;
  /** each member's status, in member order (the member grid of the zoomed-in group) */
  memberStatuses: Array<string | null>;
  /** one status for the group (see groupStatus) */
  status: string | null;
}

export interface IGrouping {
  by: GroupBy | null;
  groups: Map<string, IGroup>;
  /** group id of a grouped node */
  groupOf: Map<string, string>;
}

export interface IGroupOptions {
  /** a group larger than this is split in parts (`name (2/3)`) */
  maxGroupSize?: number;
  /** more groups than this and the grouping is not an overview: the next key is tried */
  maxGroups?: number;
}

export interface IViewNode extends IGraphNode {
  /** set on a collapsed group */
  group?: IGroup;
}

export interface IViewEdge extends IGraphEdge {
  /** how many edges of the run graph this edge stands for */
  count: number;
}

/** The graph as drawn: collapsed groups in place of their members. */
export interface IViewGraph extends IRunGraph {
  nodes: IViewNode[];
  edges: IViewEdge[];
  index: Map<string, IViewNode>;
  grouping: IGrouping;
  /** groups drawn expanded (their members are drawn) */
  expanded: ReadonlySet<string>;
}

const GROUP_PREFIX = 'group:';

/** Sub-workflow scope of a node: its loop, else the part of its name before the last `.`. */
export function scopeKey(n: Pick<IGraphNode, 'id' | 'loop'>): string | null {
  if (n.loop) {
    return n.loop;
  }
  const dot = n.id.lastIndexOf('.');
  return dot > 0 ? n.id.slice(0, dot) : null;
}

/** Name prefix of a node: its name without a trailing number (`w03_17` → `w03`, `sim-42` → `sim`). */
export function prefixKey(n: Pick<IGraphNode, 'id'>): string | null {
  const m = /^(.+?)[_\-.:\s#[]*\d+\]?$/.exec(n.id);
  return m ? m[1] : null;
}

const ACTIVE = new Set(['running', 'submitted', 'transforming']);

/**
 * One status for a set of works: running while any runs, else failed when any
 * failed and none finished, subfinished when some failed and some finished,
 * finished when all finished (skipped ones count as done), else the most
 * common remaining status (new, pending, suspended...).
 */
export function groupStatus(statuses: JobCounts): string | null {
  let total = 0;
  let best: string | null = null;
  for (const s in statuses) {
    total += statuses[s];
    if (best === null || statuses[s] > statuses[best]) {
      best = s;
    }
  }
  if (!total) {
    return null;
  }
  for (const s of ACTIVE) {
    if (statuses[s]) {
      return 'running';
    }
  }
  if (statuses.suspended) {
    return 'suspended';
  }
  const finished = statuses.finished || 0;
  const failed = (statuses.failed || 0) + (statuses.aborted || 0);
  const sub = statuses.subfinished || 0;
  const skipped = statuses.skipped || 0;
  if (finished + failed + sub + skipped === total) {
    if (failed + sub === 0) {
      return skipped === total ? 'skipped' : 'finished';
    }
    return finished + sub > 0 ? 'subfinished' : 'failed';
  }
  if (finished + failed + sub > 0) {
    return 'running'; // part done, the rest waiting on it
  }
  return best === 'null' ? null : best;
}

function makeGroup(key: string, label: string, by: GroupBy, members: IGraphNode[]): IGroup {
  const statuses: JobCounts = {};
  for (const m of members) {
    const s = m.status ?? 'null';
    statuses[s] = (statuses[s] || 0) + 1;
  }
  const jobs = sumCounts(members.map(m => m.jobs));
  return {
    id: GROUP_PREFIX + key,
    label,
    by,
    members: members.map(m => m.id),
    jobs,
    agg: aggregateCounts(jobs),
    statuses,
    memberStatuses: members.map(m => m.status),
    status: groupStatus(statuses)
  };
}

function bucket(nodes: IGraphNode[], key: (n: IGraphNode) => string | null): Map<string, IGraphNode[]> {
  const out = new Map<string, IGraphNode[]>();
  for (const n of nodes) {
    if (n.kind === 'condition' || n.kind === 'loop') {
      continue; // control nodes stay visible: they explain the graph
    }
    const k = key(n);
    if (k === null) {
      continue;
    }
    let list = out.get(k);
    if (!list) {
      list = [];
      out.set(k, list);
    }
    list.push(n);
  }
  for (const [k, list] of out) {
    if (list.length < 2) {
      out.delete(k);
    }
  }
  return out;
}

/**
 * A bucketing is an overview when it has at most maxGroups groups covering
 * most of the graph, and leaves more than one node drawn (one group of
 * everything says nothing).
 */
function usable(b: Map<string, IGraphNode[]>, n: number, maxGroups: number): boolean {
  let covered = 0;
  for (const list of b.values()) {
    covered += list.length;
  }
  return b.size >= 1 && b.size <= maxGroups && covered >= n / 2 && b.size + n - covered >= 2;
}

/**
 * Groups the works of a graph for its overview: by sub-workflow (loop or
 * dotted scope) when that gives an overview, else by name prefix, else by
 * level (longest-path layer). Groups too big are split in parts.
 */
export function groupWorks(graph: IRunGraph, opts: IGroupOptions = {}): IGrouping {
  const maxGroupSize = opts.maxGroupSize ?? 100;
  const maxGroups = opts.maxGroups ?? 80;
  const nodes = graph.nodes;
  let by: GroupBy = 'sub-workflow';
  let buckets = bucket(nodes, scopeKey);
  if (!usable(buckets, nodes.length, maxGroups)) {
    by = 'prefix';
    buckets = bucket(nodes, prefixKey);
  }
  if (!usable(buckets, nodes.length, maxGroups)) {
    by = 'level';
    const layers = longestPathLayers(
      nodes.map(n => n.id),
      graph.edges
    );
    buckets = bucket(nodes, n => `level ${layers.get(n.id) ?? 0}`);
  }
  const groups = new Map<string, IGroup>();
  const groupOf = new Map<string, string>();
  for (const [key, list] of buckets) {
    const parts = Math.ceil(list.length / maxGroupSize);
    for (let p = 0; p < parts; p++) {
      const members = list.slice(p * maxGroupSize, (p + 1) * maxGroupSize);
      if (members.length < 2) {
        continue;
      }
      const k = parts > 1 ? `${key} (${p + 1}/${parts})` : key;
      const g = makeGroup(k, k, by, members);
      groups.set(g.id, g);
      for (const m of members) {
        groupOf.set(m.id, g.id);
      }
    }
  }
  return { by: groups.size ? by : null, groups, groupOf };
}

/** No grouping: every node drawn. */
export function noGrouping(): IGrouping {
  return { by: null, groups: new Map(), groupOf: new Map() };
}

/**
 * The graph to draw: each collapsed group becomes one node (where its first
 * member was), edges between groups are merged (`count` says how many), edges
 * inside a collapsed group are dropped.
 */
export function collapseGraph(graph: IRunGraph, grouping: IGrouping, expanded: ReadonlySet<string>): IViewGraph {
  const rep = (id: string): string => {
    const g = grouping.groupOf.get(id);
    return g !== undefined && !expanded.has(g) ? g : id;
  };
  const nodes: IViewNode[] = [];
  const index = new Map<string, IViewNode>();
  for (const n of graph.nodes) {
    const r = rep(n.id);
    if (index.has(r)) {
      continue;
    }
    let v: IViewNode;
    if (r === n.id) {
      v = n;
    } else {
      const g = grouping.groups.get(r)!;
      v = {
        id: g.id,
        label: g.label,
        kind: 'group',
        templateName: g.label,
        status: g.status,
        jobs: g.jobs,
        agg: g.agg,
        loop: null,
        iteration: null,
        group: g
      };
    }
    nodes.push(v);
    index.set(v.id, v);
  }
  const edges: IViewEdge[] = [];
  const byKey = new Map<string, IViewEdge>();
  for (const e of graph.edges) {
    const s = rep(e.source);
    const t = rep(e.target);
    if (s === t) {
      continue;
    }
    const key = `${s}\u0000${t}\u0000${e.kind}`;
    const have = byKey.get(key);
    if (have) {
      have.count++;
      if (e.taken === true || (have.taken === null && e.taken === false)) {
        have.taken = e.taken;
      }
      continue;
    }
    const v: IViewEdge = { source: s, target: t, kind: e.kind, taken: e.taken, count: 1 };
    byKey.set(key, v);
    edges.push(v);
  }
  return { nodes, edges, index, grouping, expanded };
}

export type ZoomLevel = 'overview' | 'summary' | 'detail';

/** Semantic zoom: what a node shows at screen scale `k` (graph units → pixels). */
export function zoomLevel(k: number): ZoomLevel {
  if (k < 0.5) {
    return 'overview';
  }
  return k < 1.1 ? 'summary' : 'detail';
}

/**
 * Works (and groups) matching a search, best first: exact name, then name or
 * label starting with the query, then containing it (case-insensitive).
 */
export function searchNodes(graph: IRunGraph, grouping: IGrouping, query: string, limit = 50): string[] {
  const q = query.trim().toLowerCase();
  if (!q) {
    return [];
  }
  const exact: string[] = [];
  const starts: string[] = [];
  const contains: string[] = [];
  const consider = (id: string, label: string): void => {
    const a = id.toLowerCase();
    const b = label.toLowerCase();
    if (a === q || b === q) {
      exact.push(id);
    } else if (a.startsWith(q) || b.startsWith(q)) {
      starts.push(id);
    } else if (a.includes(q) || b.includes(q)) {
      contains.push(id);
    }
  };
  for (const n of graph.nodes) {
    consider(n.id, n.label);
  }
  for (const g of grouping.groups.values()) {
    consider(g.id, g.label);
  }
  return exact.concat(starts, contains).slice(0, limit);
}

/** The group to expand so that node `id` is drawn (null when it is drawn already). */
export function groupToExpand(grouping: IGrouping, expanded: ReadonlySet<string>, id: string): string | null {
  const g = grouping.groupOf.get(id);
  return g !== undefined && !expanded.has(g) ? g : null;
}

/** Cells of a group's member grid in a w × h box: size and columns, so every member gets a square cell. */
export function gridCells(n: number, w: number, h: number): { size: number; cols: number } {
  if (n <= 0) {
    return { size: 0, cols: 0 };
  }
  let size = Math.min(w, h);
  for (; size > 1; size -= 0.5) {
    const cols = Math.floor(w / size);
    if (cols > 0 && Math.ceil(n / cols) * size <= h) {
      return { size, cols };
    }
  }
  return { size: 1, cols: Math.max(1, Math.floor(w)) };
}
