/**
 * The Node internals the gateway relies on, one test each, named. They are not public API: when a
 * Node upgrade changes one, this file fails and says which, and which code depends on it, before
 * the symptom (a lost HTTP/1.1 request, a wrong deadline, a stuck shutdown) shows up elsewhere.
 *
 * - `net.Socket#_handle._consumed` honoured by `http.Server` (core/net/http1.ts `adopt`)
 * - `net.Socket#_httpMessage`, the response in progress (core/net/http1.ts, core/server/client-error.ts)
 * - `ServerHttp2Stream#_readableState.ended`, END_STREAM seen before the body is read (core/net/h2-sessions.ts)
 * - `TLSSocket#_parent`, the TCP socket of a server-side TLS connection (core/net/dual-protocol.ts)
 */
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { within } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';

const NODE = `Node ${process.version}`;

/** The internals this file checks. A new one used in core/ must be added here, with its test. */
const NAMED = ['_handle', '_consumed', '_httpMessage', '_readableState', '_parent'];

t.test('every underscore property core/ reads on Node objects is one this file names', async (t) => {
  const files = (dir: string): string[] => readdirSync(dir).flatMap((e) => {
    const p = path.join(dir, e);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
  const used = new Map<string, string>();
  for (const f of files(path.join(import.meta.dirname, '../../core'))) {
    const src = readFileSync(f, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
    // `x._name` and `{ _name?: … }` (the casts that reach internals); not `_param` arguments.
    for (const m of src.matchAll(/\.(_[a-z][A-Za-z]*)\b|[{;]\s*(_[a-z][A-Za-z]*)\??:/g)) used.set(m[1] ?? m[2]!, path.basename(f));
  }
  t.ok(used.size >= NAMED.length, `found ${[...used.keys()].join(', ')}`);
  for (const [name, file] of used) t.ok(NAMED.includes(name), `${name} (used in ${file}) is named and tested here`);
});

function listen(server: net.Server): Promise<number> {
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r((server.address() as AddressInfo).port)));
}

t.test('net.Socket#_handle._consumed: http.Server reads through the socket, unshifted bytes and later data events included (core/net/http1.ts adopt)', async (t) => {
  const h1 = http.createServer((req, res) => { res.end(`${req.method} ${req.url}`); });
  let adopted!: () => void;
  const adoptedP = new Promise<void>((r) => { adopted = r; });
  let dataAfterAdopt = '';
  const tcp = net.createServer((socket) => {
    socket.once('data', (first: Buffer) => {
      socket.pause();
      socket.unshift(first);
      const handle = (socket as unknown as { _handle?: { _consumed?: boolean } })._handle;
      t.ok(handle && typeof handle === 'object', `${NODE}: an accepted socket has _handle (core/net/http1.ts marks it _consumed)`);
      // As core/net/http1.ts does: its head deadline watches these events, listened to before
      // the http server takes the socket (a listener added after would make Node undo it).
      socket.on('data', (d: Buffer) => { dataAfterAdopt += d.toString(); });
      if (handle) handle._consumed = true;
      h1.emit('connection', socket);
      socket.resume();
      adopted();
    });
  });
  t.teardown(() => { tcp.close(); h1.close(); });
  const port = await listen(tcp);
  const c = net.connect(port, '127.0.0.1');
  t.teardown(() => c.destroy());
  let got = '';
  c.on('data', (d: Buffer) => { got += d.toString(); });
  c.write('GET /sniffed HTTP/1.1\r\n');
  await within('the server adopted the connection', adoptedP);
  c.write('Host: x\r\nConnection: close\r\n\r\n');
  await within(`${NODE} no longer honours socket._handle._consumed: http.Server read from the native handle and skipped the bytes put back with unshift (fix core/net/http1.ts adopt)`, new Promise((r) => c.once('close', r)));
  t.match(got, /^HTTP\/1\.1 200 [\s\S]*GET \/sniffed$/, `${NODE}: the request, begun by unshifted bytes, was parsed`);
  t.match(dataAfterAdopt, /Connection: close/, `${NODE}: bytes after the adoption still arrive as socket 'data' events (socket._handle._consumed honoured; else http.Server reads the native handle directly)`);
});

t.test('net.Socket#_httpMessage: the response in progress on a connection (core/net/http1.ts, core/server/client-error.ts)', async (t) => {
  const seen: Array<{ during: unknown; headersSentAfterHead: unknown; afterFinish: unknown }> = [];
  const server = http.createServer((req, res) => {
    const s = req.socket as net.Socket & { _httpMessage?: http.ServerResponse | null };
    const during = s._httpMessage === res;
    res.writeHead(200);
    const headersSentAfterHead = s._httpMessage?.headersSent;
    res.end('ok', () => { setImmediate(() => { seen.push({ during, headersSentAfterHead, afterFinish: s._httpMessage ?? null }); }); });
  });
  t.teardown(() => { server.closeAllConnections(); server.close(); });
  const port = await listen(server);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 2; i++) {
    await new Promise<void>((resolve, reject) => { http.get({ port, host: '127.0.0.1', agent }, (res) => { res.resume(); res.on('end', resolve); }).on('error', reject); });
  }
  await within('both responses finished', (async () => { while (seen.length < 2) await new Promise((r) => setImmediate(r)); })());
  for (const s of seen) {
    t.equal(s.during, true, `${NODE}: socket._httpMessage is the ServerResponse in progress (core/net/http1.ts busy/drain/cut, client-error.ts)`);
    t.equal(s.headersSentAfterHead, true, `${NODE}: socket._httpMessage.headersSent says the head went out`);
    t.equal(s.afterFinish, null, `${NODE}: socket._httpMessage is cleared when the response is done (an idle keep-alive connection has none)`);
  }
});

t.test('ServerHttp2Stream#_readableState.ended: END_STREAM seen before the body is read (core/net/h2-sessions.ts requestComplete)', async (t) => {
  const server = http2.createServer();
  const states: Array<{ ended: unknown; readableEnded: boolean }> = [];
  server.on('stream', (stream) => {
    // Never read the body: only the internal state can say the request is complete.
    const check = (): void => {
      const ended = (stream as unknown as { _readableState?: { ended?: unknown } })._readableState?.ended;
      if (ended === true || stream.destroyed) { states.push({ ended, readableEnded: stream.readableEnded }); stream.respond({ ':status': 204 }, { endStream: true }); return; }
      setTimeout(check, 5);
    };
    check();
  });
  t.teardown(() => server.close());
  const port = await listen(server as unknown as net.Server);
  const client = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => client.close());
  const req = client.request({ ':method': 'POST', ':path': '/' });
  req.end('a body the server never reads');
  req.resume();
  await within(`${NODE}: stream._readableState.ended never became true after END_STREAM (core/net/h2-sessions.ts requestComplete must find another way)`, new Promise((r) => req.once('close', r)));
  t.equal(states.length, 1);
  t.equal(states[0]?.ended, true, `${NODE}: _readableState.ended is true once END_STREAM arrived`);
  t.equal(states[0]?.readableEnded, false, 'readableEnded (public) is still false: it waits for the body to be read, which is why the internal is used');
});

t.test('TLSSocket#_parent: the TCP socket under a server-side TLS connection (core/net/dual-protocol.ts routeHttp1OverTls)', async (t) => {
  const { key, cert, dir } = makeCert();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const server = tls.createServer({ key, cert });
  let raw: net.Socket | undefined;
  const parents: unknown[] = [];
  server.on('connection', (s: net.Socket) => { raw = s; });
  server.on('secureConnection', (s: tls.TLSSocket) => { parents.push((s as unknown as { _parent?: unknown })._parent); s.end(); });
  t.teardown(() => server.close());
  const port = await listen(server);
  const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
  t.teardown(() => c.destroy());
  c.resume();
  await within('TLS connection closed', new Promise((r) => c.once('close', r)));
  t.equal(parents.length, 1);
  t.ok(raw, 'the TCP connection was seen');
  t.equal(parents[0], raw, `${NODE}: TLSSocket._parent is the accepted TCP socket (core/net/dual-protocol.ts reads the accept time from it)`);
});
