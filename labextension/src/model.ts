/**
 * Run-to-graph and aggregation: pure functions over the REST payloads of
 * `monitor/{id}`, `monitor/{id}/dag` and `requests/{id}` (no DOM, no I/O),
 * so that they are unit-tested and fast on 100,000-job runs (the server sends
 * per-work job counts; nothing here loops over jobs).
 */

/** Job counts by status, as the server groups them (`{"finished": 3, "failed": 1}`). */
export type JobCounts = Record<string, number>;

export interface IRun {
  id: number;
  name: string;
  owner?: string;
  status: string;
  backend?: string | null;
  error?: string | null;
  created_at: number;
  updated_at?: number | null;
  finished_at?: number | null;
}

export interface IMonitorWork {
  id?: number;
  name: string;
  kind?: string;
  status: string;
  n_jobs?: number | null;
  loop?: string | null;
  iteration?: number | null;
  reason?: string | null;
  jobs: JobCounts;
}

export interface IMonitor {
  id: number;
  name: string;
  owner?: string;
  status: string;
  error?: string | null;
  created_at?: number;
  finished_at?: number | null;
  jobs: JobCounts;
  works: IMonitorWork[];
  metrics: {
    finished?: number;
    failed?: number;
    throughput?: number | null;
    latency_p50?: number | null;
    latency_p95?: number | null;
    failure_rate?: number | null;
    first_start?: number | null;
    last_finish?: number | null;
  };
}

export interface IDagNode {
  name: string;
  template_name?: string | null;
  kind: string;
  status: string | null;
  jobs: JobCounts;
  loop?: string | null;
  iteration?: number | null;
}

export interface IDagEdge {
  source: string;
  target: string;
  kind: string;
}

export interface ITemplateGraph {
  name?: string;
  nodes?: Array<{ name: string; kind: string; loop?: string | null; [k: string]: unknown }>;
  edges?: IDagEdge[];
  error?: string;
}

export interface IDag {
  id: number;
  nodes: IDagNode[];
  edges: IDagEdge[];
  template?: ITemplateGraph | null;
}

/** Statuses at rest (a user retry may re-open failed ones). */
export const TERMINAL_RUN = new Set(['finished', 'subfinished', 'failed', 'aborted']);
export const DONE_JOB = ['finished', 'failed', 'cancelled'];
export const JOB_STATUS_ORDER = ['finished', 'failed', 'cancelled', 'running', 'submitted', 'ready', 'pending'];
export const RUN_STATUSES = ['new', 'running', 'suspended', 'finished', 'subfinished', 'failed', 'aborted'];

export function isTerminal(status: string | null | undefined): boolean {
  return !!status && TERMINAL_RUN.has(status);
}

// ------------------------------------------------------------------ aggregation

export interface IJobAggregate {
  total: number;
  done: number;
  finished: number;
  failed: number;
  cancelled: number;
  running: number;
  queued: number;
  /** done / total in [0, 1] (0 when there is no job). */
  fraction: number;
}

/** Totals of one work's (or one run's) job counts. */
export function aggregateCounts(counts: JobCounts | null | undefined, expected?: number | null): IJobAggregate {
  let total = 0;
  const c = counts || {};
  for (const k in c) {
    total += c[k] || 0;
  }
  const finished = c.finished || 0;
  const failed = c.failed || 0;
  const cancelled = c.cancelled || 0;
  const running = (c.running || 0) + (c.submitted || 0);
  const done = finished + failed + cancelled;
  const n = Math.max(total, expected || 0);
  return {
    total: n,
    done,
    finished,
    failed,
    cancelled,
    running,
    queued: n - done - running,
    fraction: n > 0 ? Math.min(done / n, 1) : 0
  };
}

/** Sum job counts of many works (a run's totals). */
export function sumCounts(items: Iterable<JobCounts | null | undefined>): JobCounts {
  const out: JobCounts = {};
  for (const c of items) {
    if (!c) {
      continue;
    }
    for (const k in c) {
      out[k] = (out[k] || 0) + (c[k] || 0);
    }
  }
  return out;
}

