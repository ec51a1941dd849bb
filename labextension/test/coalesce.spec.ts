import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { Coalescer, backoffDelay } from '../src/coalesce';

describe('coalescing of refreshes', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('turns a burst of triggers into a leading and one trailing call', async () => {
    const calls: number[] = [];
    const c = new Coalescer<string>(() => {
      calls.push(Date.now());
    }, 1000);
    for (let i = 0; i < 500; i++) {
      c.trigger('run-1');
    }
    await vi.advanceTimersByTimeAsync(0);
    expect(calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(999);
    expect(calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(5000);
    expect(calls).toHaveLength(2);
    c.dispose();
  });

  it('keeps keys apart and never runs one key twice at once', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const seen: string[] = [];
    const c = new Coalescer<string>(async k => {
      seen.push(k);
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise(r => setTimeout(r, 3000)); // slower than the interval
      inFlight--;
    }, 1000);
    c.trigger('a');
    c.trigger('b');
    await vi.advanceTimersByTimeAsync(10);
    c.trigger('a');
    c.trigger('a');
    await vi.advanceTimersByTimeAsync(10000);
    expect(seen.filter(k => k === 'a')).toHaveLength(2);
    expect(seen.filter(k => k === 'b')).toHaveLength(1);
    expect(maxInFlight).toBe(2); // a and b, never a twice
    c.dispose();
  });

  it('backs off exponentially with jitter, up to a cap', () => {
    const mid = () => 0.5;
    expect([0, 1, 2, 3, 4, 5, 6].map(a => backoffDelay(a, 1000, 30000, 0.2, mid))).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    expect(backoffDelay(0, 1000, 30000, 0.2, () => 0)).toBe(800);
    expect(backoffDelay(0, 1000, 30000, 0.2, () => 1)).toBe(1200);
  });
});
