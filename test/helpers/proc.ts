/**
 * Child processes for tests that cannot outlive the test.
 *
 *   const child = spawnTracked(NODE_BIN, [MAIN, '--port', '0']);
 *   t.teardown(() => stopTracked(child));
 *
 * Three layers, so a failing or timed-out test leaves nothing running:
 * - each child is the leader of its own process group (`detached`), and `stopTracked` ends the
 *   whole group (SIGTERM, then SIGKILL after a bounded grace), grandchildren included;
 * - if the test process exits without running its teardowns (an uncaught error), its `exit`
 *   handler SIGKILLs every group still alive;
 * - if the test process is killed outright (tap's per-file timeout ends in SIGALRM/SIGKILL, which
 *   runs no handler), each child notices on its own: `parent-watch.ts` is preloaded into it
 *   through NODE_OPTIONS and kills the child's group when its parent is gone. A command that is
 *   not the pinned Node (redis-server, haproxy, npm on the machine's older node) cannot preload
 *   it: it runs under a small guard on the pinned Node (`GUARD`), in the guard's process group,
 *   and goes with it.
 * Every child also carries the run's `GHOSTGATE_TEST_RUN` marker (set by `scripts/test.ts`), by
 * which `npm test` finds and reports anything still alive once the suite is over.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { TEST_RUN_ENV } from '../../scripts/leftovers.ts';

export const ROOT = path.resolve(import.meta.dirname, '../..');
/** Node 24 from devDependencies (the machine's own `node` may be older). */
export const NODE_BIN = path.join(ROOT, 'node_modules/.bin/node');
export { TEST_RUN_ENV };
const WATCH = pathToFileURL(path.join(import.meta.dirname, 'parent-watch.ts')).href;

const live = new Set<ChildProcess>();

/** SIGKILL the child's whole process group; no error if it is already gone. */
export function killGroup(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (child.pid === undefined) return;
  try { process.kill(-child.pid, signal); } catch { /* ESRCH: the group is gone */ }
}

process.on('exit', () => { for (const c of live) killGroup(c); });

/** The environment for a test child: the caller's env plus the run marker and the parent watch. */
export function trackedEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const nodeOptions = env.NODE_OPTIONS ?? '';
  return {
    ...env,
    [TEST_RUN_ENV]: env[TEST_RUN_ENV] ?? process.env[TEST_RUN_ENV] ?? `adhoc-${process.pid}`,
    GHOSTGATE_TEST_PARENT: String(process.pid),
    GHOSTGATE_TEST_NODE_OPTIONS: nodeOptions,
    NODE_OPTIONS: `${nodeOptions} --import "${WATCH}"`.trim(),
  };
}

/**
 * The guard a command other than the pinned Node runs under (`node -e GUARD cmd args…`): it
 * starts the command in the guard's process group (stdio passed through), passes SIGTERM and
 * SIGINT on to it, and ends as it ended (its exit code, or the same signal). The parent watch runs in
 * the guard, so a killed test process takes the command with it.
 */
const GUARD = `
const { spawn } = require('node:child_process');
const c = spawn(process.argv[1], process.argv.slice(2), { stdio: 'inherit' });
c.on('error', (e) => { process.stderr.write(String(e) + '\\n'); process.exit(127); });
c.on('exit', (code, sig) => {
  if (sig === null) process.exit(code ?? 1);
  process.removeAllListeners(sig);
  process.kill(process.pid, sig);
});
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => c.kill(s));
`;

/**
 * `spawn`, as the leader of a new process group, with the run marker and the parent watch.
 * A command that is not the pinned Node (`node: false`: e.g. redis-server, haproxy, or `npm` on
 * the machine's own, older node, which cannot preload a .ts file) runs under `GUARD`: the
 * returned child is the guard, which passes signals on and exits as the command does.
 */
export function spawnTracked(cmd: string, args: string[], opts: SpawnOptions = {}, { node = true } = {}): ChildProcess {
  const [file, argv] = node ? [cmd, args] : [NODE_BIN, ['-e', GUARD, cmd, ...args]];
  const child = spawn(file, argv, { ...opts, detached: true, env: trackedEnv(opts.env) });
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.once('error', () => live.delete(child));
  return child;
}

/**
 * Stop a tracked child: `signal` to the child, wait for it to exit (at most `graceMs`), then
 * SIGKILL its process group so nothing it started survives. Resolves with the exit code (null if
 * it had to be killed). Bounded: a teardown that calls it always finishes.
 */
export async function stopTracked(child: ChildProcess, graceMs = 5000, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    try { child.kill(signal); } catch { /* already gone */ }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise<void>((r) => { timer = setTimeout(r, graceMs); })]);
    clearTimeout(timer);
  }
  killGroup(child);
  return child.exitCode;
}
