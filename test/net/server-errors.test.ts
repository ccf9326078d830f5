/**
 * An 'error' event on a data-plane listener after start (an accept that fails: EMFILE, ENFILE;
 * test/cluster/fixtures/server-error.mjs emits one on SIGUSR2, as test/cluster/admin-error.test.ts
 * does for the admin plane) is logged with its code, not an uncaught exception: the process, and
 * in a `--workers 2` gateway the worker, keeps serving on every port and protocol. Before, the
 * listeners had no 'error' listener and the process died.
 *
 * And the log line's rate: the first error of a code at once, then at most one per code per 10 s,
 * with how many were not logged (a clock of its own, no waiting).
 */
import { EventEmitter } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { logServerErrors } from '../../core/net/server-errors.ts';
import { clusterClient } from '../helpers/cluster.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import type { GatewayProcess } from '../helpers/gateway-process.ts';
import { connect, post, until } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';

const cert = makeCert();
const files = {
  'server-error.mjs': readFileSync(path.join(import.meta.dirname, '../cluster/fixtures/server-error.mjs'), 'utf8'),
  'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert,
};
const BODY = JSON.stringify({ prompt: 'x', max_tokens: 2 });

/** One completion over HTTP/1.1 on a connection of its own (`ca` for TLS). */
function h1(url: string): Promise<number> {
  return new Promise((resolve) => {
    const secure = url.startsWith('https:');
    const req = (secure ? https : http).request(`${url}/v1/completions`, {
      method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': BODY.length },
      ...(secure ? { ca: cert.cert, servername: 'localhost' } : {}),
    }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)); });
    req.on('error', () => resolve(0));
    req.end(BODY);
  });
}

/** One completion over HTTP/2 on a session of its own. */
async function h2(url: string): Promise<number> {
  const s = await connect(url, { ca: cert.cert, servername: 'localhost' });
  try { return (await post(s, '/v1/completions', JSON.parse(BODY))).status; } finally { s.destroy(); }
}

/** Every port and protocol serves a completion. */
async function serves(t: Test, g: GatewayProcess, when: string): Promise<void> {
  for (const [proto, url] of [['h2c', g.url], ['HTTP/1.1', g.url], ['TLS h2', g.tlsUrl!], ['TLS HTTP/1.1', g.tlsUrl!]] as const) {
    t.equal(proto.endsWith('HTTP/1.1') ? await h1(url) : await h2(url), 200, `${when}: ${proto} serves`);
  }
}

for (const args of [[], ['--workers', '2']]) {
  t.test(`an error on a data-plane listener after start: logged with its code, every port keeps serving (${args.join(' ') || 'one process'})`, async (t) => {
    const g = await startGatewayProcess(t, {
      args, files, extraConfig: 'plugins: [./server-error.mjs]',
      listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
    });
    const cluster = args.length > 0;
    // The data-plane listeners live in the workers: the signal goes to one of them.
    const before = cluster ? (await clusterClient(g).ping()).workers.map((w) => w.pid) : [];
    const target = cluster ? before[0]! : g.child.pid!;
    for (const [listener, url] of [['cleartext', g.url], ['tls', g.tlsUrl!]] as const) {
      writeFileSync(path.join(g.dir, 'error-port.flag'), new URL(url).port);
      const seen = g.stdout().split('\n').length;
      process.kill(target, 'SIGUSR2');
      const line = await until(() => {
        if (g.child.exitCode !== null) throw new Error(`the gateway exited (${g.child.exitCode}): ${g.stderr().slice(-600)}`);
        return g.stdout().split('\n').slice(seen - 1).find((l) => l.includes('"data plane server error; still serving"'));
      }, 30_000);
      t.match(JSON.parse(line) as object, { level: 50, listener, code: 'EADDRINUSE', err: 'listen EADDRINUSE: test-emitted' }, `${listener}: logged with the listener and the code`);
      await serves(t, g, `after the error on ${listener}`);
    }
    t.equal(g.child.exitCode, null, 'the gateway is still running');
    if (cluster) t.same((await clusterClient(g).ping()).workers.map((w) => w.pid), before, 'no worker was replaced');
  });
}

t.test('the log line: the first of each code at once, then one per code per 10 s with the count of those not logged', async (t) => {
  const server = Object.assign(new EventEmitter(), { listening: false });
  const lines: Array<Record<string, unknown>> = [];
  let now = 1_000_000;
  logServerErrors(server, { error: (o: object) => { lines.push(o as Record<string, unknown>); } }, 'cleartext', () => now);
  const emit = (code: string): void => { server.emit('error', Object.assign(new Error(`accept ${code}`), { code })); };
  emit('EADDRINUSE');
  t.same(lines, [], 'not listening yet: a bind failure, which listen() reports');
  server.listening = true;
  emit('EMFILE');
  emit('EMFILE');
  emit('ENFILE');
  now += 9_999;
  emit('EMFILE');
  t.same(lines, [{ listener: 'cleartext', code: 'EMFILE', err: 'accept EMFILE' }, { listener: 'cleartext', code: 'ENFILE', err: 'accept ENFILE' }], 'one line per code within 10 s');
  now += 2;
  emit('EMFILE');
  t.same(lines[2], { listener: 'cleartext', code: 'EMFILE', err: 'accept EMFILE', repeats: 2 }, 'then one more, with the two not logged');
});
