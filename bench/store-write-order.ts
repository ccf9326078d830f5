/**
 * Where a write queued with setImmediate lands relative to an HTTP/2 request made in the same
 * turn (core/store/redis.ts relies on it: supersede's claim is written after the request goes
 * upstream). Runs itself under strace (Linux; `apt-get install strace`) and prints the order of
 * the write syscalls:
 *
 *   npx node bench/store-write-order.ts
 *
 * Node sends HTTP/2 frames from a native immediate, which runs before JavaScript immediates in
 * the check phase: expected "HTTP/2 request first".
 */
import { spawnSync } from 'node:child_process';
import http2 from 'node:http2';
import net from 'node:net';
import type { AddressInfo } from 'node:net';

if (process.argv[2] !== '--child') {
  const r = spawnSync('strace', ['-f', '-e', 'trace=write,writev,sendmsg,sendto', '-e', 'signal=none', process.execPath, process.argv[1]!, '--child'], { encoding: 'utf8' });
  if (r.error) { process.stderr.write(`strace could not run (${r.error.message}); apt-get install strace\n`); process.exit(2); }
  const lines = r.stderr.split('\n');
  const from = lines.findIndex((l) => l.includes('MARK'));
  const h2 = lines.findIndex((l, i) => i > from && l.includes('hello-upstream'));
  const claim = lines.findIndex((l, i) => i > from && l.includes('CLAIM-AFTER'));
  if (from < 0 || h2 < 0 || claim < 0) { process.stderr.write(`could not find the writes in strace's output:\n${r.stderr.slice(-3000)}\n`); process.exit(1); }
  process.stdout.write(`node ${process.version}: ${h2 < claim ? 'HTTP/2 request first, then the setImmediate write' : 'the setImmediate write FIRST, then the HTTP/2 request'}\n`);
  process.exit(h2 < claim ? 0 : 1);
}

const srv = http2.createServer();
srv.on('stream', (s) => { s.respond({ ':status': 200 }); s.end('ok'); });
await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
const sink = net.createServer((c) => c.resume());
await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
const sess = http2.connect(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`);
await new Promise((r) => sess.once('connect', r));
const sock = net.connect((sink.address() as AddressInfo).port, '127.0.0.1');
await new Promise((r) => sock.once('connect', r));
// From a timer, as from a request's callback: make the request, queue the other write.
setTimeout(() => {
  process.stderr.write('MARK\n');
  const q = sess.request({ ':method': 'POST', ':path': '/' });
  q.end('{"hello-upstream":1}');
  setImmediate(() => sock.write('CLAIM-AFTER'));
  q.resume();
  q.on('end', () => process.exit(0));
}, 10);
