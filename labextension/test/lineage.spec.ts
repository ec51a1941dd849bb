import { describe, expect, it, vi } from 'vitest';

import { IddsApi } from '../src/api';
import { provenanceOf } from '../src/lineage';

describe('the Lineage tab', () => {
  it('reads a job provenance from the monitor group, the work name quoted', async () => {
    const urls: string[] = [];
    const fetch = vi.fn(async (req: Request | string) => {
      urls.push((typeof req === 'string' ? req : req.url).replace(/[&?]\d{10,}$/, ''));
      return new Response(JSON.stringify({ job_id: 7, cached: true, upstream: [] }), {
        status: 200,
        headers: { 'Content-Type': 'application/json' }
      });
    });
    const api = new IddsApi({
      baseUrl: 'http://localhost:8888/',
      wsUrl: 'ws://localhost:8888/',
      appUrl: '/lab',
      token: 'tok',
      appendToken: false,
      init: { cache: 'no-store' },
      fetch,
      Headers,
      Request,
      WebSocket: class {},
      serializer: { serialize: JSON.stringify, deserialize: JSON.parse }
    } as any);
    const p = await provenanceOf(api, 12, 'step a', 3);
    expect(p.cached).toBe(true);
    expect(urls[0]).toBe('http://localhost:8888/idds/api/v1/monitor/12/works/step%20a/jobs/3/provenance');
  });
});
