/**
 * Upstream sessions are ready only when the upstream speaks (#10.5), and a stream the upstream
 * refused before its first byte is retried on another session (#10.3). Fake upstreams written
 * for the test (raw frames over node:net) play the faults: a TCP server that never sends its
 * SETTINGS, a peer that stops answering PING, one that refuses the first streams of a session.
 */
import http2 from 'node:http2';
import t from 'tap';
import type { Test } from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import type { TestGateway } from '../helpers/gateway.ts';
import { connect, post, until } from '../helpers/h2.ts';
import { startRawH2, upstreamYaml } from '../helpers/raw-h2-upstream.ts';
import type { RawH2Conn, RawH2Options } from '../helpers/raw-h2-upstream.ts';

const { NGHTTP2_REFUSED_STREAM, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_INTERNAL_ERROR } = http2.constants;
const BODY = { model: 'ghost-small', prompt: 'x', stream: true };

async function rig(t: Test, fake: RawH2Options, yaml: { pool?: string; timeouts?: string; extra?: string } = {}): Promise<{ g: TestGateway; conns: RawH2Conn[] }> {
  const up = await startRawH2(t, fake);
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => upstreamYaml(up.url, 'h2c', yaml) });
  return { g, conns: up.conns };
}

async function upstreamState(g: TestGateway): Promise<{ live: number; connecting: number; draining: number; sessionsOpened: number }> {
  return ((await (await fetch(`${g.adminUrl}/-/upstreams`)).json()) as Record<string, never>).local;
}

