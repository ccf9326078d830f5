/**
 * `ghostgate start --workers 2` with `store.redis`: each worker opens its own connections, and the
 * two enforce one rate limit (without the store each worker would allow the burst on its own),
 * each leasing tokens from it and giving back what it does not use.
 */
import t from 'tap';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { connect, post, waitFor } from '../helpers/h2.ts';
import { startRedis } from '../helpers/redis.ts';

const POLICY = [
  'name: rl',
  'steps:',
  '  - use: rate-limit',
  '    params: { key: request.headers.x-user, ratePerSecond: 0.001, burst: 6 }',
].join('\n');

t.test('two workers, one Redis: burst 6 in all across both workers', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const g = await startGatewayProcess(t, {
    args: ['--workers', '2'],
    files: { 'redis-url': `${r.url}\n`, 'policies/rl.yaml': POLICY },
    extraConfig: 'facts: { headers: [x-user] }\nstore: { redis: { url: { file: redis-url }, timeoutMs: 1000 } }',
  });
  const metrics = async (): Promise<string> => (await fetch(`${g.adminUrl}/metrics`)).text();
  await waitFor('both workers to reach Redis', async () => /ghostgate_store_up 1/.test(await metrics()));
  t.match(await metrics(), /^ghostgate_store_up 1$/m, 'the gauge shows the lowest worker (min), not a sum of 2');
  const conns = r.cli('CLIENT', 'LIST').split('\n').filter((l) => /name=ghostgate-/.test(l));
  t.equal(conns.length, 4, 'each worker opened its own two connections');
  // One request per connection: the kernel spreads connections over the workers.
  const statuses: number[] = [];
  for (let i = 0; i < 16; i++) {
    const s = await connect(g.url);
    try { statuses.push((await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', max_tokens: 1 }, { 'x-user': 'alice' })).status); } finally { s.close(); }
  }
  const ping = (await (await fetch(`${g.adminUrl}/_ping`)).json()) as { workers: Array<{ slot: number; requests: number }> };
  for (const w of ping.workers) t.ok(w.requests >= 1, `worker ${w.slot} served some of them (${w.requests})`);
  // Each worker leases tokens ahead; one that served its last request of the run may still hold
  // some (at most 2: burst / 4), which the other could not use: at most 6, at least 6 - 2.
  const allowed = statuses.filter((s) => s === 200).length;
  t.ok(allowed <= 6 && allowed >= 4, `at most six allowed in all (${statuses.join(' ')})`);
  await waitFor('both workers to give back what they hold (idle)', () => Object.keys(r.bucket('alice').holders).length === 0);
  t.equal(allowed + Math.round(Math.max(0, r.bucket('alice').k)), 6, 'what was not allowed is back in Redis: nothing lost, nothing made up');
});
