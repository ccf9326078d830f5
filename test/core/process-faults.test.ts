/**
 * core/process-faults.ts in real `ghostgate start` processes, with a plugin (a file in the
 * test's temp folder) whose request phase makes the fault the request's `x-fault` names:
 * - `server.onUnhandledRejection: log` (the default): an unhandled rejection is logged at `error`
 *   once per distinct error, with its stack and without the error's other properties (a secret
 *   it carries), counted in `ghostgate_unhandled_rejections_total`, and the process serves the
 *   next request. Without the handler, Node 24 ended the process (all its streams) on the first.
 * - `exit`: the process logs it at `fatal` and exits 1.
 * - An uncaught exception: logged at `fatal`, exit 1; in a cluster the primary replaces the worker.
 * - A cluster: each worker and the primary has the handler, the metric sums them.
 * - The core imported as a library installs nothing.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import type { Test } from 'tap';
import { clusterClient } from '../helpers/cluster.ts';
import { startGateway } from '../helpers/gateway.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import type { GatewayProcess, GatewayProcessOptions } from '../helpers/gateway-process.ts';
import { connect, post, until } from '../helpers/h2.ts';

const FAULTY = `export default {
  name: 'faulty', description: 'Make the fault x-fault names.', paramsSchema: { type: 'object' },
  create() {
    return { request(ex) {
      const f = ex.facts.request.headers['x-fault'];
      if (f === 'reject') {
        const e = new Error('a plugin forgot its catch');
        e.config = { headers: { authorization: 'Bearer sekret-in-config' } };
        e.apiKey = 'sekret-api-key';
        Promise.reject(e);
      }
      if (f === 'reject-value') Promise.reject('a string reason');
      if (f === 'throw') setImmediate(() => { throw new Error('a plugin threw from a timer'); });
    } };
  },
};
`;

const PROBE = pathToFileURL(path.join(import.meta.dirname, 'fixtures/rejection-probe.ts')).href;

function faultyGateway(t: Test, o: GatewayProcessOptions = {}): Promise<GatewayProcess> {
  return startGatewayProcess(t, {
    ...o,
    modelArgs: ['--ttft-ms', '0', '--token-ms', '0', '--tokens', '2'],
    files: { 'local/faulty.mjs': FAULTY, 'policies/f.yaml': 'name: f\nsteps:\n  - use: faulty\n' },
    extraConfig: `facts: { headers: [user-agent, x-fault] }\nplugins: [./local/faulty.mjs]\n${o.extraConfig ?? ''}`,
    env: { NODE_OPTIONS: `--import ${PROBE}` },
  });
}

/** The JSON log lines of `g` with this message. */
function logLines(g: GatewayProcess, msg: RegExp): Array<Record<string, unknown>> {
  return g.stdout().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => msg.test(String(l.msg)));
}

const REJECTION = /^unhandled promise rejection/;

t.test('server.onUnhandledRejection: log (default): logged once per distinct error, counted, the process goes on serving', async (t) => {
  const g = await faultyGateway(t);
  const c = clusterClient(g);
  for (const fault of ['reject', 'reject', 'reject-value']) t.equal((await c.oneShot({ prompt: 'x' }, { 'x-fault': fault })).status, 200, `${fault}: the request itself is served`);
  t.equal((await c.oneShot()).status, 200, 'the next request is served');
  t.equal(await until(async () => (await c.metricValue(/^ghostgate_unhandled_rejections_total /)) || undefined), 3, 'every rejection counted');
  const lines = logLines(g, REJECTION);
  t.equal(lines.length, 2, 'logged once per distinct error (two of the same, one other)');
  t.match(lines[0], { level: 50, type: 'Error', err: 'a plugin forgot its catch', stack: /a plugin forgot its catch\n\s+at / }, 'at error level, with the stack');
  t.match(lines[1], { level: 50, type: 'string', err: 'a string reason' }, 'a non-Error reason, by its type and text');
  t.notMatch(g.stdout() + g.stderr(), /sekret/, 'none of the error\'s other properties (its secrets) logged');
  t.equal(g.child.exitCode, null, 'the process is still running');
});

