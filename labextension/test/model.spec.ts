import { describe, expect, it } from 'vitest';

import dagFixture from './fixtures/dag_branch_loop.json';
import monitorFixture from './fixtures/monitor_branch_loop.json';
import {
  IDag,
  IMonitor,
  aggregateCounts,
  branchTaken,
  countJobs,
  formatCount,
  longestPathLayers,
  orderedCounts,
  runProgress,
  runToGraph,
  sumCounts
} from '../src/model';

const dag = dagFixture as unknown as IDag;

describe('aggregation', () => {
  it('aggregates job counts by status', () => {
    const a = aggregateCounts({ finished: 7, failed: 2, cancelled: 1, running: 3, submitted: 2, pending: 5 });
    expect(a).toEqual({ total: 20, done: 10, finished: 7, failed: 2, cancelled: 1, running: 5, queued: 5, fraction: 0.5 });
  });

  it('uses the expected job count when jobs are not created yet', () => {
    const a = aggregateCounts({ finished: 1 }, 4);
    expect(a.total).toBe(4);
    expect(a.fraction).toBe(0.25);
    expect(a.queued).toBe(3);
    expect(aggregateCounts({}).fraction).toBe(0);
    expect(aggregateCounts(null).total).toBe(0);
  });

  it('sums the works of a run and computes its progress', () => {
    expect(sumCounts([{ finished: 1 }, null, { finished: 2, failed: 1 }])).toEqual({ finished: 3, failed: 1 });
    const p = runProgress(monitorFixture as unknown as IMonitor);
    expect(p.total).toBe(8);
    expect(p.done).toBe(8);
    expect(p.fraction).toBe(1);
    // a work announced with n_jobs but no job row yet counts in the total
    const q = runProgress({
      jobs: { finished: 2 },
      works: [
        { name: 'a', status: 'finished', n_jobs: 2, jobs: { finished: 2 } },
        { name: 'b', status: 'new', n_jobs: 6, jobs: {} },
        { name: 'sub', kind: 'workflow', status: 'running', n_jobs: 50, jobs: {} }
      ]
    });
    expect(q.total).toBe(8);
    expect(q.fraction).toBe(0.25);
  });

  it('counts 100,000 job rows per work in one pass, fast', () => {
    const statuses = ['finished', 'failed', 'running', 'pending'];
    const jobs = Array.from({ length: 100000 }, (_, i) => ({ work: `w${i % 10}`, status: statuses[i % 7 === 0 ? 1 : i % 4] }));
    const t0 = performance.now();
    const by = countJobs(jobs);
    const ms = performance.now() - t0;
    expect(by.size).toBe(10);
    let total = 0;
    for (const c of by.values()) {
      total += Object.values(c).reduce((a, b) => a + b, 0);
    }
    expect(total).toBe(100000);
    expect(ms).toBeLessThan(200);
  });

  it('orders counts and formats big numbers', () => {
    expect(orderedCounts({ zeta: 1, pending: 2, finished: 3, failed: 0 })).toEqual([
      ['finished', 3],
      ['pending', 2],
      ['zeta', 1]
    ]);
    expect(formatCount(999)).toBe('999');
    expect(formatCount(12345)).toBe('12.3k');
    expect(formatCount(100000)).toBe('100k');
    expect(formatCount(2500000)).toBe('2.5M');
  });
});

