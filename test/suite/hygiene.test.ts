/**
 * The suite's process hygiene (test/helpers/proc.ts, parent-watch.ts, scripts/leftovers.ts): a
 * tracked child's whole process group ends with its teardown, a child whose test process is killed
 * outright (as tap's timeout does) stops by itself, and a process left behind is found by the run
 * marker, reported and killed.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { findLeftovers, reapLeftovers, TEST_RUN_ENV } from '../../scripts/leftovers.ts';
import { waitFor } from '../helpers/h2.ts';
import { NODE_BIN, spawnTracked, stopTracked } from '../helpers/proc.ts';

/** Running (not gone, not a zombie waiting for init to reap it). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch { return false; }
}
const killQuietly = (pid: number): void => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } };

/** Start `code` (ES module) on the pinned Node; resolves with the first line it prints. */
function firstLine(child: ReturnType<typeof spawn>): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => { buf += d; const nl = buf.indexOf('\n'); if (nl !== -1) resolve(buf.slice(0, nl)); });
    child.once('exit', (code) => reject(new Error(`exited (${code}) before printing`)));
  });
}

t.test('stopTracked ends the child and what it started (its process group)', async (t) => {
  const child = spawnTracked(NODE_BIN, ['-e', `
    const { spawn } = require('node:child_process');
    const g = spawn('sleep', ['300'], { stdio: 'ignore' });
    console.log(g.pid);
    setInterval(() => {}, 1000);
    process.on('SIGTERM', () => process.exit(0)); // leaves its own child behind, as a careless program would
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  const grandchild = Number(await firstLine(child));
  t.teardown(() => killQuietly(grandchild));
  t.ok(running(grandchild), 'the grandchild runs');
  t.equal(await stopTracked(child), 0, 'the child exited on SIGTERM');
  await waitFor('the grandchild to be gone', () => !running(grandchild));
  t.pass('the grandchild went with the group');
});

t.test('a child whose test process is killed outright stops by itself (parent watch), a command other than Node too', async (t) => {
  // A stand-in for a test process: it starts a tracked Node child and a tracked `sleep` (not Node:
  // under the guard), prints their pids, and is then SIGKILLed (no teardown, no exit handler runs:
  // what tap's timeout does to a hung test).
  const proc = pathToFileURL(path.join(import.meta.dirname, '../helpers/proc.ts')).href;
  const testProcess = spawn(NODE_BIN, ['--input-type=module', '-e', `
    import { NODE_BIN, spawnTracked } from ${JSON.stringify(proc)};
    const c = spawnTracked(NODE_BIN, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    const g = spawnTracked('sh', ['-c', 'echo $$; exec sleep 300'], { stdio: ['ignore', 'pipe', 'ignore'] }, { node: false });
    g.stdout.once('data', (d) => console.log(c.pid, String(d).trim()));
    setInterval(() => {}, 1000);
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => killQuietly(testProcess.pid!));
  const [child, sleeper] = (await firstLine(testProcess)).split(' ').map(Number) as [number, number];
  t.teardown(() => { killQuietly(child); killQuietly(sleeper); });
  t.ok(running(child) && running(sleeper), 'the tracked children run');
  testProcess.kill('SIGKILL');
  await waitFor('the orphaned Node child to stop', () => !running(child));
  await waitFor('the orphaned sleep to stop', () => !running(sleeper));
  t.pass('both orphans stopped by themselves');
});

t.test('a child that re-executes itself in place (process.execve, as ghostgate start does) keeps its parent watch', async (t) => {
  const proc = pathToFileURL(path.join(import.meta.dirname, '../helpers/proc.ts')).href;
  // The child re-executes itself once (same pid, same environment), then idles.
  const child = 'if (!process.env.REEXECED) process.execve(process.execPath, [process.execPath, "-e", "console.log(process.pid); setInterval(() => {}, 1000)"], { ...process.env, REEXECED: "1" });';
  const testProcess = spawn(NODE_BIN, ['--input-type=module', '-e', `
    import { NODE_BIN, spawnTracked } from ${JSON.stringify(proc)};
    const c = spawnTracked(NODE_BIN, ['-e', ${JSON.stringify(child)}], { stdio: ['ignore', 'pipe', 'ignore'] });
    c.stdout.once('data', (d) => console.log(c.pid, String(d).trim()));
    setInterval(() => {}, 1000);
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => killQuietly(testProcess.pid!));
  const [pid, after] = (await firstLine(testProcess)).split(' ').map(Number) as [number, number];
  t.teardown(() => killQuietly(pid));
  t.equal(after, pid, 'the child re-executed in place: same pid');
  testProcess.kill('SIGKILL');
  await waitFor('the re-executed orphan to stop', () => !running(pid));
  t.pass('it stopped by itself');
});

t.test('a command other than Node under the guard: signals pass on, its exit is the guard\'s', async (t) => {
  const exit = (c: ReturnType<typeof spawn>): Promise<[number | null, string | null]> => new Promise((r) => c.once('exit', (code, sig) => r([code, sig])));
  const three = spawnTracked('sh', ['-c', 'exit 3'], { stdio: 'ignore' }, { node: false });
  t.same(await exit(three), [3, null], 'exit code 3 comes through');
  const sleeper = spawnTracked('sh', ['-c', 'echo started; exec sleep 300'], { stdio: ['ignore', 'pipe', 'ignore'] }, { node: false });
  t.teardown(() => stopTracked(sleeper, 0, 'SIGKILL'));
  await firstLine(sleeper);
  sleeper.kill('SIGTERM');
  t.same(await exit(sleeper), [null, 'SIGTERM'], 'SIGTERM to the guard ends the command, and the guard as it did');
});

t.test('a process left behind is found by the run marker, reported and killed', async (t) => {
  const runId = `hygiene-test-${randomUUID()}`;
  const left = spawn('sleep', ['300'], { stdio: 'ignore', env: { ...process.env, [TEST_RUN_ENV]: runId } });
  const other = spawn('sleep', ['300'], { stdio: 'ignore', env: { ...process.env, [TEST_RUN_ENV]: `${runId}-other` } });
  t.teardown(() => { killQuietly(left.pid!); killQuietly(other.pid!); });
  await waitFor('the processes to start', () => running(left.pid!) && running(other.pid!));
  t.same(findLeftovers(runId).map((p) => p.pid), [left.pid], 'found by its marker, and only it');
  const lines: string[] = [];
  const exited = new Promise((r) => left.once('exit', r));
  const reaped = await reapLeftovers(runId, 0, (l) => lines.push(l));
  t.same(reaped.map((p) => p.pid), [left.pid]);
  t.match(lines.join('\n'), new RegExp(`pid ${left.pid}: sleep 300`), 'reported with its command line');
  await exited;
  t.same(findLeftovers(runId), [], 'and killed');
  t.ok(running(other.pid!), 'another run\'s process is left alone');
});
