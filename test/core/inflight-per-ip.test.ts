/**
 * One client IP cannot take the upstream pool: `limits.maxInflightPerClientIp` bounds the
 * requests in flight upstream from one address across all its connections (the per-session cap
 * bounds one connection only). A client on 127.0.0.2 opens 4 connections that never read
 * (window 0) with 128 long completions each, more than every session the upstream pool may open
 * can hold; a well-behaved client on 127.0.0.1 is served all along.
 */
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import type { TestGateway } from '../helpers/gateway.ts';
import { collect, connect, open, post, waitFor, within } from '../helpers/h2.ts';
import { rawConnect, request, settings } from '../helpers/raw-h2.ts';

const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const ATTACKER = '127.0.0.2';

const errors = async (g: TestGateway, code: string): Promise<number> =>
  (await g.gw.metrics.errors.get()).values.find((v) => v.labels.code === code)?.value ?? 0;
const stalled = async (g: TestGateway): Promise<number> => {
  const text = await g.gw.metrics.registry.getSingleMetricAsString('ghostgate_requests_total');
  let n = 0;
  for (const line of text.split('\n')) if (line.includes('outcome="client_stalled"')) n += Number(line.split(' ').at(-1));
  return n;
};

t.test('4 connections x 128 streams that are never read, from one IP: a client on another IP sees no failure', async (t) => {
  // Default caps (maxInflightPerClientIp 128, maxInflightPerSession 128, clientStallMs 10 s). A
  // small upstream: 1 pooled session, 16 streams per session (its SETTINGS), so the pool grows
  // to at most 4 sessions (64 streams) when full.
  const g = await startGateway(t, {
    modelArgs: ['--ttft-ms', '5', '--token-ms', '2', '--tokens', '8', '--max-concurrent-streams', '16'],
    upstreamsYaml: (m) => [
      'upstreams:',
      '  local:',
      `    url: ${m.url}`,
      '    protocol: h2c',
      '    pool: { size: 1 }',
      '    forwardHeaders: [x-tokens, x-token-ms]',
      'models:',
      '  ghost-small: { upstream: local }',
    ].join('\n'),
  });
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'never read', stream: true });
  const conns = await Promise.all(Array.from({ length: 4 }, () => rawConnect(g.url, settings({ [SETTINGS_INITIAL_WINDOW_SIZE]: 0 }), ATTACKER)));
  t.teardown(() => { for (const c of conns) c.socket.destroy(); });
  const attack = (k: number): void => {
    const frames: Buffer[] = [];
    for (let i = 0, id = 1; i < 128; i++, id += 2) frames.push(request(id, '/v1/completions', body, [['x-request-id', `stall-${k}-${id}`], ['x-tokens', '100000'], ['x-token-ms', '1']]));
    conns[k]!.socket.write(Buffer.concat(frames));
  };
  // The first connection's 128 requests: more than the pool can ever hold upstream (4 sessions x
  // 16). One address may hold half of that (32: core/upstream/h2-pool.ts); the rest of its
  // requests wait in the gateway. Then the other three connections, over the per-address cap.
  attack(0);
  await waitFor('the attacker to hold its share of upstream streams', async () => (await g.modelStats()).inFlight >= 32, 30_000);
  for (let k = 1; k < 4; k++) attack(k);
  await waitFor('the attacker\'s streams to be taken or refused', async () =>
    g.gw.runtime.inflight + (await errors(g, 'GW_ERR_REQ_TOO_MANY_IN_FLIGHT')) >= 4 * 128, 30_000);
  const held = (await g.modelStats()).inFlight;
  const refused = await errors(g, 'GW_ERR_REQ_TOO_MANY_IN_FLIGHT');
  t.comment(`the attacker holds ${held} streams at the model, ${g.gw.runtime.inflight} in the gateway; ${refused} refused`);
  t.ok(held <= 32, `the attacker holds at most half of the streams the pool can open (${held} of 64)`);

  // The bystander, on 127.0.0.1: batches of 4 requests while the attacker's streams are held.
  const b = await connect(g.url);
  t.teardown(() => b.close());
  const results: Array<{ status: number; done: boolean; ms: number; error?: string }> = [];
  while (results.length < 40) {
    const batch = await within('a bystander batch', Promise.all(Array.from({ length: 4 }, async () => {
      const t0 = performance.now();
      const r = await post(b, '/v1/completions', { model: 'ghost-small', prompt: 'by', stream: true });
      return { status: r.status, done: r.events.at(-1) === '[DONE]' && r.complete, ms: performance.now() - t0, error: r.error };
    })), 60_000);
    results.push(...batch);
  }
  const slowest = Math.max(...results.map((r) => r.ms));
  t.comment(`bystander: ${results.length} requests, slowest ${slowest.toFixed(0)} ms`);
  t.same(results.filter((r) => r.status !== 200 || !r.done), [], 'every bystander request completed');
  // Waiting until the attacker's streams are cut (clientStallMs, 10 s) is a failure too: counted,
  // not timed (a loaded machine can hold one request for seconds): the cut counts client_stalled.
  t.equal(await stalled(g), 0, 'the bystander was served while the attacker\'s streams were still held: none waited on the attacker');
  t.equal(refused, 3 * 128, 'one address may have 128 requests in flight: the other 384 got 429 GW_ERR_REQ_TOO_MANY_IN_FLIGHT');
  for (const c of conns) c.socket.destroy();
  await waitFor('nothing in flight', () => g.gw.runtime.inflight === 0, 30_000);
});

