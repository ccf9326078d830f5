/**
 * A worker that cannot start any more (test/cluster/fixtures/slot-2-faults.mjs makes worker 2's
 * start fail): it exits 1, is replaced with a doubling back-off, each failure logged with its reason, and
 * at the fifth young death in a row the primary gives up: it drains the other worker and exits 1,
 * saying why on stderr, so a supervisor sees it.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { clusterClient, slot2Faults } from '../helpers/cluster.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { START_MS, within } from '../helpers/h2.ts';

// Young: died before ready or within 1 ms of it (GHOSTGATE_TEST_YOUNG_MS; 10 s by default). So only
// failed starts count, and they must, however long a loaded machine takes to fail one.
const g = await startGatewayProcess(t, { args: ['--workers', '2'], ...slot2Faults([]), env: { GHOSTGATE_TEST_YOUNG_MS: '1' } });

interface Line { msg: string; slot?: number; err?: string; restartInMs?: number; youngExits?: number; code?: number | null; signal?: string | null }

t.test('a worker that keeps failing to start: replaced with a back-off, then the primary drains and exits 1, saying why', async (t) => {
  const pids = (await clusterClient(g).ping()).workers.map((w) => w.pid);
  writeFileSync(path.join(g.dir, 'fail.flag'), '');
  process.kill(pids[1]!, 'SIGKILL');
  t.equal(await within('the primary\'s exit', g.exited, START_MS), 1, 'the primary exits 1');
  const log = g.stdout().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Line);
  const failed = log.filter((l) => l.msg === 'worker could not start');
  t.ok(failed.length >= 1 && failed.every((l) => l.slot === 2 && /test: worker 2 cannot start/.test(l.err!)), 'each failed start is logged with its reason');
  // Young deaths in a row since the last one that was not (the killed worker, ready for longer
  // than 1 ms: replaced at once).
  const delays = log.filter((l) => l.msg === 'worker exited unexpectedly; replacing it').map((l) => l.restartInMs);
  t.same(delays.slice(delays.lastIndexOf(0) + 1), [200, 400, 800, 1600], 'four young deaths, replaced with a doubling back-off');
  // Every exit but the SIGKILLed one's is a worker that could not start: exit code 1, not 0.
  const codes = log.filter((l) => (l.msg === 'worker exited unexpectedly; replacing it' || l.youngExits) && l.signal === null).map((l) => l.code);
  t.ok(codes.length >= 4, `the failed starts' exits are logged (${codes.length})`);
  t.same(codes, codes.map(() => 1), 'a worker that cannot start exits 1');
  t.match(log.find((l) => l.youngExits), { msg: 'worker keeps dying young; shutting down the gateway', slot: 2, youngExits: 5 }, 'at the fifth the primary says why it gives up');
  t.match(g.stderr(), /^ghostgate start: GW_ERR_CLUSTER_WORKER worker 2 ended 5 times in a row before it was ready or within 0\.001 s of it \(last: GW_ERR_CONFIG_PLUGIN_CREATE: .*Plugin "slot-2-faults" \(\S+slot-2-faults\.mjs\) could not build its step: create threw: test: worker 2 cannot start\); shutting down$/m);
  for (const pid of pids) t.throws(() => process.kill(pid, 0), `worker ${pid} is gone`);
});

t.test('a worker that cannot start at all: ghostgate start --workers 2 exits 1 with its reason on one line', async (t) => {
  const faults = slot2Faults([]);
  const err = await startGatewayProcess(t, { args: ['--workers', '2'], ...faults, files: { ...faults.files, 'fail.flag': '' } }).then(() => undefined, (e: unknown) => e as Error);
  t.match(err?.message, /^gateway exited \(1\): ghostgate start: GW_ERR_CONFIG_PLUGIN_CREATE [^\n]*test: worker 2 cannot start\n$/);
});
