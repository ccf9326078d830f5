/** HTTP/1.1 upstreams: a keep-alive pool; cancel closes the upstream connection at once. */
import http2 from 'node:http2';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, open, post, until } from '../helpers/h2.ts';

/**
 * The HTTP/1.1 upstream block. `idleMs` only where the idle timeout is what is tested: elsewhere
 * a busy machine that holds the model server for 300 ms between two tokens would cut a healthy
 * stream.
 */
const h1 = (idleMs?: number) => (m: { url: string }): string => `upstreams:\n  local:\n    url: ${m.url}\n    protocol: http1\n    pool: { size: 4 }\n${idleMs ? `    timeouts: { idleMs: ${idleMs} }\n` : ''}    forwardHeaders: [x-ttft-ms, x-token-ms]\nmodels:\n  ghost-small: { upstream: local }`;

t.test('streams to [DONE] over a keep-alive HTTP/1.1 pool', async (t) => {
  const g = await startGateway(t, { upstreamsYaml: h1() });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const rs = await Promise.all(Array.from({ length: 12 }, () => post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true })));
  t.ok(rs.every((r) => r.status === 200 && r.events.at(-1) === '[DONE]'));
  for (let i = 0; i < 8; i++) await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  const opened = g.gw.runtime.upstreams.get('local')!.stats().sessionsOpened;
  t.ok(opened <= 4, `connections are reused (${opened} opened for 20 requests)`);
});

t.test('a client cancel closes the HTTP/1.1 upstream request at once', async (t) => {
  const g = await startGateway(t, { upstreamsYaml: h1() });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  // A first token a minute away: the cancel is surely before it, however slow the machine.
  const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { 'x-request-id': 'h1-cancel', 'x-ttft-ms': '60000' });
  st.on('error', () => {});
  await until(async () => (await g.modelStats()).inFlight === 1);
  const up = g.gw.runtime.upstreams.get('local')!;
  t.equal(up.stats().streams, 1, '/-/upstreams counts the request open upstream');
  st.close(http2.constants.NGHTTP2_CANCEL);
  const a = await until(async () => (await g.modelStats()).aborts.find((x) => x.id === 'h1-cancel'));
  t.equal(a.protocol, 'h1');
  t.equal(a.phase, 'before-first-token');
  await until(() => up.stats().streams === 0);
  t.equal(up.stats().streams, 0, 'and no longer once it was cancelled');
});

t.test('an upstream that goes silent mid-response hits the idle timeout: coded error, abnormal end', async (t) => {
  const g = await startGateway(t, { upstreamsYaml: h1(300) });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { 'x-token-ms': '2000' });
  t.equal(r.status, 200);
  t.notOk(r.complete);
  t.match(r.text, /GW_ERR_UPSTREAM_IDLE_TIMEOUT/, 'the client is told it was the idle timeout');
});
