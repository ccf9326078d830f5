/**
 * core/cli/semi-space.ts: `ghostgate start` runs its processes with V8's
 * `--max-semi-space-size` from `server.semiSpaceMb` (default 8), the user's own flag winning.
 * - Seen from inside the real process (test/cli/fixtures/semi-space-probe.ts on SIGUSR2): the
 *   young generation grows to 2 × the configured semi-space and no further; with `0`, past it
 *   (Node's default). A single process, and a cluster's primary and both workers.
 * - `v8.setFlagsFromString` at start does not change it (why the flag must be on Node's command line).
 * - The flag is applied by re-executing the same process (process.execve): the process that
 *   runs with it has the pid the supervisor started, and there is no other one.
 * - `--max-semi-space-size` in NODE_OPTIONS wins over the config; the banner says who decided.
 * - SIGHUP still reloads (a changed `server.semiSpaceMb` is reported restart-required) and
 *   SIGTERM still drains and exits 0.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import type { Test } from 'tap';
import { semiSpaceIn, semiSpacePlan, workerExecArgv } from '../../core/cli/semi-space.ts';
import { clusterClient } from '../helpers/cluster.ts';
import { startGateway } from '../helpers/gateway.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import type { GatewayProcess, GatewayProcessOptions } from '../helpers/gateway-process.ts';
import { until } from '../helpers/h2.ts';
import { NODE_BIN } from '../helpers/proc.ts';

const PROBE = pathToFileURL(path.join(import.meta.dirname, 'fixtures/semi-space-probe.ts')).href;

interface Probe { pid: number; newSpaceMaxMb: number; execArgv: string[] }

function start(t: Test, o: GatewayProcessOptions & { nodeOptions?: string } = {}): Promise<GatewayProcess> {
  return startGatewayProcess(t, { ...o, modelArgs: ['--ttft-ms', '0', '--token-ms', '0', '--tokens', '2'], env: { NODE_OPTIONS: `--import ${PROBE}${o.nodeOptions ? ` ${o.nodeOptions}` : ''}` } });
}

/** Ask process `pid` of `g` to measure its young generation; its report once it came. */
async function probe(g: GatewayProcess, pid: number): Promise<Probe> {
  const from = g.stderr().length;
  process.kill(pid, 'SIGUSR2');
  return until(() => g.stderr().slice(from).split('\n').filter((l) => l.startsWith('{"semiProbe"'))
    .map((l) => (JSON.parse(l) as { semiProbe: Probe }).semiProbe).find((p) => p.pid === pid), 60_000);
}

/**
 * Whether a probe saw the young generation of `semiMb` semi-spaces: new space grows to about
 * twice that (measured: 4 to 5.25 MB for 2, 16 for 8, 32 for 16), never to the next size's (and
 * 64 MB with Node's default).
 */
function sized(t: Test, p: Probe, semiMb: number, msg = ''): void {
  t.ok(p.newSpaceMaxMb > semiMb && p.newSpaceMaxMb < 3 * semiMb, `${msg}new space ${p.newSpaceMaxMb} MB: about 2 × ${semiMb} MB`);
}

/** The banner's young-generation line. */
const heapLine = (g: GatewayProcess): string => /node heap\s+(.*)/.exec(g.stdout())![1]!;

t.test('the flag in Node arguments: every spelling Node takes', async (t) => {
  t.equal(semiSpaceIn(['--max-semi-space-size=4']), '4');
  t.equal(semiSpaceIn(['--max_semi_space_size', '16', 'x']), '16');
  t.equal(semiSpaceIn(['--import', 'x', '--max-semi-space-size=2', '--max-semi-space-size=3']), '3', 'the last one, as V8 takes it');
  t.equal(semiSpaceIn(['--max-semi-space-sizes=4', '--min-semi-space-size=4']), undefined);
});

t.test('the plan: the config, unless the user gave Node the flag', async (t) => {
  t.match(semiSpacePlan(8, [], {}), { mb: 8, source: 'config', reexec: true, flag: '--max-semi-space-size=8' });
  t.match(semiSpacePlan(0, [], {}), { mb: undefined, source: 'node-default', reexec: false });
  t.match(semiSpacePlan(null, [], {}), { mb: undefined, source: 'node-default', reexec: false });
  t.match(semiSpacePlan(8, ['--max-semi-space-size=32'], {}), { mb: 32, source: 'execArgv', reexec: false });
  t.match(semiSpacePlan(0, ['--max-semi-space-size=32'], {}), { mb: 32, source: 'execArgv', reexec: false });
  t.match(semiSpacePlan(8, [], { NODE_OPTIONS: '--import x --max-semi-space-size=2' }), { mb: 2, source: 'NODE_OPTIONS', reexec: false });
  t.match(semiSpacePlan(8, ['--max-semi-space-size=8'], { GHOSTGATE_SEMI_SPACE_FROM_CONFIG: '8' }), { mb: 8, source: 'config', reexec: false }, 're-executed: ours');
  t.strictSame(workerExecArgv(semiSpacePlan(8, ['--max-semi-space-size=8'], {}), ['--max-semi-space-size=8']), ['--max-semi-space-size=8'], 'workers: the primary\'s, flag included once');
});

