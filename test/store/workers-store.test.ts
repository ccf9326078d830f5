/**
 * `ghostgate start --workers 2` with `store.redis`: each worker opens its own connections, and the
 * two enforce one rate limit (without the store each worker would allow the burst on its own).
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
  t.equal(statuses.filter((s) => s === 200).length, 6, `six allowed in all (${statuses.join(' ')})`);
  t.equal(statuses.filter((s) => s === 429).length, 10, 'the rest limited');
});
