/**
 * Two real gateway processes sharing one real redis-server (`store.redis`): one rate limit for
 * both, a newer request on one cancelling the older one on the other, and Redis SIGKILLed and
 * restarted under load with no client request failing.
 */
import t from 'tap';
import type { Test } from 'tap';
import http2 from 'node:http2';
import type { ClientHttp2Session } from 'node:http2';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import type { GatewayProcess } from '../helpers/gateway-process.ts';
import { collect, connect, open, post, waitFor, within } from '../helpers/h2.ts';
import type { Response } from '../helpers/h2.ts';
import { startRedis } from '../helpers/redis.ts';
import type { TestRedis } from '../helpers/redis.ts';

const POLICY = [
  'name: shared',
  'steps:',
  '  - use: rate-limit',
  '    params: { key: request.headers.x-user, ratePerSecond: 0.001, burst: 6 }',
  '  - use: supersede',
  '    params: { keyFrom: { header: x-ghostgate-document }, identity: request.headers.x-user }',
].join('\n');

/** A gateway process whose store is the test's Redis (URL from a file: it is a secret). */
async function gateway(t: Test, r: TestRedis, modelArgs?: string[]): Promise<{ g: GatewayProcess; s: ClientHttp2Session; metrics: () => Promise<string> }> {
  const g = await startGatewayProcess(t, {
    modelArgs,
    files: { 'redis-url': `${r.url}\n`, 'policies/shared.yaml': POLICY },
    // A generous budget: these tests assert exact counts on a busy machine, not the fallback.
    extraConfig: 'facts: { headers: [x-user, x-ghostgate-document] }\nstore: { redis: { url: { file: redis-url }, timeoutMs: 1000, retryMs: 50 } }',
  });
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  const metrics = async (): Promise<string> => (await fetch(`${g.adminUrl}/metrics`)).text();
  await waitFor('the gateway to reach Redis', async () => /ghostgate_store_up 1/.test(await metrics()));
  return { g, s, metrics };
}

const body = { model: 'ghost-small', prompt: 'def f(', max_tokens: 2 };

/** `n` requests for `user`, alternating between the sessions, one after another: their statuses. */
async function alternate(sessions: ClientHttp2Session[], user: string, n: number): Promise<Response[]> {
  const out: Response[] = [];
  for (let i = 0; i < n; i++) out.push(await within(`request ${i}`, post(sessions[i % sessions.length]!, '/v1/completions', body, { 'x-user': user })));
  return out;
}

t.test('rate-limit: two gateway processes enforce one limit (burst 6 in all, not 6 each)', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const [a, b] = await Promise.all([gateway(t, r), gateway(t, r)]);
  const res = await alternate([a.s, b.s], 'alice', 14);
  // Each gateway leases tokens ahead (held tokens allow at once), so one may deny while the other
  // still holds one: the order of 200s and 429s may differ, the count may not.
  t.equal(res.filter((x) => x.status === 200).length, 6, `six in all across both gateways (${res.map((x) => x.status).join(' ')})`);
  t.same(res.slice(8).map((x) => x.status), [429, 429, 429, 429, 429, 429], 'then 429');
  t.match(res[13]!.text, /GW_ERR_POLICY_RATE_LIMITED/);
  t.ok(Number(res[13]!.headers['retry-after']) > 100, 'Retry-After: the shared bucket refills in ~1000 s');
  t.same((await alternate([b.s, a.s], 'bob', 2)).map((x) => x.status), [200, 200], 'another user has its own bucket');
  t.notMatch(await a.metrics(), /ghostgate_store_fallback_total\{/, 'no fallback while Redis answers');
});

t.test('supersede: a newer request on gateway 2 cancels the older one in flight on gateway 1', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const slow = ['--ttft-ms', '20', '--token-ms', '20', '--tokens', '200'];
  const [a, b] = await Promise.all([gateway(t, r, slow), gateway(t, r, slow)]);
  const doc = { 'x-user': 'alice', 'x-ghostgate-document': 'file:///a.py' };
  const first = open(a.s, '/v1/completions', { ...body, stream: true, max_tokens: 200 }, { ...doc, 'x-request-id': 'older' });
  const firstDone = collect(first);
  await within('first token of the older request', new Promise<void>((res) => first.once('data', () => res())));
  await waitFor('gateway 1 to have claimed the document in Redis', () => r.cli('--scan', '--pattern', 'ghostgate:sup:k:*').trim() !== '');
  const second = await within('the newer request', post(b.s, '/v1/completions', { ...body, stream: true }, { ...doc, 'x-request-id': 'newer' }));
  const older = await within('the older request to end', firstDone);
  t.equal(second.status, 200);
  t.ok(second.complete, 'the newer request completes');
  t.notOk(older.complete, 'the older one is cut');
  t.match(older.text, /GW_ERR_POLICY_SUPERSEDED/, 'and told why, as in one process (SSE error event)');
  const stats = async () => (await fetch(`${a.g.model.url}/_stats`)).json() as Promise<{ aborted: number; aborts: Array<{ id: string; rstCode: number | null }> }>;
  await waitFor('model server 1 to see the reset', async () => (await stats()).aborted === 1);
  const s = await stats();
  t.equal(s.aborts[0]!.id, 'older', 'the older stream was reset upstream');
  t.equal(s.aborts[0]!.rstCode, http2.constants.NGHTTP2_CANCEL, 'with CANCEL');
  t.match(await a.metrics(), /ghostgate_superseded_total 1/, 'counted where it was cancelled');
  // Nothing is released: the key still names the newer (finished) request until it expires.
  t.not(r.cli('--scan', '--pattern', 'ghostgate:sup:k:*').trim(), '', 'the claim stays in Redis (it expires)');
  const third = await within('a third request for the document, on gateway 1', post(a.s, '/v1/completions', { ...body, stream: true }, { ...doc, 'x-request-id': 'third' }));
  t.equal(third.status, 200);
  t.ok(third.complete, 'completes: the stale claim it replaced named a finished request');
  t.notMatch(await b.metrics(), /ghostgate_superseded_total [1-9]/, 'gateway 2, told of that finished request, cancelled nothing');
});

