/**
 * A worker whose IPC channel closes while its process is still running: the state between a
 * worker's death and the primary seeing its exit (a message sent then fails with
 * ERR_IPC_CHANNEL_CLOSED, an 'error' event on the worker), held open by a test-only hook
 * (core/cluster/worker.ts: worker 2 closes its channel on SIGUSR2 and keeps serving). The primary
 * keeps serving, answers every call at once (a coded error for that worker, never a hang), and
 * ends and replaces the worker it can no longer reach.
 */
import t from 'tap';
import { clusterClient } from '../helpers/cluster.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { START_MS, until, within } from '../helpers/h2.ts';

const g = await startGatewayProcess(t, {
  args: ['--workers', '2'],
  env: { GHOSTGATE_TEST_WORKER_ENV: JSON.stringify({ 2: { GHOSTGATE_TEST_DISCONNECT_ON_SIGUSR2: '1' } }) },
});
const c = clusterClient(g);
const alive = (pid: number): boolean => { try { process.kill(pid, 0); return true; } catch { return false; } };

interface ReloadView { ok: boolean; workers: Array<{ slot: number; pid: number; ok: boolean; error?: { code: string } }> }

t.test('a worker that closed its IPC channel: calls fail at once with a code, the gateway keeps serving, the worker is replaced', async (t) => {
  const before = await c.ping();
  t.equal(before.workers.length, 2);
  const victim = before.workers.find((w) => w.slot === 2)!.pid;
  process.kill(victim, 'SIGUSR2');
  await until(() => g.stdout().includes(`test hook: worker ${victim} closed its IPC channel`), 30_000);
  // The primary's next sends to that worker hit a closed channel (whether or not it has seen the
  // channel close yet): each call answers, the worker's part with a code, none waits for a timeout.
  const reload = await within('a reload', c.admin<ReloadView>('/-/reload', { method: 'POST' }), 30_000);
  const w2 = reload.body.workers.find((w) => w.slot === 2 && w.pid === victim);
  if (w2) t.match(w2, { ok: false, error: { code: 'GW_ERR_CLUSTER_WORKER' } }, 'worker 2 (if still listed) failed with a code');
  t.match(reload.body.workers.find((w) => w.slot === 1), { ok: true }, 'worker 1 reloaded');
  const ping = await within('a ping', c.ping(), 30_000);
  const p2 = ping.workers.find((w) => w.pid === victim) as { code?: string } | undefined;
  if (p2) t.equal(p2.code, 'GW_ERR_CLUSTER_WORKER', 'worker 2 (if still listed) is unhealthy with a code');
  t.equal((await c.oneShot()).status, 200, 'the gateway keeps serving');

  // The primary ends the worker it cannot reach and replaces it in its slot.
  await until(() => !alive(victim), 30_000);
  const after = await until(async () => {
    const p = await c.ping();
    return p.workers.length === 2 && p.workers.every((w) => w.pid !== victim) ? p : undefined;
  }, START_MS);
  t.ok(after.healthy, 'two healthy workers again');
  t.equal(await c.metricValue(/^ghostgate_cluster_worker_restarts_total /), 1, 'counted as one restart');
  const again = await c.admin<ReloadView>('/-/reload', { method: 'POST' });
  t.same(again.body.workers.map((w) => [w.slot, w.ok]), [[1, true], [2, true]], 'a reload reaches both');
  for (let i = 0; i < 4; i++) t.equal((await c.oneShot()).status, 200);
});
