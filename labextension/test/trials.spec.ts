import { describe, expect, it } from 'vitest';

import { ITrialsPage, bestSoFar, bestTrials, plotIndices, trialRows, trialsOfRows } from '../src/studies';

const COLUMNS = ['work', 'idx', 'trial', 'segment', 'status', 'value', 'params', 'job_id', 'finished_at'];

describe('trials pages (GET /monitor/{id}/trials)', () => {
  it('decodes compact rows: columns by name, parameters in the order of the page', () => {
    const page: ITrialsPage = {
      workflow_id: 1,
      name: 's',
      status: 'running',
      columns: COLUMNS,
      params: ['lr', 'depth'],
      trials: [
        ['trial_0_9', 1, 1, null, 'finished', 0.5, [0.1, 3], 11, 100.5],
        ['trial_0_9', 0, 0, null, 'failed', null, [0.2], 10, 101]
      ],
      cursor: '101.0:11',
      more: false
    };
    const rows = trialRows(page);
    expect(rows[0]).toEqual({
      work: 'trial_0_9',
      idx: 1,
      trial: 1,
      segment: null,
      status: 'finished',
      value: 0.5,
      params: { lr: 0.1, depth: 3 },
      job_id: 11,
      finished_at: 100.5
    });
    expect(rows[1].params).toEqual({ lr: 0.2 });
    expect(rows[1].value).toBeNull();
  });

  it('orders trials by number (segments side by side), then other jobs by id; failed ones left out', () => {
    const row = (work: string, trial: number | null, segment: string | null, value: number | null, job: number) => ({
      work,
      idx: 0,
      trial,
      segment,
      status: value === null ? 'failed' : 'finished',
      value,
      params: {},
      job_id: job,
      finished_at: 0
    });
    const t = trialsOfRows([
      row('other', null, null, 9, 1),
      row('b_trial_1', 1, 'b', 4, 5),
      row('a_trial_1', 1, 'a', 3, 6),
      row('a_trial_0', 0, 'a', 2, 7),
      row('a_trial_2', 2, 'a', null, 8)
    ]);
    expect(t.map(x => [x.n, x.work, x.objective])).toEqual([
      [0, 'a_trial_0', 2],
      [1, 'a_trial_1', 3],
      [2, 'b_trial_1', 4],
      [3, 'other', 9]
    ]);
  });
});

describe('a large study drawn decimated', () => {
  it('draws one in every few trials and every new best; the best-so-far line by its steps', () => {
    const ys = [5, 6, 4, 7, 8, 3, 9, 9, 9, 9];
    const best = bestSoFar(ys);
    expect(plotIndices(ys, best, 20)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(plotIndices(ys, best, 4)).toEqual([0, 2, 3, 5, 6, 9]);
    expect(plotIndices(ys, best, 0)).toEqual([0, 2, 5, 9]);
  });

  it('keeps the k best trials in trial order', () => {
    const t = [3, 1, 2, 0.5].map((objective, n) => ({ n, work: 'w', idx: n, jobId: n, objective, params: {} }));
    expect(bestTrials(t, 'minimize', 2).map(x => x.n)).toEqual([1, 3]);
    expect(bestTrials(t, 'maximize', 2).map(x => x.n)).toEqual([0, 2]);
  });
});