/**
 * Group raw job rows (`{work, status}`) into per-work counts — the same shape
 * the server sends, for clients holding job rows (one pass, no sorting).
 */
export function countJobs(jobs: ArrayLike<{ work: string; status: string }>): Map<string, JobCounts> {
  const out = new Map<string, JobCounts>();
  for (let i = 0; i < jobs.length; i++) {
    const j = jobs[i];
    let c = out.get(j.work);
    if (c === undefined) {
      c = {};
      out.set(j.work, c);
    }
    c[j.status] = (c[j.status] || 0) + 1;
  }
  return out;
}

/** A run's progress from its monitor summary: done jobs / expected jobs over its works. */
export function runProgress(m: Pick<IMonitor, 'works' | 'jobs'>): IJobAggregate {
  let expected = 0;
  for (const w of m.works || []) {
    if (w.kind === 'workflow') {
      continue;
    }
    let n = 0;
    for (const k in w.jobs || {}) {
      n += w.jobs[k] || 0;
    }
    expected += Math.max(n, w.n_jobs || 0);
  }
  return aggregateCounts(m.jobs, expected);
}

/** Counts in a stable display order: known statuses first, then the rest by name. */
export function orderedCounts(counts: JobCounts): Array<[string, number]> {
  const known = JOB_STATUS_ORDER.filter(s => counts[s]).map(s => [s, counts[s]] as [string, number]);
  const rest = Object.keys(counts)
    .filter(s => !JOB_STATUS_ORDER.includes(s) && counts[s])
    .sort()
    .map(s => [s, counts[s]] as [string, number]);
  return known.concat(rest);
}

export function formatCount(n: number): string {
  if (n >= 1e6) {
    return (n / 1e6).toFixed(n >= 1e7 ? 0 : 1) + 'M';
  }
  if (n >= 1e4) {
    return (n / 1e3).toFixed(n >= 1e5 ? 0 : 1) + 'k';
  }
  return String(n);
}

// ------------------------------------------------------------------ run → graph

export type EdgeKind = 'dep' | 'job_dep' | 'true' | 'false' | 'on_failure' | 'loop' | 'iteration';

export interface IGraphNode {
  id: string;
  label: string;
  /** work kinds (function, command, workflow) or "condition" / "loop" */
  kind: string;
  templateName: string;
  status: string | null;
  jobs: JobCounts;
  agg: IJobAggregate;
  loop: string | null;
  iteration: number | null;
  /** for loop nodes: how many iterations ran */
  iterations?: number;
  /** for condition nodes: its value when known */
  value?: boolean | null;
}

export interface IGraphEdge {
  source: string;
  target: string;
  kind: EdgeKind;
  /** condition branches: true = taken, false = not taken, null = not decided yet */
  taken: boolean | null;
}

export interface IRunGraph {
  nodes: IGraphNode[];
  edges: IGraphEdge[];
  /** node id by id, for lookups */
  index: Map<string, IGraphNode>;
}

const RAN = new Set(['running', 'suspended', 'finished', 'subfinished', 'failed', 'aborted']);

/** Was a branch to a node with this status taken? (null while it is undecided) */
export function branchTaken(targetStatus: string | null | undefined): boolean | null {
  if (targetStatus === 'skipped') {
    return false;
  }
  if (targetStatus && RAN.has(targetStatus)) {
    return true;
  }
  return null;
}

/** Label of a work instance: loop iterations `refine[2].step` read `step #2`. */
export function nodeLabel(n: IDagNode): string {
  if (n.iteration !== null && n.iteration !== undefined && n.template_name) {
    return `${n.template_name} #${n.iteration}`;
  }
  return n.name;
}

/**
 * The run's graph for drawing: work instances, conditions and loops as nodes;
 * dependency, job-dependency, branch (taken / not taken), loop and
 * iteration edges. Template-level edges (e.g. `gen → condition`) are mapped to
 * instances: a loop body name outside its loop means its last iteration.
 * `conditions` (from `requests/{id}`) gives branch values when known.
 */
