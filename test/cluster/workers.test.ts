/**
 * `ghostgate start --workers 2`, as a real process tree: a primary, two workers sharing the
 * data-plane port, a real model server. One cluster runs the whole file, in order: shared
 * listeners, a dev token minted once verifying on both workers, aggregated metrics, admin
 * bodies checked as in one process, reload fan-out (valid, invalid, one worker that cannot load it), a crashed worker replaced, then
 * SIGTERM draining both workers with streams in flight.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { clusterClient } from '../helpers/cluster.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { collect, connect, open, post, START_MS, until } from '../helpers/h2.ts';

const POLICY = ['name: default', 'match: { paths: [/v1/completions] }', 'steps:', '  - use: auth', ''].join('\n');

const g = await startGatewayProcess(t, {
  args: ['--workers', '2'],
  extraConfig: ['auth: { dev: true }', 'health: { minRequests: 1000 }', 'shutdown: { graceMs: 20000 }'].join('\n'),
  files: { 'policies/default.yaml': POLICY },
  // Worker 2 runs without GG_MODEL: a config that reads ${GG_MODEL} validates in the primary
  // (which has it) and fails in worker 2 alone (test-only hook, core/cluster/worker.ts).
  env: { GG_MODEL: 'ghost-small', GHOSTGATE_TEST_WORKER_ENV: JSON.stringify({ 2: { GG_MODEL: null } }) },
});

const { ping, admin, metricValue } = clusterClient(g);
const token = (await admin<{ token: string }>('/-/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sub: 'alice' }) })).body.token;
const auth = { authorization: `Bearer ${token}` };
/** One request on a connection of its own: its status. */
const oneShot = async (body: object = { prompt: 'x' }, headers: Record<string, string> = auth): Promise<number> => (await clusterClient(g).oneShot(body, headers)).status;

t.test('two workers share the data-plane port; both serve, and a token minted once verifies on both', async (t) => {
  const p0 = await ping();
  t.equal(p0.workers.length, 2, 'two workers ready');
  t.not(p0.workers[0]!.pid, p0.workers[1]!.pid);
  // The kernel spreads connections by hash: 16 reach both workers but with odds of 2 in 65,536.
  const statuses: number[] = [];
  for (let i = 0; i < 16; i++) statuses.push(await oneShot());
  t.same(statuses, Array(16).fill(200), 'every request with the one token succeeds');
  const p1 = await ping();
  for (const w of p1.workers) t.ok(w.requests >= 1, `worker ${w.slot} served requests with the token (${w.requests})`);
  t.equal(await oneShot({ prompt: 'x' }, {}), 401, 'no token: refused (auth runs on the workers)');
});

