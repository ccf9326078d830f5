/**
 * Two deployments, one killed (SIGKILL) under load with cancels: no client sees an error, except
 * a request whose response had already started on the killed one when it died (those cannot fail
 * over: a byte reached the client; they end with an error event, never a clean truncated end).
 */
import http2 from 'node:http2';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, sseData, waitFor } from '../helpers/h2.ts';
import { spawnModelServer } from '../model-server/fixtures/spawn.ts';

const { NGHTTP2_CANCEL } = http2.constants;
const ARGS = ['--ttft-ms', '20', '--token-ms', '3', '--tokens', '8'];
/** Each model server names itself in `x-model-server`, which the gateway relays. */

interface Rec { status: number; from: string; headersAt: number; done: boolean; errorEvent: boolean; cleanEnd: boolean; cancelled: boolean; text: string }

t.test('one of two deployments killed under load with cancels: zero client-visible errors', async (t) => {
  const a = await spawnModelServer([...ARGS, '--name', 'a']);
  const b = await spawnModelServer([...ARGS, '--name', 'b']);
  t.teardown(() => Promise.all([a.stop(), b.stop()]));
  const up = (n: string, url: string): string => `  ${n}:\n    url: ${url}\n    protocol: h2c\n    pool: { size: 2 }\n    timeouts: { connectMs: 1000, firstByteMs: 10000 }`;
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => ['upstreams:', up('a', a.url), up('b', b.url), 'models:', '  code:', '    deployments: [{ upstream: a }, { upstream: b }]', '  ghost-small: { upstream: a }'].join('\n') });
  let killAt = Infinity;
  let completedAfterKill = 0;
  let n = 0;
  const recs: Rec[] = [];
  const one = (s: http2.ClientHttp2Session, i: number): Promise<Rec> => new Promise((resolve) => {
    const rec: Rec = { status: 0, from: '', headersAt: Infinity, done: false, errorEvent: false, cleanEnd: false, cancelled: false, text: '' };
    const st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' });
    st.end(JSON.stringify({ model: 'code', prompt: `p${i}`, stream: true }));
    // 30% cancelled: half before the first byte, half after it.
    const plan = i % 10 < 3 ? (i % 2 === 0 ? 'before' : 'mid') : 'none';
    if (plan === 'before') setTimeout(() => { rec.cancelled = true; st.close(NGHTTP2_CANCEL); }, 5 + (i % 15));
    st.on('response', (h) => { rec.status = Number(h[':status']); rec.headersAt = performance.now(); rec.from = String(h['x-model-server'] ?? ''); });
    st.setEncoding('utf8');
    st.on('data', (d: string) => {
      rec.text += d;
      if (plan === 'mid' && !rec.cancelled) { rec.cancelled = true; st.close(NGHTTP2_CANCEL); }
    });
    st.on('end', () => { rec.cleanEnd = st.rstCode === undefined || st.rstCode === 0; });
    st.on('error', () => { /* recorded through close */ });
    st.on('close', () => {
      const ev = sseData(rec.text);
      rec.done = ev.at(-1) === '[DONE]';
      rec.errorEvent = rec.text.includes('event: error');
      resolve(rec);
    });
  });
  const users = Array.from({ length: 8 }, async () => {
    const s = await connect(g.url);
    try {
      while (completedAfterKill < 150) {
        const r = await one(s, n++);
        recs.push(r);
        if (performance.now() > killAt) completedAfterKill++;
      }
    } finally { s.close(); }
  });
  // Kill a once the load runs on both.
  await waitFor('40 requests before the kill', () => recs.length >= 40, 30_000);
  killAt = performance.now();
  a.child.kill('SIGKILL');
  await Promise.all(users);
  const failed = recs.filter((r) => !r.cancelled && !(r.status === 200 && r.done));
  // Its response had started from a (a byte reached the client): no failover is possible.
  const startedOnA = failed.filter((r) => r.status === 200 && r.from === 'a');
  const visible = failed.filter((r) => !startedOnA.includes(r));
  t.comment(`${recs.length} requests, ${recs.filter((r) => r.cancelled).length} cancelled, ${failed.length} failed, of which ${startedOnA.length} had started streaming from a`);
  t.same(visible.map((r) => `${r.status} ${r.text.slice(0, 200)}`), [], 'no client-visible error for requests whose response had not started from a');
  t.ok(startedOnA.every((r) => r.errorEvent || !r.cleanEnd), 'those that were streaming on a ended with an error, never a clean truncated end');
  const st = (await (await fetch(`${g.adminUrl}/-/upstreams`)).json()) as Record<string, { deployments: Array<{ state: string; failures: number; failoversOut: number }> }>;
  // Requests sent to a after it died failed over; or a was ejected first (by the failures of the
  // responses cut mid-stream) and none was sent there.
  t.ok(st.a!.deployments[0]!.failures >= 1, `a's failures were counted (${st.a!.deployments[0]!.failures}; ${st.a!.deployments[0]!.failoversOut} failovers out)`);
  t.not(st.a!.deployments[0]!.state, 'healthy', `a is out (ejected, or being probed: ${st.a!.deployments[0]!.state})`);
});