t.test('why a re-exec: v8.setFlagsFromString at start does not resize the young generation', async (t) => {
  const code = `import v8 from 'node:v8'; v8.setFlagsFromString('--max-semi-space-size=2'); const { newSpaceMaxMb } = await import(${JSON.stringify(PROBE)}); console.log(newSpaceMaxMb());`;
  const mb = Number(execFileSync(NODE_BIN, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 60_000 }));
  t.ok(mb > 16, `new space still grows to ${mb} MB`);
});

t.test('changing server.semiSpaceMb needs a restart', async (t) => {
  const g = await startGateway(t);
  g.write('gateway.config.yaml', `${readFileSync(g.configFile, 'utf8')}server: { semiSpaceMb: 0 }\n`);
  const r = await g.gw.reload('test');
  t.ok(r.ok);
  t.strictSame(r.restartRequired, ['server.semiSpaceMb']);
});

t.test('ghostgate start: 8 MB semi-spaces by default, in the process it started; SIGHUP and SIGTERM as before', async (t) => {
  const g = await start(t, { extraConfig: 'shutdown: { graceMs: 500 }' });
  const pid = g.child.pid!;
  t.equal(heapLine(g), 'young generation: semi-space 8 MB (server.semiSpaceMb)');
  const p = await probe(g, pid);
  sized(t, p, 8);
  t.ok(p.execArgv.includes('--max-semi-space-size=8'));
  t.equal(readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim(), '', 'no child process: re-executed in place, not forked');
  t.equal((await clusterClient(g).oneShot()).status, 200);
  // SIGHUP reloads: a changed semiSpaceMb is reported, and the process keeps what it started with.
  writeFileSync(g.configFile, readFileSync(g.configFile, 'utf8').replace('shutdown:', 'server: { semiSpaceMb: 2 }\nshutdown:'));
  g.child.kill('SIGHUP');
  const reload = await until(async () => (await clusterClient(g).admin<{ lastReload?: { ok: boolean; restartRequired?: string[] } }>('/-/config')).body.lastReload);
  t.strictSame(reload.restartRequired, ['server.semiSpaceMb']);
  sized(t, await probe(g, pid), 8, 'after the reload: ');
  g.child.kill('SIGTERM');
  t.equal(await g.exited, 0, 'SIGTERM: drained, exit 0');
  t.match(g.stdout(), /"signal":"SIGTERM".*shutting down/);
});

t.test('server.semiSpaceMb: 0 leaves Node\'s default', async (t) => {
  const g = await start(t, { extraConfig: 'server: { semiSpaceMb: 0 }' });
  t.equal(heapLine(g), 'young generation: semi-space Node\'s default (server.semiSpaceMb: 0)');
  const p = await probe(g, g.child.pid!);
  t.ok(p.newSpaceMaxMb > 16, `new space grows past 16 MB (${p.newSpaceMaxMb} MB)`);
  t.notOk(p.execArgv.some((a) => a.includes('semi-space')));
});

t.test('--max-semi-space-size in NODE_OPTIONS wins over the config', async (t) => {
  const g = await start(t, { extraConfig: 'server: { semiSpaceMb: 16 }', nodeOptions: '--max-semi-space-size=4' });
  t.equal(heapLine(g), 'young generation: semi-space 4 MB (--max-semi-space-size in NODE_OPTIONS, over server.semiSpaceMb)');
  const p = await probe(g, g.child.pid!);
  sized(t, p, 4);
  t.strictSame(p.execArgv, [], 'nothing added');
});

t.test('--workers 2: the primary and both workers run with the configured size', async (t) => {
  const g = await start(t, { args: ['--workers', '2'], extraConfig: 'server: { semiSpaceMb: 4 }' });
  t.equal(heapLine(g), 'young generation: semi-space 4 MB (server.semiSpaceMb), in every process');
  const pids = [g.child.pid!, ...(await clusterClient(g).ping()).workers.map((w) => w.pid)];
  t.equal(pids.length, 3);
  for (const pid of pids) sized(t, await probe(g, pid), 4, `pid ${pid}: `);
  g.child.kill('SIGTERM');
  t.equal(await g.exited, 0);
});