t.test('/metrics sums every worker', async (t) => {
  const before = await metricValue(/^ghostgate_requests_total\{.*status="200"/);
  for (let i = 0; i < 6; i++) await oneShot();
  const after = await metricValue(/^ghostgate_requests_total\{.*status="200"/);
  t.equal(after - before, 6, 'six requests on two workers count six');
  t.equal(await metricValue(/^ghostgate_cluster_workers /), 2);
  t.equal(await metricValue(/^ghostgate_healthy /), 1, 'healthy is the lowest worker value, not a sum');
});

t.test('admin bodies as in one process: a reload with fields and a mint with an unknown field are refused', async (t) => {
  const json = { 'content-type': 'application/json' };
  const reload = await admin<{ error: { code: string; message: string } }>('/-/reload', { method: 'POST', headers: json, body: '{"file":"other.yaml"}' });
  t.equal(reload.status, 400);
  t.equal(reload.body.error.code, 'GW_ERR_REQ_INVALID_BODY');
  t.match(reload.body.error.message, /POST \/-\/reload takes no body .*"file"/);
  const mint = await admin<{ error: { code: string; message: string } }>('/-/token', { method: 'POST', headers: json, body: '{"sub":"a","ttl":60}' });
  t.equal(mint.status, 400);
  t.match(mint.body.error.message, /unknown field "ttl" \(did you mean "ttlSeconds"\?\)/);
});

t.test('reload: validated once, reaches every worker, reports each version', async (t) => {
  const policy = path.join(g.dir, 'policies/default.yaml');
  writeFileSync(policy, POLICY + '  - use: set-headers\n    params: { response: { x-reloaded: yes } }\n');
  const r = await admin<{ ok: boolean; workers: Array<{ slot: number; ok: boolean; version: number }> }>('/-/reload', { method: 'POST' });
  t.equal(r.status, 200);
  t.equal(r.body.ok, true);
  t.same(r.body.workers.map((w) => [w.slot, w.ok, w.version]), [[1, true, 2], [2, true, 2]], 'both workers took version 2');
  const c = await admin<{ workers: Array<{ slot: number; version: number; fingerprint: string }> }>('/-/config');
  t.same(c.body.workers.map((w) => w.version), [2, 2]);
  t.equal(c.body.workers[0]!.fingerprint, c.body.workers[1]!.fingerprint, 'same config on both');
  // Both workers answer with the new policy.
  const seen = new Set<string>();
  for (let i = 0; i < 4; i++) {
    const s = await connect(g.url);
    const res = await post(s, '/v1/completions', { prompt: 'x' }, auth);
    s.close();
    seen.add(String(res.headers['x-reloaded']));
  }
  t.same([...seen], ['yes']);

  // Invalid: refused by the primary; no worker is asked; versions stay.
  writeFileSync(policy, POLICY + '  - use: no-such-plugin\n');
  const bad = await admin<{ ok: boolean; workers: unknown[]; error: { code: string } }>('/-/reload', { method: 'POST' });
  t.equal(bad.status, 400);
  t.equal(bad.body.ok, false);
  t.equal(bad.body.error.code, 'GW_ERR_CONFIG_UNKNOWN_PLUGIN');
  t.same(bad.body.workers, [], 'no worker was asked to load it');
  t.same((await admin<{ workers: Array<{ version: number }> }>('/-/config')).body.workers.map((w) => w.version), [2, 2]);
  t.equal(await oneShot(), 200, 'still serving the last good config');
  writeFileSync(policy, POLICY);
});

t.test('a worker that cannot load the new config keeps the old one and says so', async (t) => {
  const cfg = readFileSync(g.configFile, 'utf8');
  writeFileSync(g.configFile, cfg.replace('defaultModel: ghost-small', 'defaultModel: ${GG_MODEL}'));
  t.teardown(() => writeFileSync(g.configFile, cfg));
  const r = await admin<{ ok: boolean; error: { code: string; message: string }; workers: Array<{ slot: number; ok: boolean; version: number; error?: { code: string } }> }>('/-/reload', { method: 'POST' });
  t.equal(r.body.ok, false);
  const [w1, w2] = r.body.workers;
  t.equal(w1!.ok, true, 'worker 1 loaded it');
  t.equal(w1!.version, 3);
  t.equal(w2!.ok, false, 'worker 2 could not');
  t.equal(w2!.version, 2, 'worker 2 keeps version 2');
  t.equal(w2!.error?.code, 'GW_ERR_CONFIG_ENV');
  t.match(r.body.error.message, /1 of 2 workers kept their running config: worker 2/);
  const c = await admin<{ workers: Array<{ slot: number; version: number; lastReload: { ok: boolean } }> }>('/-/config');
  t.same(c.body.workers.map((w) => [w.version, w.lastReload.ok]), [[3, true], [2, false]], '/-/config shows each worker and its last reload');
  for (let i = 0; i < 4; i++) t.equal(await oneShot(), 200, 'both still serve');
  // SIGHUP reloads too (the primary's, fanned out): back to the plain config on both.
  writeFileSync(g.configFile, cfg);
  g.child.kill('SIGHUP');
  const back = await until(async () => {
    const b = (await admin<{ workers: Array<{ version: number; lastReload?: { trigger: string; ok: boolean } }> }>('/-/config')).body;
    return b.workers.every((w) => w.lastReload?.trigger === 'SIGHUP' && w.lastReload.ok) ? b : undefined;
  }, 30_000);
  // The primary numbers configs: the same texts have the same version on both workers.
  t.same(back.workers.map((w) => w.version), [4, 4], 'SIGHUP reached both workers, which run the same version again');
});

t.test('a crashed worker is replaced; requests keep succeeding', async (t) => {
  const before = await ping();
  const victim = before.workers[0]!;
  process.kill(victim.pid, 'SIGKILL');
  // Once the worker is dead (the primary saw it exit), its listening socket is gone with it: new
  // connections go to the live worker while the replacement starts. (A connection the dying
  // worker had already accepted is reset at once, never left hanging.)
  await until(async () => (await metricValue(/^ghostgate_cluster_worker_restarts_total /)) === 1, 30_000);
  const statuses: number[] = [];
  for (let i = 0; i < 10; i++) statuses.push(await oneShot());
  t.same(statuses, Array(10).fill(200), 'requests on new connections succeed while the worker is replaced');
  const after = await until(async () => {
    const p = await ping();
    return p.workers.length === 2 && p.workers.every((w) => w.pid !== victim.pid) ? p : undefined;
  }, START_MS);
  t.ok(after.workers.find((w) => w.slot === victim.slot), `a new worker took slot ${victim.slot}`);
  t.equal(await metricValue(/^ghostgate_cluster_worker_restarts_total /), 1);
  for (let i = 0; i < 4; i++) t.equal(await oneShot(), 200);
});

t.test('SIGTERM drains both workers: streams in flight finish, every process exits', async (t) => {
  const pids = (await ping()).workers.map((w) => w.pid);
  // Long streams on four connections (both workers), started before the signal.
  const sessions = await Promise.all([0, 1, 2, 3].map(() => connect(g.url)));
  const streams = sessions.map((s) => open(s, '/v1/completions', { prompt: 'x', stream: true }, { ...auth, 'x-tokens': '40', 'x-token-ms': '25' }));
  const results = streams.map((st) => collect(st));
  await Promise.all(streams.map((st) => new Promise((r) => st.once('response', r))));
  g.child.kill('SIGTERM');
  const done = await Promise.all(results);
  for (const d of done) {
    t.equal(d.status, 200);
    t.ok(d.complete, 'stream ended with END_STREAM');
    t.equal(d.events.at(-1), '[DONE]', 'the whole completion arrived');
  }
  for (const s of sessions) s.destroy();
  t.equal(await g.exited, 0, 'primary exits 0');
  for (const pid of pids) t.throws(() => process.kill(pid, 0), `worker ${pid} is gone`);
});