async function retries(g: TestGateway, reason: string): Promise<number> {
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  const m = new RegExp(`^ghostgate_upstream_retries_total\\{upstream="local",reason="${reason}"\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

t.test('an upstream that accepts TCP and never sends SETTINGS: not live, fast coded 502, sessions replaced', async (t) => {
  let speak = false;
  const { g, conns } = await rig(t, { settings: () => speak, onRequest: (c, id) => c.complete(id) },
    { timeouts: '{ connectMs: 300, firstByteMs: 20000 }' });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const st = await upstreamState(g);
  t.equal(st.live, 0, '/-/upstreams: no session is live');
  const t0 = performance.now();
  const r = await post(s, '/v1/completions', BODY);
  const ms = performance.now() - t0;
  t.equal(r.status, 502, r.text);
  t.equal(JSON.parse(r.text).error.code, 'GW_ERR_UPSTREAM_CONNECT');
  t.ok(ms < 10_000, `answered within the connect budget, not the 20 s first-byte timeout (${ms.toFixed(0)} ms)`);
  // Sessions that never got SETTINGS are replaced (with back-off), without any traffic.
  await until(() => conns.length >= 5, 20_000);
  t.ok((await upstreamState(g)).sessionsOpened >= 5, 'sessions are replaced');
  // With back-off: round 1 (2 sessions) fails after 300 ms, round 2 starts ≥ 500 ms later and
  // fails after 300 ms, round 3 ≥ 2 s after that (the back-off doubles per failed connect).
  t.ok(conns[4]!.at - conns[2]!.at >= 2000, `the back-off grows (${(conns[4]!.at - conns[2]!.at).toFixed(0)} ms between rounds 2 and 3)`);
  // The upstream starts speaking: the next replacement sessions become live and serve.
  speak = true;
  await until(async () => (await upstreamState(g)).live === 2, 20_000, 50);
  const ok = await post(s, '/v1/completions', BODY);
  t.equal(ok.status, 200);
  t.equal(ok.events.at(-1), '[DONE]');
});

t.test('a peer that stops answering PING is closed even with a stream in flight; the waiting request moves to a fresh session', async (t) => {
  // The first two connections (the warm pool) go dead: no PING ACK, requests never answered.
  const dead = (c: RawH2Conn, conns: RawH2Conn[]): boolean => conns.indexOf(c) < 2;
  let all: RawH2Conn[] = [];
  const { g, conns } = await rig(t, {
    answerPing: (c) => !dead(c, all),
    onRequest: (c, id) => { if (!dead(c, all)) c.complete(id); },
  }, { pool: '{ size: 2, pingIntervalMs: 200 }', timeouts: '{ connectMs: 1000, firstByteMs: 30000 }' });
  all = conns;
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const t0 = performance.now();
  const r = await post(s, '/v1/completions', BODY);
  const ms = performance.now() - t0;
  t.equal(r.status, 200, r.text);
  t.equal(r.events.at(-1), '[DONE]', 'served in full on a fresh session');
  t.ok(ms < 15_000, `long before the 30 s first-byte timeout (${ms.toFixed(0)} ms)`);
  t.ok(conns[0]!.requests + conns[1]!.requests >= 1, 'the request had been sent to a dead session first');
  t.ok(await retries(g, 'dead_session') >= 1, 'counted as a retry, reason dead_session');
  await until(() => conns[0]!.socket.destroyed && conns[1]!.socket.destroyed, 10_000);
  t.pass('both dead sessions were closed by the gateway');
  await until(async () => (await upstreamState(g)).live === 2, 10_000);
  t.pass('/-/upstreams: two live sessions again');
});

t.test('a peer that stops answering PING mid-response: the client gets a mid-stream failure, not a hang', async (t) => {
  let silent = false;
  const { g } = await rig(t, {
    answerPing: () => !silent,
    onRequest: (c, id) => { c.respond(id); c.data(id, 'data: {"choices":[{"text":"a"}]}\n\n'); silent = true; },
  }, { pool: '{ size: 1, pingIntervalMs: 200 }', timeouts: '{ connectMs: 1000, firstByteMs: 30000, idleMs: 60000 }' });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', BODY);
  t.equal(r.status, 200);
  t.notOk(r.complete, 'never a clean end');
  t.match(r.text, /event: error\ndata: \{"error":\{"code":"GW_ERR_UPSTREAM_ABORTED"/);
});

t.test('a session draining after GOAWAY is not taken for dead: its long stream finishes', async (t) => {
  const { g } = await rig(t, {
    onRequest: (c, id) => {
      c.respond(id);
      c.goaway(id);
      // Keep streaming for several PING intervals after the GOAWAY.
      let n = 0;
      const tick = setInterval(() => {
        if (++n < 8) return c.data(id, `data: {"choices":[{"text":"${n}"}]}\n\n`);
        clearInterval(tick);
        c.data(id, 'data: [DONE]\n\n', true);
      }, 100);
    },
  }, { pool: '{ size: 1, pingIntervalMs: 100 }' });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', BODY);
  t.equal(r.status, 200);
  t.ok(r.complete, 'clean end');
  t.equal(r.events.length, 8, 'every chunk and [DONE]');
});

t.test('a stalled gateway event loop does not mistake a PING answered meanwhile for a dead peer', async (t) => {
  // The real model server (its own process) answers the PING while this process (where the
  // gateway runs) is blocked; the ACK then sits unread when the next PING round is due.
  const g = await startGateway(t, {
    upstreamsYaml: (m) => `upstreams:\n  local:\n    url: ${m.url}\n    protocol: h2c\n    pool: { size: 1, pingIntervalMs: 200 }\nmodels:\n  ghost-small: { upstream: local }`,
  });
  const probe = http2.connect(g.url);
  probe.on('error', () => {});
  const proto = Object.getPrototypeOf(probe) as { ping: (...a: unknown[]) => boolean };
  probe.destroy();
  const ping = proto.ping;
  let calls = 0;
  proto.ping = function stallAfterFirstPing(this: unknown, ...a: unknown[]): boolean {
    const sent = ping.apply(this, a);
    // Block right after the first PING is sent, in the check phase: timers run next.
    if (++calls === 1) setImmediate(() => { const end = performance.now() + 700; while (performance.now() < end) { /* busy */ } });
    return sent;
  };
  t.teardown(() => { proto.ping = ping; });
  await until(() => calls >= 4, 10_000);
  t.equal(g.gw.runtime.upstreams.get('local')!.stats().sessionsOpened, 1, 'the session was kept: no replacement');
  const s = await connect(g.url);
  t.teardown(() => s.close());
  t.equal((await post(s, '/v1/completions', BODY)).events.at(-1), '[DONE]');
});

t.test('REFUSED_STREAM on the first stream of each session: retried on the other session, then served', async (t) => {
  const seen: number[] = [];
  let all: RawH2Conn[] = [];
  const { g, conns } = await rig(t, {
    onRequest: (c, id, nth) => {
      seen.push(all.indexOf(c));
      if (nth === 1) c.rst(id, NGHTTP2_REFUSED_STREAM); else c.complete(id);
    },
  });
  all = conns;
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', BODY);
  t.equal(r.status, 200, r.text);
  t.equal(r.events.at(-1), '[DONE]');
  t.equal(seen.length, 3, 'three attempts: refused, refused, served');
  t.not(seen[1], seen[0], 'the retry went to another session');
  t.not(seen[2], seen[1], 'and the next retry to another again');
  t.equal(await retries(g, 'refused_stream'), 2, 'each retry counted');
});

t.test('ENHANCE_YOUR_CALM on a one-session pool: the retry opens a new session', async (t) => {
  const up = await startRawH2(t, { onRequest: (c, id, nth) => { if (nth === 1) c.rst(id, NGHTTP2_ENHANCE_YOUR_CALM); else c.complete(id); } });
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => upstreamYaml(up.url, 'h2c', { pool: '{ size: 1 }' }) });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', BODY);
  t.equal(r.status, 200, r.text);
  t.equal(r.events.at(-1), '[DONE]');
  // A refuses (its 1st) → B opened for the retry refuses (its 1st) → back on A (its 2nd): served.
  t.equal(up.conns.length, 2, 'a second session was opened for the retry');
  t.equal(up.conns[0]!.requests, 2);
  t.equal(up.conns[1]!.requests, 1);
  t.equal(await retries(g, 'enhance_your_calm'), 2);
});

t.test('retries are bounded: an upstream refusing every stream gives a coded 503 after maxRetries', async (t) => {
  const up = await startRawH2(t, { onRequest: (c, id) => c.rst(id, NGHTTP2_REFUSED_STREAM) });
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => upstreamYaml(up.url, 'h2c', { extra: '    maxRetries: 2' }) });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', BODY);
  t.equal(r.status, 503, r.text);
  t.equal(JSON.parse(r.text).error.code, 'GW_ERR_UPSTREAM_UNAVAILABLE');
  t.equal(up.conns.reduce((n, c) => n + c.requests, 0), 3, 'one attempt and two retries, no more');
});

t.test('a reset that does not say "refused" is not retried (the upstream may have processed it)', async (t) => {
  const up = await startRawH2(t, { onRequest: (c, id) => c.rst(id, NGHTTP2_INTERNAL_ERROR) });
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => upstreamYaml(up.url, 'h2c') });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', BODY);
  t.equal(r.status, 502, r.text);
  t.equal(JSON.parse(r.text).error.code, 'GW_ERR_UPSTREAM_RESET');
  t.equal(up.conns.reduce((n, c) => n + c.requests, 0), 1, 'sent once');
});

t.test('never retried after a byte reached the client: a refusal after the response began is a mid-stream failure', async (t) => {
  const up = await startRawH2(t, {
    onRequest: (c, id) => { c.respond(id); c.data(id, 'data: {"choices":[{"text":"a"}]}\n\n'); setTimeout(() => c.rst(id, NGHTTP2_REFUSED_STREAM), 20); },
  });
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => upstreamYaml(up.url, 'h2c') });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', BODY);
  t.equal(r.status, 200);
  t.notOk(r.complete);
  t.match(r.text, /GW_ERR_UPSTREAM_ABORTED/);
  t.equal(up.conns.reduce((n, c) => n + c.requests, 0), 1, 'sent once');
});
