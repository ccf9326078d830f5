/** Bad input gets a coded JSON error with the right status, and leaves nothing open. */
import http2 from 'node:http2';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, post, post1 } from '../helpers/h2.ts';

t.test('each bad request: status, stable code, JSON body; the session stays usable', async (t) => {
  const g = await startGateway(t, { extraConfig: 'limits: { bodyBytes: 4096 }' });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const cases: Array<{ name: string; path?: string; method?: string; body: string; headers?: Record<string, string>; status: number; code: string }> = [
    { name: 'malformed JSON', body: '{"model": "ghost-small", ', status: 400, code: 'GW_ERR_REQ_INVALID_JSON' },
    { name: 'empty JSON body', body: '', status: 400, code: 'GW_ERR_REQ_INVALID_JSON' },
    { name: 'JSON that is not an object', body: '[1,2]', status: 400, code: 'GW_ERR_REQ_INVALID_BODY' },
    { name: 'model of the wrong type', body: '{"model": 7}', status: 400, code: 'GW_ERR_REQ_INVALID_BODY' },
    { name: '__proto__ in the body', body: '{"model":"ghost-small","__proto__":{"x":1}}', status: 400, code: 'GW_ERR_REQ_INVALID_JSON' },
    { name: 'oversized body', body: JSON.stringify({ model: 'ghost-small', prompt: 'x'.repeat(10_000) }), status: 413, code: 'GW_ERR_REQ_BODY_TOO_LARGE' },
    { name: 'wrong content type', body: 'hello', headers: { 'content-type': 'text/plain' }, status: 415, code: 'GW_ERR_REQ_UNSUPPORTED_MEDIA_TYPE' },
    { name: 'unknown route', path: '/v1/embeddings', body: '{}', status: 404, code: 'GW_ERR_REQ_NOT_FOUND' },
    { name: 'wrong method', path: '/v1/completions', method: 'GET', body: '', status: 405, code: 'GW_ERR_REQ_METHOD_NOT_ALLOWED' },
    { name: 'unknown model', body: '{"model":"gpt-17","prompt":"x"}', status: 404, code: 'GW_ERR_ROUTE_UNKNOWN_MODEL' },
    { name: 'token exchange not configured', path: '/v1/token', body: '{}', status: 404, code: 'GW_ERR_AUTH_NOT_CONFIGURED' },
  ];
  for (const c of cases) {
    const method = c.method ?? 'POST';
    const st = s.request({ ':method': method, ':path': c.path ?? '/v1/completions', 'content-type': 'application/json', ...c.headers }, { endStream: method === 'GET' });
    if (method !== 'GET') st.end(c.body);
    const r = await collect(st);
    t.equal(r.status, c.status, `${c.name}: status`);
    t.match(r.headers['content-type'], /^application\/json/, `${c.name}: JSON`);
    const parsed = JSON.parse(r.text) as { error: { code: string; message: string } };
    t.equal(parsed.error.code, c.code, `${c.name}: code`);
    t.type(parsed.error.message, 'string');
    t.ok(r.complete, `${c.name}: response ended cleanly`);
  }
  t.equal(g.gw.runtime.inflight, 0, 'nothing in flight');
  t.notOk(s.closed || s.destroyed, 'the client session survived every bad request');
  const ok = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  t.equal(ok.events.at(-1), '[DONE]');
  const reqs = await g.modelRequests();
  t.equal(reqs.length, 1, 'no bad request reached the model');
});

t.test('HTTP/1.1: coded errors too, and the keep-alive connection stays usable', async (t) => {
  const g = await startGateway(t);
  const bad = await post1(`${g.url}/v1/completions`, '{nope');
  t.equal(bad.status, 400);
  t.equal(JSON.parse(bad.text).error.code, 'GW_ERR_REQ_INVALID_JSON');
  const type = await post1(`${g.url}/v1/completions`, 'x', { 'content-type': 'text/plain' });
  t.equal(type.status, 415);
});

t.test('a client that sends too many concurrent streams is held to maxConcurrentStreams', async (t) => {
  const g = await startGateway(t, { extraConfig: 'http2: { maxConcurrentStreams: 8 }' });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  await new Promise<void>((r) => (s.remoteSettings.maxConcurrentStreams === 8 ? r() : s.once('remoteSettings', () => r())));
  t.equal(s.remoteSettings.maxConcurrentStreams, 8, 'advertised to the client');
  const rs = await Promise.all(Array.from({ length: 20 }, () => post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true })));
  t.ok(rs.every((r) => r.status === 200 && r.events.at(-1) === '[DONE]'), 'queued client-side, all served');
  void http2;
});