export function runToGraph(dag: IDag, conditions?: Record<string, unknown> | null): IRunGraph {
  const nodes: IGraphNode[] = [];
  const index = new Map<string, IGraphNode>();
  const instances = new Map<string, IGraphNode[]>(); // template name -> instances (iteration order)
  for (const n of dag.nodes || []) {
    if (index.has(n.name)) {
      continue;
    }
    const tn = n.template_name || n.name;
    const g: IGraphNode = {
      id: n.name,
      label: nodeLabel(n),
      kind: n.kind,
      templateName: tn,
      status: n.status,
      jobs: n.jobs || {},
      agg: aggregateCounts(n.jobs),
      loop: n.loop ?? null,
      iteration: n.iteration ?? null
    };
    if (n.kind === 'condition' && conditions && n.name in conditions) {
      const v = conditions[n.name];
      g.value = typeof v === 'boolean' ? v : null;
    }
    nodes.push(g);
    index.set(g.id, g);
    let list = instances.get(tn);
    if (list === undefined) {
      list = [];
      instances.set(tn, list);
    }
    list.push(g);
  }
  for (const list of instances.values()) {
    if (list.length > 1) {
      list.sort((a, b) => (a.iteration ?? -1) - (b.iteration ?? -1));
    }
  }

  const edges: IGraphEdge[] = [];
  const seen = new Set<string>();
  const groupPairs = new Set<string>(); // template-level pairs already drawn between instances
  const add = (source: string, target: string, kind: EdgeKind, taken: boolean | null = null): void => {
    if (source === target || !index.has(source) || !index.has(target)) {
      return;
    }
    const key = `${source}\u0000${target}\u0000${kind}`;
    if (seen.has(key)) {
      return;
    }
    seen.add(key);
    edges.push({ source, target, kind, taken });
    groupPairs.add(`${index.get(source)!.templateName}\u0000${index.get(target)!.templateName}`);
  };
  /** a name as an edge source: the instance itself, else the last instance of the template name */
  const asSource = (name: string): string[] => {
    if (index.has(name)) {
      return [name];
    }
    const list = instances.get(name);
    return list && list.length ? [list[list.length - 1].id] : [];
  };
  /** a name as an edge target: the instance, else every non-iteration instance (or the first iteration) */
  const asTarget = (name: string): string[] => {
    if (index.has(name)) {
      return [name];
    }
    const list = instances.get(name);
    if (!list || !list.length) {
      return [];
    }
    return list[0].iteration !== null ? [list[0].id] : list.map(n => n.id);
  };

  // Condition values: from the status payload, else inferred from the branch targets.
  const condValue = (name: string): boolean | null => {
    const n = index.get(name);
    return n && n.value !== undefined ? n.value : null;
  };
  const branchEdges: IDagEdge[] = [];
  for (const e of dag.edges || []) {
    if (e.kind === 'true' || e.kind === 'false' || e.kind === 'on_failure' || e.kind === 'loop') {
      branchEdges.push(e);
      continue;
    }
    const kind: EdgeKind = e.kind === 'job_dep' ? 'job_dep' : 'dep';
    for (const s of asSource(e.source)) {
      for (const t of asTarget(e.target)) {
        add(s, t, kind);
      }
    }
  }
  const branchSet = new Set(branchEdges.map(e => `${e.source}\u0000${e.target}`));
  for (const e of branchEdges) {
    for (const s of asSource(e.source)) {
      if (e.kind === 'loop') {
        for (const t of asTarget(e.target)) {
          add(s, t, 'loop');
        }
        continue;
      }
      for (const t of asTarget(e.target)) {
        const v = condValue(e.source);
        let taken: boolean | null;
        if (e.kind !== 'on_failure' && v !== null) {
          taken = (e.kind === 'true') === v;
        } else {
          taken = branchTaken(index.get(t)?.status);
        }
        add(s, t, e.kind as EdgeKind, taken);
      }
    }
  }
  // A plain dep edge duplicating a branch edge (the server sends both) is dropped.
  for (let i = edges.length - 1; i >= 0; i--) {
    const e = edges[i];
    if (e.kind === 'dep' && branchSet.has(`${e.source}\u0000${e.target}`)) {
      edges.splice(i, 1);
    }
  }
  // Template dependencies the instances do not show (e.g. work → condition, work → loop).
  for (const e of dag.template?.edges || []) {
    if (e.kind !== 'dep') {
      continue;
    }
    const srcT = index.get(e.source)?.templateName ?? e.source;
    const dstT = index.get(e.target)?.templateName ?? e.target;
    if (groupPairs.has(`${srcT}\u0000${dstT}`)) {
      continue;
    }
    for (const s of asSource(e.source)) {
      for (const t of asTarget(e.target)) {
        add(s, t, 'dep');
      }
    }
  }
  // Loop iterations: a chain from each iteration of a body work to the next.
  for (const list of instances.values()) {
    if (list.length < 2 || list[0].iteration === null) {
      continue;
    }
    for (let i = 1; i < list.length; i++) {
      add(list[i - 1].id, list[i].id, 'iteration');
    }
  }
  // Loop nodes: iterations run so far; conditions: value inferred from taken edges.
  for (const n of nodes) {
    if (n.kind === 'loop') {
      let iters = 0;
      for (const m of nodes) {
        if (m.loop === n.id && m.iteration !== null) {
          iters = Math.max(iters, m.iteration + 1);
        }
      }
      n.iterations = iters;
      n.status = n.status ?? loopStatus(nodes, n.id);
    } else if (n.kind === 'condition' && (n.value === undefined || n.value === null)) {
      let v: boolean | null = null;
      for (const e of edges) {
        if (e.source === n.id && (e.kind === 'true' || e.kind === 'false') && e.taken !== null) {
          v = (e.kind === 'true') === e.taken;
          break;
        }
      }
      n.value = v;
    }
  }
  return { nodes, edges, index };
}

