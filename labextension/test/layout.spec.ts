import { describe, expect, it } from 'vitest';

import { chooseEngine, edgePath, layeredLayout, layoutGraph } from '../src/layout';

function layered(L: number, W: number) {
  const nodes: Array<{ id: string }> = [];
  const edges: Array<{ source: string; target: string }> = [];
  for (let l = 0; l < L; l++) {
    for (let i = 0; i < W; i++) {
      nodes.push({ id: `w${l}_${i}` });
      if (l) {
        edges.push({ source: `w${l - 1}_${(i * 7) % W}`, target: `w${l}_${i}` });
        edges.push({ source: `w${l - 1}_${(i * 7 + 13) % W}`, target: `w${l}_${i}` });
      }
    }
  }
  return { nodes, edges };
}

describe('layout', () => {
  it('lays a small graph out with dagre, parents above children', () => {
    const g = { nodes: [{ id: 'a' }, { id: 'b' }, { id: 'c' }], edges: [{ source: 'a', target: 'b' }, { source: 'a', target: 'c' }] };
    const lay = layoutGraph(g);
    expect(lay.engine).toBe('dagre');
    expect(lay.nodes.get('b')!.y).toBeGreaterThan(lay.nodes.get('a')!.y);
    expect(lay.nodes.get('c')!.y).toBeCloseTo(lay.nodes.get('b')!.y);
    expect(lay.edges).toHaveLength(2);
    expect(lay.edges[0].index).toBe(0);
    expect(lay.width).toBeGreaterThan(0);
  });

  it('picks the layered layout for large graphs', () => {
    const g = layered(20, 50);
    expect(chooseEngine(g)).toBe('layers');
    expect(chooseEngine(g, { engine: 'dagre' })).toBe('dagre');
    expect(chooseEngine({ nodes: g.nodes.slice(0, 10), edges: [] })).toBe('dagre');
  });

  it('lays out 1,000 works in layers well under 2 s', () => {
    const g = layered(20, 50);
    const lay = layoutGraph(g);
    expect(lay.engine).toBe('layers');
    expect(lay.ms).toBeLessThan(2000);
    expect(lay.nodes.size).toBe(1000);
    expect(lay.edges).toHaveLength(1900);
    for (const e of g.edges) {
      expect(lay.nodes.get(e.target)!.layer).toBeGreaterThan(lay.nodes.get(e.source)!.layer);
    }
    // no two nodes of a layer overlap
    const byLayer = new Map<number, number[]>();
    for (const n of lay.nodes.values()) {
      (byLayer.get(n.layer) || byLayer.set(n.layer, []).get(n.layer)!).push(n.x);
    }
    for (const xs of byLayer.values()) {
      xs.sort((a, b) => a - b);
      for (let i = 1; i < xs.length; i++) {
        expect(xs[i] - xs[i - 1]).toBeGreaterThanOrEqual(168);
      }
    }
  });

  it('reduces crossings with barycenter sweeps', () => {
    // two chains drawn crossed at first: a0→b1, a1→b0
    const g = { nodes: [{ id: 'a0' }, { id: 'a1' }, { id: 'b1' }, { id: 'b0' }], edges: [{ source: 'a0', target: 'b0' }, { source: 'a1', target: 'b1' }] };
    const lay = layeredLayout(g);
    const x = (id: string) => lay.nodes.get(id)!.x;
    expect(Math.sign(x('a0') - x('a1'))).toBe(Math.sign(x('b0') - x('b1')));
  });

  it('supports left-to-right layouts', () => {
    const lay = layeredLayout({ nodes: [{ id: 'a' }, { id: 'b' }], edges: [{ source: 'a', target: 'b' }] }, { direction: 'LR' });
    expect(lay.nodes.get('b')!.x).toBeGreaterThan(lay.nodes.get('a')!.x);
    expect(lay.nodes.get('b')!.y).toBeCloseTo(lay.nodes.get('a')!.y);
  });

  it('draws edge paths', () => {
    expect(edgePath([])).toBe('');
    expect(edgePath([{ x: 0, y: 0 }, { x: 1, y: 2 }])).toBe('M0,0L1,2');
    expect(edgePath([{ x: 0, y: 0 }, { x: 1, y: 1 }, { x: 2, y: 0 }])).toMatch(/^M0,0Q1,1 1.5,0.5L2,0$/);
  });
});
