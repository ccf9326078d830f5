/**
 * `store.redis` config: the URL is a secret (from the environment or a file, never inline,
 * never printed), bad values are refused with a located error, and a gateway whose Redis is
 * unreachable (or refuses the password) still starts and serves, in process.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { loadConfig } from '../../core/config/load.ts';
import { ConfigErrors } from '../../core/errors.ts';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post, waitFor } from '../helpers/h2.ts';
import { startRedis } from '../helpers/redis.ts';

const PASSWORD = 'pw-9f3c1e-not-for-logs';
const base = 'upstreams:\n  local: { url: "http://127.0.0.1:8000" }\nmodels:\n  m: { upstream: local }\n';
function configFile(yaml: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-store-cfg-'));
  writeFileSync(path.join(dir, 'g.yaml'), base + yaml);
  return path.join(dir, 'g.yaml');
}
function errorsOf(file: string, env: NodeJS.ProcessEnv = {}): Array<{ code: string; message: string; location?: { line?: number } }> {
  try { loadConfig(file, env); return []; } catch (e) {
    if (!(e instanceof ConfigErrors)) throw e;
    return e.errors.map((x) => ({ code: x.code, message: x.message, location: x.location }));
  }
}

t.test('config: defaults, ${REDIS_URL}, secret refs; an inline password or a non-redis URL is refused', async (t) => {
  const c = loadConfig(configFile('store:\n  redis:\n    url: ${REDIS_URL}\n'), { REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:6379` }).config;
  t.same(c.store.redis, { url: `redis://:${PASSWORD}@127.0.0.1:6379`, timeoutMs: 5, retryMs: 500, keyPrefix: 'ghostgate:' }, 'from the environment, with defaults');
  t.same(loadConfig(configFile(''), {}).config.store, {}, 'no store: in process');
  t.same(loadConfig(configFile('store: { redis: { url: { file: redis-url } } }\n'), {}).config.store.redis?.url, { file: 'redis-url' });
  const inline = errorsOf(configFile(`store:\n  redis:\n    url: redis://:${PASSWORD}@127.0.0.1:6379\n`));
  t.match(inline, [{ code: 'GW_ERR_CONFIG_INVALID', message: /store\.redis\.url carries a password written in the YAML/, location: { line: 7 } }]);
  t.notMatch(JSON.stringify(inline), PASSWORD, 'the error does not repeat the password');
  t.same(errorsOf(configFile('store:\n  redis:\n    url: redis://127.0.0.1:6379\n')), [], 'a URL without a password may be inline');
  const notRedis = errorsOf(configFile('store: { redis: { url: "${U}" } }\n'), { U: `http://:${PASSWORD}@x` });
  t.match(notRedis, [{ code: 'GW_ERR_CONFIG_SCHEMA', message: /store\.redis\.url/ }], 'not redis://');
  t.notMatch(JSON.stringify(notRedis), PASSWORD, 'and its password is not repeated');
  t.match(errorsOf(configFile('store: { redis: { url: "redis://x", timeoutMs: 0 } }\n')), [{ code: 'GW_ERR_CONFIG_SCHEMA', message: /timeoutMs/ }], 'timeoutMs at least 1');
  t.match(errorsOf(configFile('store: { redis: { url: "redis://x", nope: 1 } }\n')), [{ code: 'GW_ERR_CONFIG_SCHEMA' }], 'unknown key');
});

const POLICY = 'name: rl\nsteps:\n  - use: rate-limit\n    params: { key: request.headers.x-user, ratePerSecond: 0.001, burst: 2 }\n';
const body = { model: 'ghost-small', prompt: 'x', max_tokens: 1 };

t.test('a password-protected Redis from ${REDIS_URL}: shared, and the password is in no output', async (t) => {
  const r = await startRedis(t, { password: PASSWORD });
  if (!r) return;
  const g = await startGateway(t, {
    extraConfig: 'facts: { headers: [x-user] }\nstore:\n  redis:\n    url: ${REDIS_URL}\n    timeoutMs: 1000',
    env: { ...process.env, REDIS_URL: r.url },
    policies: { 'rl.yaml': POLICY },
  });
  const metrics = async (): Promise<string> => (await fetch(`${g.adminUrl}/metrics`)).text();
  t.match(await metrics(), /ghostgate_store_up 1/, 'connected with the password');
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  for (let i = 0; i < 2; i++) t.equal((await post(s, '/v1/completions', body, { 'x-user': 'u' })).status, 200);
  t.equal((await post(s, '/v1/completions', body, { 'x-user': 'u' })).status, 429);
  t.ok(r.cli('--scan', '--pattern', 'ghostgate:rl:*').includes('u'), 'the bucket is in Redis');
  const conns = r.cli('CLIENT', 'LIST').split('\n').filter((l) => /name=ghostgate-/.test(l));
  t.equal(conns.length, 2, 'one process, two connections (commands, and the supersede channel)');
  const cfg = await (await fetch(`${g.adminUrl}/-/config`)).text();
  t.match(cfg, /redis:\/\/:\[redacted\]@127\.0\.0\.1/, '/-/config shows where, not the password');
  t.notMatch(cfg, PASSWORD);
  t.notMatch(g.logs.join('\n'), PASSWORD, 'nor do the logs');
});

t.test('Redis refusing the password, or not there: the gateway starts and limits in process (fail open), and says so without the password', async (t) => {
  const r = await startRedis(t, { password: PASSWORD });
  if (!r) return;
  const wrong = r.url.replace(PASSWORD, 'wrong-pw-5521');
  const g = await startGateway(t, {
    extraConfig: 'facts: { headers: [x-user] }\nstore:\n  redis:\n    url: ${REDIS_URL}',
    env: { ...process.env, REDIS_URL: wrong },
    policies: { 'rl.yaml': POLICY },
  });
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  const statuses: number[] = [];
  for (let i = 0; i < 3; i++) statuses.push((await post(s, '/v1/completions', body, { 'x-user': 'u' })).status);
  t.same(statuses, [200, 200, 429], 'the in-process bucket limits');
  const m = await (await fetch(`${g.adminUrl}/metrics`)).text();
  t.match(m, /ghostgate_store_up 0/);
  t.match(m, /ghostgate_store_fallback_total\{op="lease",reason="down"\} 3/, 'each decision counted as a fallback');
  await waitFor('the start-up warning', () => g.logs.some((l) => /shared store \(Redis\) not reachable yet/.test(l)));
  const warn = g.logs.find((l) => /shared store/.test(l))!;
  t.match(warn, /WRONGPASS|NOAUTH|invalid/i, 'the reason is given');
  t.notMatch(g.logs.join('\n'), /wrong-pw-5521/, 'never the password');
});
