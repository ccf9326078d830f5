/** Bad input gets a coded JSON error with the right status, and leaves nothing open. */
import http2 from 'node:http2';
import net from 'node:net';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { collect, connect, post, post1, within } from '../helpers/h2.ts';

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

// A client over the body limit that asked to close the connection is still sending its body when
// the 413 is ready. Closed on unread input, the socket would send a TCP reset: the client's write
// fails (EPIPE) and it never reads the reply. The gateway reads the rest of the body first.
// A gateway process: in this test's own process the client's writes and the gateway's close take
// turns on one event loop and the reset did not show (it did in 5 of 10 tries against a process).
// Both adapters: the HTTP/1.1 fast lane, and Fastify's route (server.fastLane: false).
for (const fastLane of [true, false]) t.test(`HTTP/1.1 with Connection: close, a body past the limit: the client reads the 413, not a reset (fastLane: ${fastLane})`, async (t) => {
  const g = await startGatewayProcess(t, { extraConfig: `limits: { bodyBytes: 4096 }\nserver: { fastLane: ${fastLane} }` });
  const port = Number(new URL(g.url).port);
  const body = Buffer.from(JSON.stringify({ model: 'ghost-small', prompt: 'x'.repeat(2_000_000) }));
  for (const [framing, head] of [
    ['content-length', `content-length: ${body.length}\r\n`],
    ['chunked', 'transfer-encoding: chunked\r\n'],
  ] as const) {
    for (let i = 0; i < 10; i++) {
      const r = await within(`the ${framing} answer`, new Promise<{ text: string; error: string }>((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        t.teardown(() => s.destroy());
        let text = '';
        let error = '';
        s.on('data', (d: Buffer) => { text += d.toString('latin1'); });
        s.on('error', (e: NodeJS.ErrnoException) => { error = e.code ?? e.message; });
        s.on('close', () => resolve({ text, error }));
        s.write(`POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\n${head}\r\n`);
        if (framing === 'chunked') { s.write(`${body.length.toString(16)}\r\n`); s.write(body); s.end('\r\n0\r\n\r\n'); } else s.end(body);
      }));
      t.equal(r.error, '', `${framing} ${i + 1}: no write error at the client`);
      t.match(r.text, /^HTTP\/1\.1 413 [^]*"code":"GW_ERR_REQ_BODY_TOO_LARGE"/, `${framing} ${i + 1}: the coded 413`);
    }
  }
});
