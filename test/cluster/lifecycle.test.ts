/**
 * The edges of `ghostgate start --workers`: a bad count is refused with a clear message, a file
 * edit reloads every worker (the primary watches), and a primary killed outright (SIGKILL, no
 * chance to stop its workers) leaves no worker serving.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { NODE_BIN, ROOT, spawnTracked, stopTracked } from '../helpers/proc.ts';
import { connect, post, until } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';

const CLI = path.join(ROOT, 'bin/ghostgate.ts');

t.test('--workers must be a whole number from 1 to 256, or auto', async (t) => {
  for (const bad of ['0', 'two', '1.5', '257']) {
    const child = spawnTracked(NODE_BIN, [CLI, 'start', '--workers', bad], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.teardown(() => stopTracked(child, 0, 'SIGKILL'));
    let err = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => { err += d; });
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    t.equal(code, 2, `--workers ${bad}: exit 2`);
    t.match(err, new RegExp(`--workers must be a whole number from 1 to 256, or auto \\(got "${bad.replace('.', '\\.')}"\\)`));
  }
});

t.test('a primary killed with SIGKILL leaves no worker behind', async (t) => {
  const g = await startGatewayProcess(t, { args: ['--workers', '2'] });
  const ping = await (await fetch(`${g.adminUrl}/_ping`)).json() as { workers: Array<{ pid: number }> };
  const pids = ping.workers.map((w) => w.pid);
  t.equal(pids.length, 2);
  g.child.kill('SIGKILL');
  const alive = (pid: number): boolean => { try { process.kill(pid, 0); return true; } catch { return false; } };
  // Each worker sees its IPC channel close, drains (nothing in flight) and exits on its own.
  await until(() => pids.every((p) => !alive(p)), 60_000);
  t.pass('both workers exited once their primary was gone');
});

t.test('a file edit reloads every worker once (the primary watches the files, the workers do not)', async (t) => {
  const g = await startGatewayProcess(t, { args: ['--workers', '2'], noReloadLine: true, extraConfig: 'reload: { watch: true, debounceMs: 50 }' });
  interface Cfg { workers: Array<{ version: number; lastReload?: { trigger: string; ok: boolean } }> }
  const cfg = async (): Promise<Cfg> => (await fetch(`${g.adminUrl}/-/config`)).json() as Promise<Cfg>;
  t.same((await cfg()).workers.map((w) => w.version), [1, 1]);
  writeFileSync(path.join(g.dir, 'policies/extra.yaml'), 'name: extra\nmatch: { paths: [/v1/completions] }\nsteps:\n  - use: set-headers\n    params: { response: { x-extra: yes } }\n');
  const after = await until(async () => {
    const c = await cfg();
    return c.workers.every((w) => w.lastReload?.trigger === 'file change' && w.lastReload.ok) ? c : undefined;
  }, 60_000);
  t.same(after.workers.map((w) => w.version), [2, 2], 'each worker loaded it once: version 2, not 3');
});

t.test('the TLS port is shared by the workers too', async (t) => {
  const { key, cert } = makeCert();
  const g = await startGatewayProcess(t, {
    args: ['--workers', '2'],
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, cert: { file: cert.pem }, key: { file: key.pem } } }',
    files: { 'cert.pem': cert, 'key.pem': key },
  });
  t.ok(g.tlsUrl, 'the banner shows the TLS address');
  const statuses: number[] = [];
  // The kernel spreads connections by hash: 16 reach both workers but with odds of 2 in 65,536.
  for (let i = 0; i < 16; i++) {
    const s = await connect(g.tlsUrl!, { ca: cert });
    statuses.push((await post(s, '/v1/completions', { prompt: 'x' })).status);
    s.close();
  }
  t.same(statuses, Array(16).fill(200), 'h2 over TLS answers on every connection');
  const ping = await (await fetch(`${g.adminUrl}/_ping`)).json() as { workers: Array<{ slot: number; requests: number }> };
  for (const w of ping.workers) t.ok(w.requests >= 1, `worker ${w.slot} served TLS requests (${w.requests})`);
});
