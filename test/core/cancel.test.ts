/**
 * Cancellation: a client reset reaches the model at once (before the first token and mid-stream),
 * a request whose client is gone before forwarding is never sent, and the client's HTTP/2
 * session survives many cancels.
 */
import http from 'node:http';
import http2 from 'node:http2';
import t from 'tap';
import { definePlugin } from '../../core/types.ts';
import type { PluginDefinition } from '../../core/types.ts';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, open, post, sleep, until } from '../helpers/h2.ts';

const { NGHTTP2_CANCEL } = http2.constants;
const slow = ['--ttft-ms', '400', '--token-ms', '50', '--tokens', '40'];

t.test('cancel before the first token: the upstream sees RST_STREAM(CANCEL) within milliseconds', async (t) => {
  const g = await startGateway(t, { modelArgs: slow });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { 'x-request-id': 'cancel-ttft' });
  st.on('error', () => {});
  await until(async () => (await g.modelStats()).inFlight === 1);
  const cancelAt = performance.now();
  st.close(NGHTTP2_CANCEL);
  const abort = await until(async () => (await g.modelStats()).aborts.find((a) => a.id === 'cancel-ttft'));
  const noticed = performance.now() - cancelAt;
  t.equal(abort.phase, 'before-first-token');
  t.equal(abort.rstCode, NGHTTP2_CANCEL, 'the gateway reset the upstream stream with CANCEL');
  t.equal(abort.tokensSent, 0);
  t.ok(noticed < 400, `noticed well before the first token was due (${noticed.toFixed(1)} ms incl. polling)`);
  await until(() => g.gw.runtime.inflight === 0);
  t.equal(g.gw.runtime.inflight, 0, 'nothing left in flight at the gateway');
});

t.test('cancel mid-stream: the upstream sees the reset and stops generating', async (t) => {
  const g = await startGateway(t, { modelArgs: ['--ttft-ms', '10', '--token-ms', '30', '--tokens', '100'] });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { 'x-request-id': 'cancel-mid' });
  st.on('error', () => {});
  let chunks = 0;
  await new Promise<void>((resolve) => st.on('data', () => { if (++chunks === 3) resolve(); }));
  st.close(NGHTTP2_CANCEL);
  const abort = await until(async () => (await g.modelStats()).aborts.find((a) => a.id === 'cancel-mid'));
  t.equal(abort.phase, 'streaming');
  t.equal(abort.rstCode, NGHTTP2_CANCEL);
  t.ok(abort.tokensSent < 10, `generation stopped (${abort.tokensSent} tokens of 100)`);
  const stats = await g.modelStats();
  t.equal(stats.completed, 0);
});

t.test('HTTP/1.1 client closing its socket cancels the upstream too', async (t) => {
  const g = await startGateway(t, { modelArgs: slow });
  const req = http.request(`${g.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'cancel-h1' } });
  req.on('error', () => {});
  req.end(JSON.stringify({ model: 'ghost-small', prompt: 'x', stream: true }));
  await until(async () => (await g.modelStats()).inFlight === 1);
  req.destroy();
  const abort = await until(async () => (await g.modelStats()).aborts.find((a) => a.id === 'cancel-h1'));
  t.equal(abort.phase, 'before-first-token');
  t.equal(abort.rstCode, NGHTTP2_CANCEL, 'h1 client → h2 upstream: still a CANCEL reset');
});

t.test('a client gone before forwarding is never sent upstream', async (t) => {
  // A policy step that takes 200 ms (e.g. a slow async check) opens a window to cancel in.
  const delay: PluginDefinition<{ ms: number }> = definePlugin({
    name: 'test-delay', description: 'waits', paramsSchema: { type: 'object', properties: { ms: { type: 'integer', default: 200 } } },
    create: (p) => ({ request: () => new Promise<void>((r) => setTimeout(r, p.ms)) }),
  });
  const g = await startGateway(t, {
    policies: { 'slow.yaml': 'name: slow\nsteps:\n  - use: test-delay\n    params: { ms: 200 }\n' },
    gatewayOptions: { plugins: [delay as PluginDefinition<unknown>] },
  });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { 'x-request-id': 'never-sent' });
  st.on('error', () => {});
  await sleep(50);
  st.close(NGHTTP2_CANCEL);
  await sleep(300);
  const reqs = await g.modelRequests();
  t.notOk(reqs.some((r) => r.id === 'never-sent'), 'the model never received it');
  const m = await g.gw.metrics.cancelledBeforeForward.get();
  t.equal(m.values[0]?.value, 1, 'counted as cancelled before forward');
  t.equal(g.gw.runtime.inflight, 0);
  // The session is still fine.
  const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'y', stream: true });
  t.equal(r.status, 200);
});

t.test('one client session survives 100 cancels (before and after the first token) and keeps working', async (t) => {
  const g = await startGateway(t, { modelArgs: ['--ttft-ms', '30', '--token-ms', '5', '--tokens', '50'] });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  let goaway = false;
  s.on('goaway', () => { goaway = true; });
  const all: Array<Promise<unknown>> = [];
  for (let i = 0; i < 100; i++) {
    const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: `p${i}`, stream: true }, { 'x-request-id': `c${i}` });
    st.on('error', () => {});
    const done = collect(st);
    const after = i % 2 === 0 ? 5 : 45; // before the first token / mid-stream
    setTimeout(() => st.close(NGHTTP2_CANCEL), after);
    all.push(done);
    if (i % 10 === 9) await sleep(20);
  }
  await Promise.all(all);
  await until(async () => (await g.modelStats()).inFlight === 0);
  const stats = await g.modelStats();
  t.notOk(goaway, 'the gateway never sent GOAWAY');
  t.notOk(s.destroyed || s.closed, 'the session is still open');
  t.equal(stats.completed, 0, 'no cancelled request ran to completion upstream');
  t.equal(stats.aborted + (100 - stats.requests), 100, 'every cancel either reset the upstream stream or never reached it');
  const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'after', stream: true });
  t.equal(r.status, 200);
  t.equal(r.events.at(-1), '[DONE]');
  t.equal(g.gw.runtime.inflight, 0);
});
