/** What the client sees when the upstream misbehaves: never a silent partial completion. */
import http2 from 'node:http2';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, open, post, until } from '../helpers/h2.ts';

t.test('GOAWAY every 10 streams under concurrent load: zero failed or truncated responses', async (t) => {
  const g = await startGateway(t, { modelArgs: ['--ttft-ms', '5', '--token-ms', '2', '--tokens', '6', '--goaway-every', '10'] });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const results = [];
  for (let batch = 0; batch < 10; batch++) {
    results.push(...await Promise.all(Array.from({ length: 30 }, (_, i) => post(s, '/v1/completions', { model: 'ghost-small', prompt: `b${batch}-${i}`, stream: true }))));
  }
  const bad = results.filter((r) => r.status !== 200 || !r.complete || r.events.at(-1) !== '[DONE]');
  t.equal(results.length, 300);
  t.equal(bad.length, 0, `failed or truncated: ${bad.length}`);
  const stats = await g.modelStats();
  t.ok(stats.sessions.goawaysSent >= 20, `the upstream sent GOAWAY ${stats.sessions.goawaysSent} times`);
  const up = g.gw.runtime.upstreams.get('local')!.stats();
  t.ok(up.sessionsOpened <= Math.ceil(300 / 10) + 6, `sessions opened stay near requests/10 + pool (${up.sessionsOpened})`);
  t.ok(up.live <= 8, `live sessions stay near the pool size (${up.live})`);
});

t.test('upstream fails mid-stream: the client gets an error event and an abnormal end, never a clean one', async (t) => {
  const g = await startGateway(t);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { 'x-fail-after-tokens': '3' });
  t.equal(r.status, 200, 'headers were already sent');
  t.notOk(r.complete, 'the stream did not end cleanly');
  t.equal(r.rstCode, http2.constants.NGHTTP2_INTERNAL_ERROR, 'h2 client sees RST_STREAM(INTERNAL_ERROR)');
  t.not(r.events.at(-1), '[DONE]');
  t.match(r.text, /event: error\ndata: \{"error":\{"code":"GW_ERR_UPSTREAM_ABORTED"/);
  // The session survives and serves the next request.
  const ok = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'y', stream: true });
  t.equal(ok.events.at(-1), '[DONE]');
});

t.test('upstream process killed mid-stream: in-flight streams end abnormally with a coded error', async (t) => {
  const g = await startGateway(t, { modelArgs: ['--ttft-ms', '5', '--token-ms', '40', '--tokens', '100'] });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  const done = collect(st);
  await new Promise<void>((r) => st.once('data', () => r()));
  g.model!.child.kill('SIGKILL');
  const r = await done;
  t.equal(r.status, 200);
  t.notOk(r.complete);
  t.match(r.text, /GW_ERR_UPSTREAM_ABORTED/);
  // Now the upstream is down: a coded 502 before any byte.
  const down = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  t.equal(down.status, 502, down.text);
  // Connection refused, or (if the pool had not yet seen the session die) a reset: both coded 502s.
  t.match(JSON.parse(down.text).error.code, /^GW_ERR_UPSTREAM_(CONNECT|RESET)$/);
  await until(() => g.gw.runtime.inflight === 0);
});

t.test('upstream down from the start: coded 502, fast, and the health check counts it', async (t) => {
  const g = await startGateway(t, { noModel: true });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const t0 = performance.now();
  const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  t.equal(r.status, 502);
  t.match(JSON.parse(r.text), { error: { code: 'GW_ERR_UPSTREAM_CONNECT', message: /local/ } });
  t.ok(performance.now() - t0 < 10_000, 'at once (connection refused), not after a hang'); // loose: a busy machine stalls
  t.equal(g.gw.health.status().failures, 1);
});

t.test('an upstream error status is relayed as the upstream sent it', async (t) => {
  const g = await startGateway(t);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' }, { 'x-status': '503' });
  t.equal(r.status, 503);
  t.match(JSON.parse(r.text), { error: { type: 'server_error' } });
});

t.test('time to first byte budget: a silent upstream gives 504 and the upstream stream is reset', async (t) => {
  const g = await startGateway(t, {
    upstreamsYaml: (m) => `upstreams:\n  local:\n    url: ${m.url}\n    timeouts: { firstByteMs: 150 }\n    forwardHeaders: [x-ttft-ms]\nmodels:\n  ghost-small: { upstream: local }`,
  });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' }, { 'x-ttft-ms': '2000', 'x-request-id': 'slow-1' });
  t.equal(r.status, 504);
  t.equal(JSON.parse(r.text).error.code, 'GW_ERR_UPSTREAM_TIMEOUT');
  const abort = await until(async () => (await g.modelStats()).aborts.find((a) => a.id === 'slow-1'));
  t.equal(abort.rstCode, http2.constants.NGHTTP2_CANCEL);
});
