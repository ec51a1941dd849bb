import { describe, expect, it } from 'vitest';

import {
  VIRIDIS,
  bestIndex,
  bestSoFar,
  iterationWorks,
  iterationsOf,
  parallelCoordinates,
  parcoordsDimensions,
  trialOf,
  trialsOf
} from '../src/studies';

describe('HPO trials', () => {
  it('reads objectives as the notebook widgets do', () => {
    expect(trialOf({ objective: 0.5, params: { lr: 0.1 } })).toEqual({ objective: 0.5, params: { lr: 0.1 } });
    expect(trialOf({ loss: 2 })).toEqual({ objective: 2, params: {} });
    expect(trialOf({ value: 3, params: [1] })).toEqual({ objective: 3, params: {} });
    expect(trialOf(1.5)).toEqual({ objective: 1.5, params: {} });
    expect(trialOf({ objective: 'x' })).toBeNull();
    expect(trialOf(null)).toBeNull();
    expect(trialOf(true)).toBeNull();
  });

  it('numbers trials across works and keeps their job', () => {
    const t = trialsOf([
      [
        'a',
        [
          { idx: 0, job_id: 10, status: 'finished', result: { objective: 3, params: { x: 1 } } },
          { idx: 1, status: 'failed', result: null }
        ]
      ],
      ['b', [{ idx: 0, job_id: 12, status: 'finished', result: { objective: 1, params: { x: 2 } } }]]
    ]);
    expect(t.map(x => [x.n, x.work, x.idx, x.jobId, x.objective])).toEqual([
      [0, 'a', 0, 10, 3],
      [1, 'b', 0, 12, 1]
    ]);
  });

  it('computes the best so far in both directions', () => {
    expect(bestSoFar([3, 1, 2, 0.5])).toEqual([3, 1, 1, 0.5]);
    expect(bestSoFar([3, 1, 4, 2], 'maximize')).toEqual([3, 3, 4, 4]);
    expect(bestIndex([3, 1, 2])).toBe(1);
    expect(bestIndex([3, 1, 4], 'maximize')).toBe(2);
    expect(bestIndex([])).toBe(-1);
  });

  it('builds parallel-coordinates dimensions, categories included', () => {
    const trials = trialsOf([
      [
        'w',
        [
          { idx: 0, status: 'finished', result: { objective: 1, params: { lr: 0.1, opt: 'sgd' } } },
          { idx: 1, status: 'finished', result: { objective: 2, params: { lr: 0.2, opt: 'adam', depth: 3 } } }
        ]
      ]
    ]);
    const dims = parcoordsDimensions(trials);
    expect(dims.map(d => d.label)).toEqual(['depth', 'lr', 'opt', 'objective']);
    expect(dims[0].values[0]).toBeNaN();
    expect(dims[1].values).toEqual([0.1, 0.2]);
    expect(dims[2]).toEqual({ label: 'opt', values: [1, 0], tickvals: [0, 1], ticktext: ['adam', 'sgd'] });
    expect(dims[3].values).toEqual([1, 2]);
  });
});