t.test('supersede: a gateway claims a document once; its next request for it claims nothing and is still cancelled by a newer one on the other gateway', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const slow = ['--ttft-ms', '20', '--token-ms', '20', '--tokens', '200'];
  const [a, b] = await Promise.all([gateway(t, r, slow), gateway(t, r, slow)]);
  // Every supersede key's holder, sorted (the keys hold NUL separators: read them in Redis).
  const holders = (): string[] => r.cli('EVAL', "local out = {} for _, k in ipairs(redis.call('KEYS', ARGV[1])) do out[#out + 1] = redis.call('GET', k) end return out", '0', 'ghostgate:sup:k:*')
    .trim().split('\n').filter(Boolean).sort();
  const doc = { 'x-user': 'carol', 'x-ghostgate-document': 'file:///c.py' };
  const warm = await within('a first request for the document on gateway 1', post(a.s, '/v1/completions', { ...body, stream: true }, { ...doc, 'x-request-id': 'warm' }));
  t.ok(warm.complete);
  await waitFor('gateway 1\'s claim to be stored', () => holders().length === 1);
  const [claimed] = holders();
  const inflight = open(a.s, '/v1/completions', { ...body, stream: true, max_tokens: 200 }, { ...doc, 'x-request-id': 'unclaimed' });
  const inflightDone = collect(inflight);
  await within('first token of the second request', new Promise<void>((res) => inflight.once('data', () => res())));
  // A request for another document after it: once its claim is stored, anything gateway 1 wrote
  // to Redis before it is too (one connection, in order).
  const other = await within('a request for another document on gateway 1', post(a.s, '/v1/completions', { ...body, stream: true }, { ...doc, 'x-ghostgate-document': 'file:///other.py' }));
  t.ok(other.complete);
  await waitFor('the other document\'s claim to be stored', () => holders().length === 2);
  t.ok(holders().includes(claimed!), 'the second request for the document claimed nothing: the key still holds the first claim');
  const newer = await within('the newer request, on gateway 2', post(b.s, '/v1/completions', { ...body, stream: true }, { ...doc, 'x-request-id': 'newer' }));
  const cut = await within('the unclaimed request to end', inflightDone);
  t.equal(newer.status, 200);
  t.ok(newer.complete, 'the newer request completes');
  t.notOk(cut.complete, 'the request in flight on gateway 1, which never claimed, is cut');
  t.match(cut.text, /GW_ERR_POLICY_SUPERSEDED/, 'and told why');
  t.notOk(holders().includes(claimed!), 'the key now names gateway 2\'s claim');
  t.match(await a.metrics(), /ghostgate_superseded_total 1/, 'counted where it was cancelled');
});

t.test('Redis SIGKILLed and restarted under load: no request fails, fallbacks counted, the shared limit comes back', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const [a, b] = await Promise.all([gateway(t, r), gateway(t, r)]);
  const results: Response[] = [];
  let stop = false;
  let n = 0;
  // Four users-in-a-loop, a new subject each request (never limited), spread over both gateways.
  const loops = [0, 1, 2, 3].map(async () => {
    while (!stop) {
      const i = n++;
      // By the request's number, not the loop's: with (i + w) % 2, loops whose requests complete
      // in the order they were sent (the same upstream session, FIFO) all picked gateway 1.
      const s = i % 2 === 0 ? a.s : b.s;
      results.push(await within(`load request ${i}`, post(s, '/v1/completions', body, { 'x-user': `load-${i}`, 'x-ghostgate-document': `doc-${i % 7}` })));
    }
  });
  await waitFor('load before the kill', () => results.length >= 20);
  r.kill();
  const fellBack = (m: string): boolean => /ghostgate_store_fallback_total\{op="lease"[^}]*\} [1-9]/.test(m);
  await waitFor('both gateways to fall back', async () => fellBack(await a.metrics()) && fellBack(await b.metrics()));
  t.match(await a.metrics(), /ghostgate_store_up 0/, 'gateway 1 says the store is down');
  const during = results.length;
  await waitFor('load while Redis is down', () => results.length >= during + 20);
  await r.restart();
  await waitFor('both gateways to reconnect by themselves', async () => /ghostgate_store_up 1/.test(await a.metrics()) && /ghostgate_store_up 1/.test(await b.metrics()), 30_000);
  const after = results.length;
  await waitFor('load after the restart', () => results.length >= after + 20);
  stop = true;
  await Promise.all(loops);
  const bad = results.filter((x) => x.status !== 200 || !x.complete);
  t.equal(bad.length, 0, `no client request failed (${results.length} sent): ${JSON.stringify(bad.slice(0, 3).map((x) => [x.status, x.error, x.text.slice(0, 120)]))}`);
  const res = await alternate([a.s, b.s], 'carol', 10);
  t.equal(res.filter((x) => x.status === 200).length, 6, `the shared limit holds again across both gateways: six in all (${res.map((x) => x.status).join(' ')})`);
  const logs = (g: GatewayProcess) => g.stdout().split('\n').filter((l) => /shared store/.test(l));
  for (const g of [a.g, b.g]) {
    const lines = logs(g);
    t.equal(lines.filter((l) => /down/.test(l)).length, 1, 'one "down" log line per gateway');
    t.equal(lines.filter((l) => /up again/.test(l)).length, 1, 'one "up again" log line per gateway');
  }
});
