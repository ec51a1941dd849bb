import { describe, expect, it } from 'vitest';

import { memoLabel, memoState } from '../src/memo';

describe('memo state of a work', () => {
  it('tells cached, ran and mixed works apart', () => {
    expect(memoState({ ran: 0, cached: 3, failed: 0 })).toBe('cached');
    expect(memoState({ ran: 3, cached: 0, failed: 0 })).toBe('ran');
    expect(memoState({ ran: 0, cached: 0, failed: 1 })).toBe('ran');
    expect(memoState({ ran: 1, cached: 2, failed: 0 })).toBe('mixed');
    expect(memoState({ ran: 0, cached: 0, failed: 0 })).toBeNull();
    expect(memoState(undefined)).toBeNull();
  });

  it('labels them for the DAG', () => {
    expect(memoLabel({ ran: 0, cached: 3, failed: 0 })).toBe('cached');
    expect(memoLabel({ ran: 1, cached: 2, failed: 1 })).toBe('2/4 cached');
    expect(memoLabel(null)).toBe('');
  });
});
