/**
 * The npm scripts as a user runs them from their shell (the machine's own node and npm, possibly
 * older than the pinned Node 24): `npm run -s gg` prints only the command's output, `npm ci`
 * installs the pinned Node without an unreviewed install script, and `npm start` stops with npm.
 * Own file: each spawn of npm is slow on a busy machine, and with the first-hour tests the file
 * ran past tap's per-file timeout.
 */
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { within } from '../helpers/h2.ts';
import { spawnTracked, stopTracked } from '../helpers/proc.ts';
import { freePort, ROOT } from './run.ts';

/**
 * `npm <args>` as from a user's shell: the machine's own node and npm first on PATH, not the
 * pinned Node, and no npm_* variables of the test run. Its output is collected; teardown kills
 * its group.
 */
function userNpm(t: { teardown(fn: () => unknown): void }, args: string[], extraEnv: Record<string, string> = {}) {
  const PATH = (process.env.PATH ?? '').split(path.delimiter).filter((d) => !d.includes('node_modules')).join(path.delimiter);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
  const child = spawnTracked('npm', args, { cwd: ROOT, env: { ...env, ...extraEnv, PATH }, stdio: ['ignore', 'pipe', 'pipe'] }, { node: false });
  t.teardown(() => stopTracked(child, 0, 'SIGKILL'));
  const io = { child, out: '', err: '', exited: new Promise<void>((r) => child.once('exit', () => r())), closed: new Promise<number | null>((r) => child.once('close', r)) };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { io.out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { io.err += d; });
  return io;
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

t.test('`npm run -s gg -- <command>` (the README\'s way to run the CLI): only the command\'s output, no EBADENGINE', async (t) => {
  const npm = userNpm(t, ['run', '-s', 'gg', '--', 'plugins']);
  const code = await npm.closed;
  t.equal(code, 0, npm.err);
  t.match(npm.out, /^auth\s+Verify the bearer token/, 'stdout starts with the command\'s own output');
  t.notMatch(npm.out + npm.err, /EBADENGINE|> ghostgate@/, 'no engine warning, no npm banner');
});

// `npm ci` runs the `node` devDependency's preinstall, which installs the pinned Node 24 the npm
// scripts run on. npm 11.16+ lists install scripts that package.json's `allowScripts` does not
// cover after every install, and npm 12 skips them: no Node 24, nothing runs. So it is listed.
t.test('`npm ci` installs the pinned Node: its install script is approved in allowScripts', async (t) => {
  const npm = userNpm(t, ['install-scripts', 'ls', '--json']);
  const code = await npm.closed;
  if (code !== 0 && /Unknown command|install-scripts/.test(npm.err)) { void t.skip(`this npm has no install-scripts command: ${npm.err.split('\n')[0]}`, () => {}); return; }
  t.equal(code, 0, npm.err);
  t.same((JSON.parse(npm.out) as { allowScripts: unknown[] }).allowScripts, [], 'no package with an install script left unreviewed');
});

// A process manager, `timeout` or a container runtime that runs `npm start` stops it with SIGTERM
// to npm alone. npm passes it to the script's shell; had the shell not exec'd node, the shell
// would die and the gateway run on, orphaned, holding its ports (the next `npm start`: EADDRINUSE).
t.test('`npm start` stopped with SIGTERM to npm: the gateway shuts down with it and frees its ports', async (t) => {
  const ports = [await freePort(), await freePort(), await freePort()];
  const npm = userNpm(t, ['start'], { GHOSTGATE_PORT: String(ports[0]), GHOSTGATE_ADMIN_PORT: String(ports[1]), GHOSTGATE_MODEL_PORT: String(ports[2]) });
  await within('the banner', new Promise<void>((resolve) => npm.child.stdout!.on('data', () => { if (npm.out.includes('Try a streamed completion')) resolve(); })), 60_000);
  npm.child.kill('SIGTERM');
  await within('npm to exit', npm.exited, 30_000);
  for (const p of ports) t.notOk(await accepts(p), `port ${p} is free once npm has exited`);
  t.match(npm.out, /"signal":"SIGTERM"[^\n]*shutting down/, 'the gateway got the SIGTERM and ran its own shutdown');
});
