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
import { collect, connect, open, post, sleep, until, waitFor } from '../helpers/h2.ts';

const { NGHTTP2_CANCEL } = http2.constants;
const slow = ['--ttft-ms', '400', '--token-ms', '50', '--tokens', '40'];
// Asked of the model per request: a first token a minute away, so a cancel is surely before it
// however long a busy machine takes to see the request at the model.
const NO_FIRST_TOKEN = { 'x-ttft-ms': '60000' };

t.test('cancel before the first token: the upstream sees RST_STREAM(CANCEL) within milliseconds', async (t) => {
  const g = await startGateway(t, { modelArgs: slow });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { 'x-request-id': 'cancel-ttft', ...NO_FIRST_TOKEN });
  st.on('error', () => {});
  await until(async () => (await g.modelStats()).inFlight === 1);
  const cancelAt = performance.now();
  st.close(NGHTTP2_CANCEL);
  const abort = await until(async () => (await g.modelStats()).aborts.find((a) => a.id === 'cancel-ttft'));
  const noticed = performance.now() - cancelAt;
  t.equal(abort.phase, 'before-first-token');
  t.equal(abort.rstCode, NGHTTP2_CANCEL, 'the gateway reset the upstream stream with CANCEL');
  t.equal(abort.tokensSent, 0);
  t.ok(noticed < 10_000, `noticed long before the first token was due in 60 s (${noticed.toFixed(1)} ms incl. polling)`);
  await until(() => g.gw.runtime.inflight === 0);
  t.equal(g.gw.runtime.inflight, 0, 'nothing left in flight at the gateway');
});

t.test('cancel mid-stream: the upstream sees the reset and stops generating', async (t) => {
  const g = await startGateway(t, { modelArgs: ['--ttft-ms', '10', '--token-ms', '30', '--tokens', '1000'] });
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
  t.ok(abort.tokensSent < 100, `generation stopped (${abort.tokensSent} tokens of 1000)`);
  const stats = await g.modelStats();
  t.equal(stats.completed, 0);
});

t.test('HTTP/1.1 client closing its socket cancels the upstream too', async (t) => {
  const g = await startGateway(t, { modelArgs: slow });
  const req = http.request(`${g.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'cancel-h1', ...NO_FIRST_TOKEN } });
  req.on('error', () => {});
  req.end(JSON.stringify({ model: 'ghost-small', prompt: 'x', stream: true }));
  await until(async () => (await g.modelStats()).inFlight === 1);
  req.destroy();
  const abort = await until(async () => (await g.modelStats()).aborts.find((a) => a.id === 'cancel-h1'));
  t.equal(abort.phase, 'before-first-token');
  t.equal(abort.rstCode, NGHTTP2_CANCEL, 'h1 client → h2 upstream: still a CANCEL reset');
});

t.test('a client gone before forwarding is never sent upstream', async (t) => {
  // A policy step that is still working when the client goes (e.g. a slow async check): it
  // returns once the client is gone, and the gateway must then not forward the request.
  let entered!: () => void;
  const inStep = new Promise<void>((r) => { entered = r; });
  const delay: PluginDefinition<Record<string, never>> = definePlugin({
    name: 'test-delay', description: 'waits for the client to go', paramsSchema: { type: 'object' },
    create: () => {
      let first = true; // only the first request waits; the one after the cancel goes through
      return {
        request: (ex) => {
          if (!first) return;
          first = false;
          return new Promise<void>((r) => {
            entered();
            ex.signal.addEventListener('abort', () => setImmediate(r), { once: true });
          });
        },
      };
    },
  });
  const g = await startGateway(t, {
    policies: { 'slow.yaml': 'name: slow\nsteps:\n  - use: test-delay\n' },
    gatewayOptions: { plugins: [delay as PluginDefinition<unknown>] },
  });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { 'x-request-id': 'never-sent' });
  st.on('error', () => {});
  await inStep;
  st.close(NGHTTP2_CANCEL);
  await waitFor('the request to be counted as cancelled before forward', async () => (await g.gw.metrics.cancelledBeforeForward.get()).values[0]?.value === 1);
  await until(() => g.gw.runtime.inflight === 0);
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
  // Streams of 100,000 tokens: none can end before its cancel, however slow the machine.
  const g = await startGateway(t, { modelArgs: ['--ttft-ms', '30', '--token-ms', '5', '--tokens', '100000'] });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  let goaway = false;
  s.on('goaway', () => { goaway = true; });
  const all: Array<Promise<unknown>> = [];
  for (let i = 0; i < 100; i++) {
    const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: `p${i}`, stream: true }, { 'x-request-id': `c${i}` });
    st.on('error', () => {});
    const done = collect(st);
    // Half at once (before the first token, or before reaching the model), half on the first token.
    if (i % 2 === 0) setImmediate(() => st.close(NGHTTP2_CANCEL));
    else st.once('data', () => st.close(NGHTTP2_CANCEL));
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
  const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'after', stream: true }, { 'x-tokens': '3' });
  t.equal(r.status, 200);
  t.equal(r.events.at(-1), '[DONE]');
  t.equal(g.gw.runtime.inflight, 0);
});
