/**
 * An 'error' event on the admin plane's listening server after start (test/cluster/fixtures/
 * server-error.mjs emits one on SIGUSR2) is logged, not an uncaught exception: the primary of a
 * `--workers 2` gateway, and a single process, keep serving both planes.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { clusterClient } from '../helpers/cluster.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { until } from '../helpers/h2.ts';

const fixture = { 'server-error.mjs': readFileSync(path.join(import.meta.dirname, 'fixtures/server-error.mjs'), 'utf8') };

for (const args of [['--workers', '2'], []]) {
  t.test(`an error on the admin server after start: logged, both planes keep serving (${args.join(' ') || 'one process'})`, async (t) => {
    const g = await startGatewayProcess(t, { args, extraConfig: 'plugins: [./server-error.mjs]', files: fixture });
    writeFileSync(path.join(g.dir, 'error-port.flag'), new URL(g.adminUrl).port);
    g.child.kill('SIGUSR2');
    const line = await until(() => g.stdout().split('\n').find((l) => l.includes('"admin plane server error"')), 30_000);
    t.match(JSON.parse(line) as object, { level: 50, code: 'EADDRINUSE', err: 'listen EADDRINUSE: test-emitted' }, 'the error is logged with its code');
    t.match(g.stdout(), /test hook: emitted an error on the server on port/);
    t.equal((await fetch(`${g.adminUrl}/_ping`)).status, 200, 'the admin plane still answers');
    t.equal((await clusterClient(g).oneShot()).status, 200, 'the data plane still serves');
    t.equal(g.child.exitCode, null, 'the gateway is still running');
  });
}