describe('run to graph', () => {
  it('maps the server DAG of a run with a condition and a loop', () => {
    const g = runToGraph(dag);
    const ids = g.nodes.map(n => n.id).sort();
    expect(ids).toEqual(['big', 'gen', 'pick', 'small', 'tuning', 'tuning[0].tune', 'tuning[1].tune', 'tuning[2].tune', 'tuning[3].tune'].sort());
    const edge = (s: string, t: string) => g.edges.filter(e => e.source === s && e.target === t).map(e => `${e.kind}:${e.taken}`);
    // branches: taken / not taken from the targets' statuses; the duplicate plain dep is dropped
    expect(edge('pick', 'big')).toEqual(['true:true']);
    expect(edge('pick', 'small')).toEqual(['false:false']);
    expect(g.index.get('pick')!.value).toBe(true);
    // template dependencies mapped to instances
    expect(edge('gen', 'pick')).toEqual(['dep:null']);
    expect(edge('gen', 'tuning')).toEqual(['dep:null']);
    // the loop points at its first iteration, iterations are chained
    expect(edge('tuning', 'tuning[0].tune')).toEqual(['loop:null']);
    expect(edge('tuning[0].tune', 'tuning[1].tune')).toEqual(['iteration:null']);
    expect(g.edges.filter(e => e.kind === 'iteration')).toHaveLength(3);
    const loop = g.index.get('tuning')!;
    expect(loop.iterations).toBe(4);
    expect(loop.status).toBe('finished');
    expect(g.index.get('tuning[2].tune')!.label).toBe('tune #2');
    expect(g.index.get('gen')!.agg.done).toBe(3);
  });

  it('uses condition values from the run status when given', () => {
    const running: IDag = {
      ...dag,
      nodes: dag.nodes.map(n => (n.name === 'big' || n.name === 'small' ? { ...n, status: 'new', jobs: {} } : n))
    };
    const undecided = runToGraph(running);
    expect(undecided.edges.find(e => e.kind === 'true')!.taken).toBeNull();
    expect(undecided.index.get('pick')!.value).toBeNull();
    const decided = runToGraph(running, { pick: false });
    expect(decided.edges.find(e => e.kind === 'true')!.taken).toBe(false);
    expect(decided.edges.find(e => e.kind === 'false')!.taken).toBe(true);
  });

  it('keeps job dependencies and on-failure edges, and ignores edges to unknown nodes', () => {
    const g = runToGraph({
      id: 1,
      nodes: [
        { name: 'a', kind: 'function', status: 'failed', jobs: { failed: 1 } },
        { name: 'b', kind: 'function', status: 'new', jobs: {} },
        { name: 'cleanup', kind: 'command', status: 'running', jobs: { running: 1 } }
      ],
      edges: [
        { source: 'a', target: 'b', kind: 'job_dep' },
        { source: 'a', target: 'cleanup', kind: 'on_failure' },
        { source: 'a', target: 'ghost', kind: 'dep' }
      ]
    });
    expect(g.edges.map(e => `${e.source}>${e.target}:${e.kind}:${e.taken}`)).toEqual(['a>b:job_dep:null', 'a>cleanup:on_failure:true']);
  });

  it('handles a 1,000-work graph quickly', () => {
    const nodes = [];
    const edges = [];
    for (let l = 0; l < 20; l++) {
      for (let i = 0; i < 50; i++) {
        nodes.push({ name: `w${l}_${i}`, kind: 'function', status: 'finished', jobs: { finished: 100 } });
        if (l) {
          edges.push({ source: `w${l - 1}_${(i * 7) % 50}`, target: `w${l}_${i}`, kind: 'dep' });
          edges.push({ source: `w${l - 1}_${(i * 7 + 13) % 50}`, target: `w${l}_${i}`, kind: 'dep' });
        }
      }
    }
    const t0 = performance.now();
    const g = runToGraph({ id: 1, nodes, edges });
    expect(performance.now() - t0).toBeLessThan(200);
    expect(g.nodes).toHaveLength(1000);
    expect(g.edges).toHaveLength(1900);
  });

  it('branchTaken reads a target status', () => {
    expect(branchTaken('skipped')).toBe(false);
    expect(branchTaken('finished')).toBe(true);
    expect(branchTaken('new')).toBeNull();
    expect(branchTaken(null)).toBeNull();
  });

  it('layers nodes by longest path, and survives cycles', () => {
    const l = longestPathLayers(
      ['a', 'b', 'c', 'd'],
      [
        { source: 'a', target: 'b' },
        { source: 'b', target: 'c' },
        { source: 'a', target: 'c' },
        { source: 'a', target: 'd' }
      ]
    );
    expect(Object.fromEntries(l)).toEqual({ a: 0, b: 1, c: 2, d: 1 });
    const cyc = longestPathLayers(['x', 'y'], [
      { source: 'x', target: 'y' },
      { source: 'y', target: 'x' }
    ]);
    expect(cyc.size).toBe(2);
  });
});