function loopStatus(nodes: IGraphNode[], loop: string): string | null {
  let last: IGraphNode | null = null;
  for (const m of nodes) {
    if (m.loop === loop && m.iteration !== null && (last === null || m.iteration >= (last.iteration ?? -1))) {
      last = m;
    }
  }
  return last ? last.status : null;
}

/** Longest-path layer of every node (roots at 0); back edges of cycles are ignored. */
export function longestPathLayers(
  ids: string[],
  edges: Array<{ source: string; target: string }>
): Map<string, number> {
  const pos = new Map<string, number>();
  ids.forEach((id, i) => pos.set(id, i));
  const ups = new Map<string, string[]>();
  const downs = new Map<string, string[]>();
  const indeg = new Map<string, number>();
  for (const id of ids) {
    ups.set(id, []);
    downs.set(id, []);
    indeg.set(id, 0);
  }
  for (const e of edges) {
    if (!pos.has(e.source) || !pos.has(e.target) || e.source === e.target) {
      continue;
    }
    downs.get(e.source)!.push(e.target);
    ups.get(e.target)!.push(e.source);
    indeg.set(e.target, indeg.get(e.target)! + 1);
  }
  // Kahn's algorithm; nodes left on cycles are released in input order.
  const layer = new Map<string, number>();
  const queue: string[] = ids.filter(id => indeg.get(id) === 0);
  let head = 0;
  const done = new Set<string>();
  const release = (id: string): void => {
    let l = 0;
    for (const u of ups.get(id)!) {
      const lu = layer.get(u);
      if (lu !== undefined && lu + 1 > l) {
        l = lu + 1;
      }
    }
    layer.set(id, l);
    done.add(id);
    for (const d of downs.get(id)!) {
      const k = indeg.get(d)! - 1;
      indeg.set(d, k);
      if (k === 0) {
        queue.push(d);
      }
    }
  };
  let next = 0;
  while (done.size < ids.length) {
    if (head < queue.length) {
      const id = queue[head++];
      if (!done.has(id)) {
        release(id);
      }
      continue;
    }
    while (next < ids.length && done.has(ids[next])) {
      next++;
    }
    if (next < ids.length) {
      release(ids[next]); // break a cycle
    }
  }
  return layer;
}