t.test('maxInflightPerClientIp: the excess over the cap across connections gets 429; another IP is not limited', async (t) => {
  const g = await startGateway(t, {
    extraConfig: 'limits: { maxInflightPerClientIp: 6 }',
    modelArgs: ['--ttft-ms', '3000', '--token-ms', '1', '--tokens', '4'],
  });
  // Two connections from 127.0.0.1, 5 requests each: 6 are served, 4 refused.
  const s1 = await connect(g.url);
  const s2 = await connect(g.url);
  t.teardown(() => { s1.close(); s2.close(); });
  const all = [s1, s2].flatMap((s, k) => Array.from({ length: 5 }, (_, i) => collect(open(s, '/v1/completions', { model: 'ghost-small', prompt: `c${k}${i}`, stream: true }))));
  await waitFor('6 requests at the model', async () => (await g.modelStats()).inFlight >= 6, 10_000);
  // Another address has its own allowance.
  const c = await rawConnect(g.url, settings(), '127.0.0.2');
  t.teardown(() => c.socket.destroy());
  c.socket.write(request(1, '/v1/completions', JSON.stringify({ model: 'ghost-small', prompt: 'other', stream: true, max_tokens: 1 }), [['x-ttft-ms', '0']]));
  await waitFor('the other address to be answered', () => c.frames.some((f) => f.type === 1 && f.streamId === 1), 10_000);
  const head = c.frames.find((f) => f.type === 1 && f.streamId === 1)!;
  t.equal(head.payload[0], 0x88, 'another address is served (:status 200)');
  const res = await within('the 10 requests', Promise.all(all), 30_000);
  const refused = res.filter((r) => r.status === 429);
  t.equal(res.filter((r) => r.status === 200 && r.events.at(-1) === '[DONE]').length, 6, '6 served');
  t.equal(refused.length, 4, '4 refused');
  for (const r of refused) {
    const e = (JSON.parse(r.text) as { error: { code: string; message: string } }).error;
    t.equal(e.code, 'GW_ERR_REQ_TOO_MANY_IN_FLIGHT');
    t.match(e.message, /from this client address/);
    t.equal(r.headers['retry-after'], '1');
  }
  const after = await post(s1, '/v1/completions', { model: 'ghost-small', prompt: 'again', stream: true }, { 'x-ttft-ms': '0' });
  t.equal(after.status, 200, 'once they end, the address may send again');
});

t.test('maxInflightPerClientIp 0: no per-IP cap (a load balancer in front, all traffic from its address)', async (t) => {
  const g = await startGateway(t, {
    extraConfig: 'limits: { maxInflightPerClientIp: 0 }\nhttp2: { maxInflightPerSession: 100 }',
    modelArgs: ['--ttft-ms', '1000', '--token-ms', '1', '--tokens', '4'],
  });
  // 3 connections x 100 requests in flight from 127.0.0.1: over the default per-IP cap (128).
  const sessions = await Promise.all([0, 1, 2].map(() => connect(g.url)));
  t.teardown(() => { for (const s of sessions) s.close(); });
  const all = sessions.flatMap((s, k) => Array.from({ length: 100 }, (_, i) => collect(open(s, '/v1/completions', { model: 'ghost-small', prompt: `lb${k}-${i}`, stream: true }))));
  const res = await within('the 300 requests', Promise.all(all), 60_000);
  t.equal(res.filter((r) => r.status === 200 && r.events.at(-1) === '[DONE]').length, 300, 'all 300 served');
  t.equal(await errors(g, 'GW_ERR_REQ_TOO_MANY_IN_FLIGHT'), 0, 'none refused');
});