t.test('server.onUnhandledRejection: exit: logged, then the process exits 1', async (t) => {
  const g = await faultyGateway(t, { extraConfig: 'server: { onUnhandledRejection: exit }' });
  await clusterClient(g).oneShot({ prompt: 'x' }, { 'x-fault': 'reject' }).catch(() => undefined);
  t.equal(await g.exited, 1, 'exit code 1');
  t.match(logLines(g, REJECTION), [{ level: 60, err: 'a plugin forgot its catch', stack: /at / }], 'logged at fatal first');
});

t.test('an uncaught exception: logged, then the process exits 1', async (t) => {
  const g = await faultyGateway(t);
  await clusterClient(g).oneShot({ prompt: 'x' }, { 'x-fault': 'throw' }).catch(() => undefined);
  t.equal(await g.exited, 1, 'exit code 1');
  t.match(logLines(g, /^uncaught exception/), [{ level: 60, err: 'a plugin threw from a timer', origin: 'uncaughtException', stack: /at / }], 'logged at fatal first');
});

t.test('a cluster: workers and the primary log and count, the metric sums them; a worker that throws is replaced', async (t) => {
  const g = await faultyGateway(t, { args: ['--workers', '2'] });
  const c = clusterClient(g);
  const before = new Set((await c.ping()).workers.map((w) => w.pid));
  t.equal((await c.oneShot({ prompt: 'x' }, { 'x-fault': 'reject' })).status, 200, 'a worker made a rejection');
  t.equal(await until(async () => (await c.metricValue(/^ghostgate_unhandled_rejections_total /)) || undefined), 1, 'counted');
  g.child.kill('SIGUSR2');
  await until(() => logLines(g, REJECTION).find((l) => l.pid === g.child.pid));
  t.equal(await c.metricValue(/^ghostgate_unhandled_rejections_total /), 2, 'the primary\'s counted too');
  t.match(logLines(g, REJECTION).find((l) => l.pid === g.child.pid), { level: 50, err: `rejection probe in process ${g.child.pid}` }, 'the primary logged its own');
  t.equal((await c.oneShot()).status, 200, 'still serving');
  await c.oneShot({ prompt: 'x' }, { 'x-fault': 'throw' }).catch(() => undefined);
  await until(async () => (await c.metricValue(/^ghostgate_cluster_worker_restarts_total /)) === 1 || undefined, 30_000);
  const dead = logLines(g, /^uncaught exception/);
  t.equal(dead.length, 1, 'the worker logged its uncaught exception');
  t.ok(before.has(Number(dead[0]!.pid)), 'a worker of the cluster');
  const after = await until(async () => { const w = (await c.ping()).workers; return w.length === 2 && w.every((x) => x.healthy) ? w : undefined; }, 30_000);
  t.notOk(after.some((w) => w.pid === dead[0]!.pid), 'replaced by a new worker');
  t.equal((await c.oneShot()).status, 200, 'serving with two workers again');
  t.equal(g.child.exitCode, null, 'the primary is still running');
});

t.test('the core imported and started as a library installs nothing; changing the key needs a restart', async (t) => {
  const before = [process.listenerCount('unhandledRejection'), process.listenerCount('uncaughtException')];
  const g = await startGateway(t);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  t.equal((await post(s, '/v1/completions', { prompt: 'x' })).status, 200);
  t.strictSame([process.listenerCount('unhandledRejection'), process.listenerCount('uncaughtException')], before, 'no handler installed');
  t.notMatch(await (await fetch(`${g.adminUrl}/metrics`)).text(), /ghostgate_unhandled_rejections_total/, 'no metric registered');
  g.write('gateway.config.yaml', `${readFileSync(g.configFile, 'utf8')}server: { onUnhandledRejection: exit }\n`);
  const r = await g.gw.reload('test');
  t.ok(r.ok);
  t.strictSame(r.restartRequired, ['server.onUnhandledRejection']);
  t.strictSame([process.listenerCount('unhandledRejection'), process.listenerCount('uncaughtException')], before, 'nor by a reload');
});
