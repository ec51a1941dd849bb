import { describe, expect, it, vi } from 'vitest';

import { IddsApi } from '../src/api';

function settings(over: Record<string, unknown> = {}) {
  const calls: Array<[string, RequestInit]> = [];
  const fetch = vi.fn(async (req: Request | string, init?: RequestInit) => {
    // makeRequest appends a cache-busting timestamp to GETs
    const url = (typeof req === 'string' ? req : req.url).replace(/[&?]\d{10,}$/, '');
    calls.push([url, init || {}]);
    return new Response(JSON.stringify({ requests: [], id: 1, action: 'abort', changed: true }), {
      status: 200,
      headers: { 'Content-Type': 'application/json' }
    });
  });
  return {
    calls,
    s: {
      baseUrl: 'http://hub.example/user/alice/',
      wsUrl: 'ws://hub.example/user/alice/',
      appUrl: '/lab',
      token: 'tok',
      appendToken: true,
      init: { cache: 'no-store' },
      fetch,
      Headers,
      Request,
      WebSocket: class {},
      serializer: { serialize: JSON.stringify, deserialize: JSON.parse },
      ...over
    } as any
  };
}

describe('REST and stream URLs under a JupyterHub base URL', () => {
  it('puts the API under <base_url>idds/api/v1 and the stream beside it', () => {
    const { s } = settings();
    const api = new IddsApi(s);
    expect(api.base).toBe('http://hub.example/user/alice/idds/api/v1');
    expect(api.streamUrl()).toBe('ws://hub.example/user/alice/idds/api/v1/stream?token=tok');
    const same = new IddsApi(settings({ appendToken: false }).s);
    expect(same.streamUrl()).toBe('ws://hub.example/user/alice/idds/api/v1/stream');
  });

  it('sends queries, work names and actions where the OpenAPI spec puts them', async () => {
    const { s, calls } = settings();
    const api = new IddsApi(s);
    await api.listRuns({ status: 'running', limit: 50 });
    await api.jobs(3, 'loop[1].step', { offset: 100, limit: 100, status: '' });
    await api.control(3, 'abort');
    expect(calls[0][0]).toBe('http://hub.example/user/alice/idds/api/v1/requests?status=running&limit=50');
    expect(calls[1][0]).toBe('http://hub.example/user/alice/idds/api/v1/monitor/3/works/loop%5B1%5D.step/jobs?offset=100&limit=100');
    expect(calls[2][0]).toBe('http://hub.example/user/alice/idds/api/v1/requests/3/abort');
    // the Jupyter token goes with every request
    const req = s.fetch.mock.calls[2][0] as Request;
    expect(req.method).toBe('POST');
    expect(req.headers.get('Authorization')).toBe('token tok');
  });
});
