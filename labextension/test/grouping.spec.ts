import { describe, expect, it } from 'vitest';

import {
  OVERVIEW_MIN_NODES,
  collapseGraph,
  gridCells,
  groupStatus,
  groupToExpand,
  groupWorks,
  prefixKey,
  scopeKey,
  searchNodes,
  zoomLevel
} from '../src/grouping';
import { layoutGraph } from '../src/layout';
import { IDag, runToGraph } from '../src/model';

/** The UI test's 1,000-work DAG: L layers of W works, two dependencies each. */
function layeredDag(L: number, W: number, status: (l: number, i: number) => string = () => 'finished'): IDag {
  const pad = (n: number): string => String(n).padStart(2, '0');
  const nodes: IDag['nodes'] = [];
  const edges: IDag['edges'] = [];
  for (let l = 0; l < L; l++) {
    for (let i = 0; i < W; i++) {
      const name = `w${pad(l)}_${pad(i)}`;
      const st = status(l, i);
      nodes.push({ name, kind: 'function', status: st, jobs: { [st === 'finished' ? 'finished' : 'pending']: 1 } });
      if (l > 0) {
        for (const j of new Set([(i * 7) % W, (i * 7 + 13) % W])) {
          edges.push({ source: `w${pad(l - 1)}_${pad(j)}`, target: name, kind: 'dep' });
        }
      }
    }
  }
  return { id: 1, nodes, edges };
}

describe('group keys', () => {
  it('takes the name prefix before a trailing number', () => {
    expect(prefixKey({ id: 'w03_17' })).toBe('w03');
    expect(prefixKey({ id: 'sim-42' })).toBe('sim');
    expect(prefixKey({ id: 'step12' })).toBe('step');
    expect(prefixKey({ id: 'merge' })).toBeNull();
  });

  it('takes a loop or a dotted scope as the sub-workflow', () => {
    expect(scopeKey({ id: 'refine[2].step', loop: 'refine' })).toBe('refine');
    expect(scopeKey({ id: 'sub.prepare', loop: null })).toBe('sub');
    expect(scopeKey({ id: 'top', loop: null })).toBeNull();
  });
});

describe('groupStatus', () => {
  it('sums member statuses into one', () => {
    expect(groupStatus({ finished: 5 })).toBe('finished');
    expect(groupStatus({ finished: 4, skipped: 1 })).toBe('finished');
    expect(groupStatus({ finished: 4, running: 1 })).toBe('running');
    expect(groupStatus({ finished: 4, failed: 1 })).toBe('subfinished');
    expect(groupStatus({ failed: 2 })).toBe('failed');
    expect(groupStatus({ finished: 2, new: 3 })).toBe('running');
    expect(groupStatus({ new: 3, null: 1 })).toBe('new');
    expect(groupStatus({ suspended: 1, finished: 1 })).toBe('suspended');
    expect(groupStatus({})).toBeNull();
  });
});

