/**
 * A request never waits behind streams it does not share: when every upstream session is at the
 * peer's SETTINGS_MAX_CONCURRENT_STREAMS, the pool opens another session (bounded) and sends the
 * request there, instead of letting nghttp2 queue it on a full session until one of the streams
 * already there ends (a slow or stalled one may take the whole first-byte timeout).
 */
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, open, post, waitFor } from '../helpers/h2.ts';
import { startRawH2, upstreamYaml } from '../helpers/raw-h2-upstream.ts';
import type { RawH2Conn } from '../helpers/raw-h2-upstream.ts';

const BODY = { model: 'ghost-small', prompt: 'x', stream: true };

t.test('every session at the peer\'s stream limit with stalled streams: a new request goes to a new session, at once', async (t) => {
  const held: Array<{ c: RawH2Conn; id: number }> = [];
  // The upstream allows 2 streams per session; it never answers the first connection's streams.
  let first: RawH2Conn | undefined;
  const up = await startRawH2(t, {
    maxConcurrentStreams: 2,
    onRequest: (c, id) => {
      first ??= c;
      if (c === first) held.push({ c, id });
      else c.complete(id);
    },
  });
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => upstreamYaml(up.url, 'h2c', { pool: '{ size: 1 }', timeouts: '{ connectMs: 5000, firstByteMs: 20000 }' }) });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  // Two requests that stall upstream fill the only session.
  const stalled = [open(s, '/v1/completions', BODY), open(s, '/v1/completions', BODY)];
  for (const st of stalled) st.on('error', () => { /* reset at the end */ });
  await waitFor('the two stalled streams to reach the upstream', () => held.length === 2, 30_000);
  // A well-behaved request now: answered from a second session, not queued behind the stalled two
  // (queued, it would wait for the 20 s first-byte timeout).
  const t0 = performance.now();
  const r = await post(s, '/v1/completions', BODY);
  const ms = performance.now() - t0;
  t.equal(r.status, 200, r.text);
  t.equal(r.events.at(-1), '[DONE]', 'complete');
  t.ok(ms < 15_000, `answered long before the 20 s first-byte timeout (${ms.toFixed(0)} ms)`);
  t.equal(up.conns.length, 2, 'a second session was opened for it');
  t.equal(up.conns[0]!.requests, 2, 'the full session never got a stream beyond the peer\'s limit');
  for (const st of stalled) st.close();
});

t.test('all sessions (4 × pool size) at the peer\'s limit: a request waits for a stream to end, then takes its place', async (t) => {
  const held: Array<{ c: RawH2Conn; id: number }> = [];
  let n = 0;
  const up = await startRawH2(t, {
    maxConcurrentStreams: 2,
    onRequest: (c, id) => { if (++n <= 8) held.push({ c, id }); else c.complete(id); },
  });
  // No per-address cap here (one client plays every request): no owner's share applies.
  const g = await startGateway(t, { noModel: true, extraConfig: 'limits: { maxInflightPerClientIp: 0 }', upstreamsYaml: () => upstreamYaml(up.url, 'h2c', { pool: '{ size: 1 }', timeouts: '{ connectMs: 30000, firstByteMs: 30000 }' }) });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const stalled = Array.from({ length: 8 }, () => open(s, '/v1/completions', BODY));
  for (const st of stalled) st.on('error', () => { /* reset at the end */ });
  await waitFor('8 stalled streams upstream, on 4 sessions', () => held.length === 8, 10_000).catch((e) => { console.log('held', held.length, 'conns', up.conns.length, up.conns.map((c) => c.requests)); throw e; });
  t.equal(up.conns.length, 4, 'sessions opened up to 4 × pool.size');
  const waiting = post(s, '/v1/completions', BODY);
  // The request is in the gateway (in flight), with no session to take it.
  await waitFor('the 9th request to be in flight in the gateway', async () => /^ghostgate_inflight_requests 9$/m.test(await (await fetch(`${g.adminUrl}/metrics`)).text()), 30_000);
  t.equal(up.conns.length, 4, 'no fifth session');
  // One stalled stream ends: its slot goes to the waiting request.
  const freed = held.shift()!;
  freed.c.complete(freed.id);
  const r = await waiting;
  t.equal(r.status, 200, r.text);
  t.equal(r.events.at(-1), '[DONE]', 'complete');
  t.ok(up.conns.every((c) => c.requests <= 3), 'no session had more than 2 streams open at once (its third came after one ended)');
  t.equal(freed.c.requests, 3, 'it took the freed slot on that session');
  for (const st of stalled) st.close();
});

