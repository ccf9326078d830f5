/**
 * Requests refused before any route sees them still get `{error: {code, message}}` from the
 * catalog, on every listener: HTTP/1.1 the parser refuses (cleartext, TLS, admin) and URLs
 * Fastify cannot decode (HTTP/1.1 and HTTP/2, data and admin planes). Raw sockets, since no
 * well-behaved client sends these.
 */
import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';

/** Write `bytes`, read until the server closes; parse the status line, headers and body. */
function rawExchange(open: () => net.Socket, bytes: string): Promise<{ status: number; headers: string; body: string }> {
  return new Promise((resolve, reject) => {
    const s = open();
    let buf = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => { buf += d; });
    s.once('error', reject);
    s.setTimeout(30_000, () => { s.destroy(); reject(new Error(`no reply: ${JSON.stringify(buf)}`)); });
    s.once('close', () => {
      const end = buf.indexOf('\r\n\r\n');
      const head = end === -1 ? buf : buf.slice(0, end);
      resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 0), headers: head, body: end === -1 ? '' : buf.slice(end + 4) });
    });
    s.write(bytes, 'latin1');
  });
}

const CASES: Array<{ name: string; bytes: string; status: number; code: string }> = [
  { name: 'two Content-Lengths', bytes: 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', status: 400, code: 'GW_ERR_REQ_BAD_REQUEST' },
  { name: 'a control byte in a header', bytes: 'GET /_ping HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n', status: 400, code: 'GW_ERR_REQ_BAD_REQUEST' },
  { name: 'a bad request line', bytes: 'GE T / HTTP/1.1\r\nHost: x\r\n\r\n', status: 400, code: 'GW_ERR_REQ_BAD_REQUEST' },
  { name: 'headers past the limit', bytes: `GET /_ping HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(40_000)}\r\n\r\n`, status: 431, code: 'GW_ERR_REQ_HEADERS_TOO_LARGE' },
  { name: 'a URL with bad percent-encoding', bytes: 'POST /v1/engines/%ff/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}', status: 400, code: 'GW_ERR_REQ_BAD_REQUEST' },
];

t.test('HTTP/1.1 refused early: catalogued JSON on the cleartext, TLS and admin listeners', async (t) => {
  const cert = makeCert();
  const g = await startGateway(t, {
    files: { 'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
  });
  const a = g.gw.addresses!;
  const listeners: Array<[string, () => net.Socket]> = [
    ['cleartext', () => net.connect(a.port, '127.0.0.1')],
    ['TLS', () => tls.connect({ port: a.tlsPort!, host: '127.0.0.1', ca: cert.cert, servername: 'localhost', ALPNProtocols: ['http/1.1'] })],
    ['admin', () => net.connect(a.adminPort!, '127.0.0.1')],
  ];
  for (const [where, open] of listeners) {
    for (const c of CASES) {
      const r = await rawExchange(open, c.bytes);
      t.equal(r.status, c.status, `${where}, ${c.name}: status`);
      t.match(r.headers, /\r\ncontent-type: application\/json/i, `${where}, ${c.name}: JSON`);
      let body: { error?: { code?: string; message?: string } } = {};
      try { body = JSON.parse(r.body) as typeof body; } catch { /* asserted below */ }
      t.equal(body.error?.code, c.code, `${where}, ${c.name}: code (body ${JSON.stringify(r.body.slice(0, 120))})`);
      t.type(body.error?.message, 'string');
    }
  }
});

t.test('HTTP/2: a URL Fastify cannot decode gets a catalogued 400', async (t) => {
  const g = await startGateway(t);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const st = s.request({ ':method': 'POST', ':path': '/v1/engines/%ff/completions', 'content-type': 'application/json' });
  st.end('{}');
  const r = await collect(st);
  t.equal(r.status, 400);
  t.equal((JSON.parse(r.text) as { error: { code: string } }).error.code, 'GW_ERR_REQ_BAD_REQUEST');
  t.notMatch(r.text, /FST_ERR/);
});

t.test('a request head that does not arrive in time (Node\'s headersTimeout on a listening server): 408 GW_ERR_REQ_TIMEOUT', async (t) => {
  const { clientErrorReply } = await import('../../core/server/client-error.ts');
  const http = await import('node:http');
  const server = http.createServer({ headersTimeout: 300, requestTimeout: 600, connectionsCheckingInterval: 50 } as never, (_req, res) => res.end('ok'));
  const codes: string[] = [];
  server.on('clientError', clientErrorReply((c) => codes.push(c)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  const port = (server.address() as net.AddressInfo).port;
  // Half a request head, then nothing: Node's timer fires (bounded loosely: it is asserted that it happened).
  const r = await rawExchange(() => net.connect(port, '127.0.0.1'), 'GET / HTTP/1.1\r\nHost: x\r\n');
  t.equal(r.status, 408);
  t.equal((JSON.parse(r.body) as { error: { code: string } }).error.code, 'GW_ERR_REQ_TIMEOUT');
  t.same(codes, ['GW_ERR_REQ_TIMEOUT'], 'counted');
});