describe('parallel coordinates in SVG', () => {
  const trials = [
    { work: 't', idx: 0, n: 0, objective: 4, params: { lr: 0.1, opt: 'sgd' } },
    { work: 't', idx: 1, n: 1, objective: 1, params: { lr: 0.3, opt: 'adam' } },
    { work: 't', idx: 2, n: 2, objective: 2.5, params: { opt: 'adam' } }
  ];
  const lines = (data: Array<Record<string, unknown>>) => data.filter(t => t.mode === 'lines');

  it('draws one line per trial, each axis scaled to [0, 1], a missing value breaks its line', () => {
    const par = parallelCoordinates(parcoordsDimensions(trials));
    expect(par.lines).toBe(3);
    const traced = lines(par.data);
    const ys = traced.flatMap(t => t.y as Array<number | null>);
    expect(ys.filter(y => y === null).length).toBe(3 + 1); // a separator per line, one gap (lr of trial 2)
    expect(ys.every(y => y === null || (y >= 0 && y <= 1))).toBe(true);
    // lr 0.1..0.3, categories adam, sgd, objective 1..4: trial 0 is lr 0, sgd 1, objective 1
    const first = traced.find(t => (t.line as { color: string }).color === VIRIDIS[9])!;
    expect(first.y).toEqual([0, 1, 1, null]);
    expect(first.x).toEqual([0, 1, 2, null]);
    const labels = (par.layout.annotations as Array<{ text: string; y: number }>).map(a => `${a.text}@${a.y}`);
    expect(labels).toEqual(['0.1@0', '0.3@1', 'adam@0', 'sgd@1', '1@0', '4@1']);
    expect((par.layout.xaxis as { ticktext: string[] }).ticktext).toEqual(['lr', 'opt', 'objective']);
  });

  it('colours by the objective in bands, the best band drawn last for either direction', () => {
    const min = lines(parallelCoordinates(parcoordsDimensions(trials), 'minimize').data);
    expect(min.map(t => (t.line as { color: string }).color)).toEqual([VIRIDIS[9], VIRIDIS[5], VIRIDIS[0]]);
    expect(min[min.length - 1].y).toEqual([1, 0, 0, null]); // objective 1, the lowest
    const max = lines(parallelCoordinates(parcoordsDimensions(trials), 'maximize').data);
    expect(max[max.length - 1].y).toEqual([0, 1, 1, null]); // objective 4, the highest
    expect((max[max.length - 1].line as { color: string }).color).toBe(VIRIDIS[0]);
    const bar = parallelCoordinates(parcoordsDimensions(trials)).data.at(-1) as { marker: Record<string, unknown> };
    expect([bar.marker.cmin, bar.marker.cmax, bar.marker.showscale]).toEqual([1, 4, true]);
  });

  it('copes with no trials and with a constant axis', () => {
    expect(parallelCoordinates([]).lines).toBe(0);
    const flat = parallelCoordinates([{ label: 'objective', values: [2, 2] }]);
    expect(lines(flat.data)[0].y).toEqual([0.5, null, 0.5, null]);
    expect((flat.layout.annotations as Array<{ text: string; y: number }>).map(a => `${a.text}@${a.y}`)).toEqual([
      '2@0.5'
    ]);
  });
});

describe('active learning', () => {
  const works = [
    { name: 'init', status: 'finished', jobs: { finished: 1 } },
    { name: 'al[0].train', status: 'finished', iteration: 0, loop: 'al', jobs: { finished: 2 } },
    { name: 'al[1].train', status: 'finished', iteration: 1, loop: 'al', jobs: { finished: 2 } },
    { name: 'al[2].train', status: 'running', iteration: 2, loop: 'al', jobs: { finished: 1, running: 1 } }
  ];

  it('takes loop iteration works, else every work in order', () => {
    expect(iterationWorks(works).map(w => [w.name, w.iteration, w.jobs])).toEqual([
      ['al[0].train', 0, 2],
      ['al[1].train', 1, 2],
      ['al[2].train', 2, 2]
    ]);
    expect(
      iterationWorks([
        works[0],
        { name: 'round2', status: 'skipped', jobs: {} },
        { name: 'round3', status: 'new', jobs: {}, n_jobs: 4 }
      ]).map(w => [w.name, w.iteration, w.jobs])
    ).toEqual([
      ['init', 0, 1],
      ['round3', 1, 4]
    ]);
  });

  it('gives the metric and proposals per iteration', () => {
    const results = new Map([
      [
        'al[0].train',
        [
          { idx: 0, status: 'finished', result: { metric: 0.5, params: { x: 1 } } },
          { idx: 1, status: 'finished', result: { metric: 0.7, params: { x: 2 } } }
        ]
      ],
      [
        'al[1].train',
        [
          {
            idx: 0,
            status: 'finished',
            result: {
              metric: 0.8,
              proposals: [
                [1, 2],
                [3, 4]
              ]
            }
          }
        ]
      ],
      ['al[2].train', [{ idx: 0, status: 'finished', result: 0.9 }]]
    ]);
    const its = iterationsOf(iterationWorks(works), results);
    expect(its.map(i => [i.iteration, i.metric, i.proposals, i.status])).toEqual([
      [0, 0.7, 2, 'finished'],
      [1, 0.8, 2, 'finished'],
      [2, 0.9, 2, 'running']
    ]);
    expect(its[0].points).toEqual([{ x: 1 }, { x: 2 }]);
    expect(its[1].points).toEqual([
      [1, 2],
      [3, 4]
    ]);
    expect(iterationsOf(iterationWorks(works), results, 'metric', 'minimize')[0].metric).toBe(0.5);
  });
});
