import { describe, expect, it } from 'vitest';

import { total, traces } from '../src/monitorseries';

describe('Monitor traces', () => {
  const times = [1000, 1060, 1120];
  it('makes one bar trace per backend, sorted, with per-second values', () => {
    const t = traces(times, { slurm: [0, 6, 0], local: [60, 0, 120] }, 1 / 60) as Array<Record<string, unknown>>;
    expect(t.map(x => x.name)).toEqual(['local', 'slurm']);
    expect(t[0].type).toBe('bar');
    expect(t[0].y).toEqual([1, 0, 2]);
    expect((t[0].x as Date[])[1].getTime()).toBe(1060 * 1000);
  });
  it('draws a level (queue depth) as a step line', () => {
    const [q] = traces(times, { alice: [3, 1, 0] }, 1, false) as Array<Record<string, unknown>>;
    expect(q.type).toBe('scatter');
    expect(q.mode).toBe('lines');
    expect(q.line).toEqual({ shape: 'hv' });
    expect(q.y).toEqual([3, 1, 0]);
  });
});

describe('Monitor totals', () => {
  it('adds the states asked over every backend', () => {
    const counts = { local: { finished: 3, failed: 1, ready: 2 }, slurm: { submitted: 4 } };
    expect(total(counts, ['ready', 'submitted'])).toBe(6);
    expect(total(counts, ['failed'])).toBe(1);
  });
});
