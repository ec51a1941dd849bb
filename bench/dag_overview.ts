/**
 * The run view's overview of a large DAG, timed in Node (the browser's budget is
 * checked by labextension/ui-tests/tests/dag-overview.spec.ts): for DAGs of
 * L layers × 50 works (two dependencies each, names `wLL_ii`), the time to
 * build the run graph, group it, collapse it and lay the overview out, against
 * the peer measured in the same run: laying out every work (what the view drew
 * before the overview). Also the nodes each draws.
 *
 * Run: cd labextension && flock /tmp/idds-bench.lock node_modules/.bin/vite-node ../bench/dag_overview.ts [works...]
 */
import { collapseGraph, groupWorks } from '../labextension/src/grouping';
import { layoutGraph } from '../labextension/src/layout';
import { IDag, runToGraph } from '../labextension/src/model';

function dag(works: number): IDag {
  const W = 50;
  const L = Math.ceil(works / W);
  const pad = (n: number): string => String(n).padStart(3, '0');
  const nodes: IDag['nodes'] = [];
  const edges: IDag['edges'] = [];
  for (let l = 0; l < L; l++) {
    for (let i = 0; i < W && nodes.length < works; i++) {
      const name = `w${pad(l)}_${pad(i)}`;
      nodes.push({ name, kind: 'function', status: 'finished', jobs: { finished: 1 } });
      if (l > 0) {
        for (const j of new Set([(i * 7) % W, (i * 7 + 13) % W])) {
          edges.push({ source: `w${pad(l - 1)}_${pad(j)}`, target: name, kind: 'dep' });
        }
      }
    }
  }
  return { id: 1, nodes, edges };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function time(f: () => void, reps: number): number {
  const out: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    f();
    out.push(performance.now() - t0);
  }
  return median(out);
}

const sizes = process.argv.slice(2).map(Number).filter(Boolean);
const rows: string[] = [];
rows.push('| works | edges | overview: groups drawn | overview ms (group + collapse + layout) | every work: nodes drawn | every work: layout ms |');
rows.push('|---:|---:|---:|---:|---:|---:|');
for (const n of sizes.length ? sizes : [1000, 10000]) {
  const d = dag(n);
  const g = runToGraph(d);
  let drawn = 0;
  const overview = time(() => {
    const view = collapseGraph(g, groupWorks(g), new Set());
    layoutGraph(view, { nodeWidth: 240, nodeHeight: 64, layerGap: 32 });
    drawn = view.nodes.length;
  }, 7);
  const flat = time(() => layoutGraph(g), 7);
  rows.push(`| ${n.toLocaleString('en')} | ${g.edges.length.toLocaleString('en')} | ${drawn} | ${overview.toFixed(1)} | ${g.nodes.length.toLocaleString('en')} | ${flat.toFixed(1)} |`);
}
console.log(rows.join('\n'));
console.log('(median of 7; Node ' + process.version + '; the machine is shared: figures are noisy)');