describe('groupWorks and collapseGraph', () => {
  it('groups a 1,000-work DAG by name prefix into 20 groups of 50 joined by 19 merged edges', () => {
    const g = runToGraph(layeredDag(20, 50, l => (l < 10 ? 'finished' : 'new')));
    expect(g.nodes.length).toBeGreaterThan(OVERVIEW_MIN_NODES);
    const grouping = groupWorks(g);
    expect(grouping.by).toBe('prefix');
    expect(grouping.groups.size).toBe(20);
    const w03 = grouping.groups.get('group:w03')!;
    expect(w03.members).toHaveLength(50);
    expect(w03.status).toBe('finished');
    expect(w03.agg.total).toBe(50);
    expect(grouping.groups.get('group:w15')!.status).toBe('new');
    const view = collapseGraph(g, grouping, new Set());
    expect(view.nodes).toHaveLength(20);
    expect(view.nodes.every(n => n.kind === 'group')).toBe(true);
    expect(view.edges).toHaveLength(19);
    const e = view.edges.find(x => x.source === 'group:w00')!;
    expect(e.target).toBe('group:w01');
    expect(e.count).toBe(g.edges.filter(x => x.source.startsWith('w00_')).length);
    // the overview is small enough for dagre and lays out in milliseconds
    const lay = layoutGraph(view);
    expect(lay.engine).toBe('dagre');
    expect(lay.nodes.get('group:w19')!.y).toBeGreaterThan(lay.nodes.get('group:w00')!.y);
  });

  it('expands one group: its members are drawn with their own edges, the rest stays collapsed', () => {
    const g = runToGraph(layeredDag(20, 50));
    const grouping = groupWorks(g);
    const view = collapseGraph(g, grouping, new Set(['group:w05']));
    expect(view.nodes).toHaveLength(19 + 50);
    expect(view.index.has('w05_07')).toBe(true);
    expect(view.index.has('group:w05')).toBe(false);
    // each w05 work has edges from group w04 (merged per work) and to works' group w06
    expect(view.edges.some(e => e.source === 'group:w04' && e.target === 'w05_07')).toBe(true);
    expect(view.edges.some(e => e.source === 'w05_07' && e.target === 'group:w06')).toBe(true);
    expect(groupToExpand(grouping, view.expanded, 'w05_07')).toBeNull();
    expect(groupToExpand(grouping, view.expanded, 'w06_07')).toBe('group:w06');
  });

  it('falls back to levels when names have no common prefix, and splits big groups', () => {
    const dag = layeredDag(4, 60);
    dag.nodes.forEach((n, i) => {
      const old = n.name;
      n.name = `job${String.fromCharCode(97 + (i % 26))}${String.fromCharCode(97 + ((i / 26) | 0))}`;
      for (const e of dag.edges) {
        if (e.source === old) {
          e.source = n.name;
        }
        if (e.target === old) {
          e.target = n.name;
        }
      }
    });
    const g = runToGraph(dag);
    const grouping = groupWorks(g, { maxGroupSize: 40 });
    expect(grouping.by).toBe('level');
    expect(grouping.groups.size).toBe(8); // 4 levels of 60, each in 2 parts
    expect(grouping.groups.get('group:level 0 (1/2)')!.members).toHaveLength(40);
    expect(grouping.groups.get('group:level 0 (2/2)')!.members).toHaveLength(20);
  });

  it('groups loop iterations by their loop and keeps conditions and loops visible', () => {
    const nodes: IDag['nodes'] = [
      { name: 'gen', kind: 'function', status: 'finished', jobs: { finished: 1 } },
      { name: 'pick', kind: 'condition', status: null, jobs: {} },
      { name: 'tuning', kind: 'loop', status: null, jobs: {} }
    ];
    for (let i = 0; i < 6; i++) {
      nodes.push({
        name: `tuning[${i}].tune`,
        template_name: 'tune',
        kind: 'function',
        status: i < 5 ? 'finished' : 'running',
        jobs: { finished: 1 },
        loop: 'tuning',
        iteration: i
      });
    }
    const g = runToGraph({ id: 2, nodes, edges: [{ source: 'gen', target: 'tuning', kind: 'loop' }] });
    const grouping = groupWorks(g, { maxGroups: 5 });
    expect(grouping.by).toBe('sub-workflow');
    const loop = grouping.groups.get('group:tuning')!;
    expect(loop.members).toHaveLength(6);
    expect(loop.status).toBe('running');
    expect(grouping.groupOf.has('pick')).toBe(false);
    const view = collapseGraph(g, grouping, new Set());
    expect(view.nodes.map(n => n.id)).toEqual(['gen', 'pick', 'tuning', 'group:tuning']);
    // iteration edges are inside the group: gone
    expect(view.edges.some(e => e.kind === 'iteration')).toBe(false);
  });
});

describe('search and semantic zoom', () => {
  it('finds exact names first, then prefixes, then substrings, groups included', () => {
    const g = runToGraph(layeredDag(3, 60));
    const grouping = groupWorks(g);
    expect(searchNodes(g, grouping, 'w01_17')[0]).toBe('w01_17');
    const hits = searchNodes(g, grouping, 'W01_1');
    expect(hits[0]).toBe('w01_10');
    expect(hits).toHaveLength(10);
    expect(searchNodes(g, grouping, 'w02')).toContain('group:w02');
    expect(searchNodes(g, grouping, '  ')).toEqual([]);
    expect(searchNodes(g, grouping, 'nothing-like-it')).toEqual([]);
  });

  it('shows more as the zoom grows', () => {
    expect(zoomLevel(0.3)).toBe('overview');
    expect(zoomLevel(0.8)).toBe('summary');
    expect(zoomLevel(1.5)).toBe('detail');
  });

  it('gives every member of a group a square cell in its box', () => {
    const { size, cols } = gridCells(50, 228, 24);
    expect(cols).toBeGreaterThan(0);
    expect(Math.ceil(50 / cols) * size).toBeLessThanOrEqual(24);
    expect(cols * size).toBeLessThanOrEqual(228);
    expect(size).toBeGreaterThanOrEqual(4);
    expect(gridCells(0, 100, 10)).toEqual({ size: 0, cols: 0 });
  });
});
