/**
 * A reload while a worker is being replaced: the replacement got the running config with its
 * `init`, the reload does not ask it (it is not ready yet), and yet it must run the reloaded
 * config, as its sibling does, once it counts as ready. "While it starts" is made exact, without a
 * time window, by a test plugin that holds worker 2's start (inside its runtime build, after
 * `init`) until the test lets it go (test/cluster/fixtures/slot-2-faults.mjs).
 */
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { clusterClient, slot2Faults, slot2Policy } from '../helpers/cluster.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { START_MS, until } from '../helpers/h2.ts';

const header = (cfg: string): string[] => ['  - use: set-headers', `    params: { response: { x-cfg: ${cfg} } }`];
const g = await startGatewayProcess(t, { args: ['--workers', '2'], ...slot2Faults(header('a')) });
const c = clusterClient(g);
const flag = (n: string): string => path.join(g.dir, n);

interface ConfigView { workers: Array<{ slot: number; pid: number; version: number; fingerprint: string }> }

t.test('a worker that was starting during a reload runs the reloaded config once it is ready', async (t) => {
  // Let a held worker go on failure too (a blocked start would wait for the teardown's kill).
  t.teardown(() => writeFileSync(flag('go.flag'), ''));
  const victim = (await c.ping()).workers.find((w) => w.slot === 2)!.pid;
  writeFileSync(flag('hold.flag'), '');
  process.kill(victim, 'SIGKILL');
  await until(() => existsSync(flag('held.flag')), START_MS);
  // The replacement has its init (version 1) and is held in its start: reload now.
  writeFileSync(path.join(g.dir, 'policies/default.yaml'), slot2Policy(header('b')));
  const r = await c.admin<{ ok: boolean; version: number; workers: Array<{ slot: number; version: number }> }>('/-/reload', { method: 'POST' });
  t.equal(r.body.ok, true);
  t.same(r.body.workers.map((w) => [w.slot, w.version]), [[1, 2]], 'only worker 1 was ready to ask; it took version 2');
  writeFileSync(flag('go.flag'), '');
  await until(async () => {
    const p = await c.ping();
    return p.workers.length === 2 && p.workers.every((w) => w.pid !== victim);
  }, START_MS);
  const view = (await c.admin<ConfigView>('/-/config')).body;
  t.same(view.workers.map((w) => [w.slot, w.version]), [[1, 2], [2, 2]], 'the replacement runs version 2 as soon as it counts as ready');
  t.equal(view.workers[0]!.fingerprint, view.workers[1]!.fingerprint, 'the same texts');
  // The kernel spreads connections by hash: 16 reach both workers but with odds of 2 in 65,536.
  const answers = new Set<string>();
  for (let i = 0; i < 16; i++) answers.add(String((await c.oneShot()).headers['x-cfg']));
  t.same([...answers], ['b'], 'every answer comes from the reloaded policy');
});