t.test('sessions opened above pool.size for a burst close again once idle for a PING interval; the pool keeps its size', async (t) => {
  const held: Array<{ c: RawH2Conn; id: number }> = [];
  const up = await startRawH2(t, { maxConcurrentStreams: 1, onRequest: (c, id) => { held.push({ c, id }); } });
  const g = await startGateway(t, { noModel: true, extraConfig: 'limits: { maxInflightPerClientIp: 0 }', upstreamsYaml: () => upstreamYaml(up.url, 'h2c', { pool: '{ size: 1, pingIntervalMs: 100 }', timeouts: '{ connectMs: 30000, firstByteMs: 30000 }' }) });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const stats = async (): Promise<{ live: number; draining: number; sessionsOpened: number }> => ((await (await fetch(`${g.adminUrl}/-/upstreams`)).json()) as { local: { live: number; draining: number; sessionsOpened: number } }).local;
  // A burst of 3 held requests on an upstream that takes 1 stream per session: 3 sessions.
  const burst = Array.from({ length: 3 }, () => post(s, '/v1/completions', BODY));
  await waitFor('3 requests held upstream', () => held.length === 3, 30_000);
  t.equal((await stats()).live, 3, 'the burst opened 2 sessions above pool.size');
  for (const h of held.splice(0)) h.c.complete(h.id);
  for (const r of await Promise.all(burst)) t.equal(r.status, 200);
  await waitFor('the extra sessions to close', async () => { const x = await stats(); return x.live === 1 && x.draining === 0; }, 30_000);
  // A session the upstream fake (in this busy process) did not answer a PING for within 100 ms is
  // replaced, and says so in the log: that is PING's job, not the shrink's.
  const pingReplaced = g.logs.filter((l) => l.includes('did not answer PING')).length;
  t.equal((await stats()).sessionsOpened, 3 + pingReplaced, `and none was replaced but for a missed PING (${pingReplaced}): the pool is back at its size`);
  // The pool still serves.
  const next = post(s, '/v1/completions', BODY);
  await waitFor('the next request upstream', () => held.length === 1, 30_000);
  held[0]!.c.complete(held[0]!.id);
  t.equal((await next).status, 200);
  t.equal((await stats()).live, 1, 'on the remaining session');
});

t.test('streams are packed onto the busiest session with room; the next session takes them once it is full', async (t) => {
  const held: Array<{ c: RawH2Conn; id: number }> = [];
  const up = await startRawH2(t, { maxConcurrentStreams: 3, onRequest: (c, id) => { held.push({ c, id }); } });
  const g = await startGateway(t, { noModel: true, extraConfig: 'limits: { maxInflightPerClientIp: 0 }', upstreamsYaml: () => upstreamYaml(up.url, 'h2c', { pool: '{ size: 2 }', timeouts: '{ connectMs: 30000, firstByteMs: 30000 }' }) });
  await waitFor('both pool sessions to connect', () => up.conns.length === 2, 30_000);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  // Spread over the least-loaded session these would be 2 + 2; packed, the first session takes
  // 3 (the peer's limit) and only the fourth goes to the other.
  const reqs = Array.from({ length: 4 }, () => post(s, '/v1/completions', BODY));
  await waitFor('4 requests held upstream', () => held.length === 4, 30_000);
  t.same(up.conns.map((c) => c.requests).sort((a, b) => b - a), [3, 1], 'streams per session');
  for (const h of held.splice(0)) h.c.complete(h.id);
  for (const r of await Promise.all(reqs)) t.equal(r.status, 200);
});
