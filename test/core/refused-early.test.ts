/**
 * Requests refused before any route sees them still get `{error: {code, message}}` from the
 * catalog, on every listener: HTTP/1.1 the parser refuses (cleartext, TLS, admin), requests Node
 * parses and then answered bare itself (no `Host` on HTTP/1.1, an `Expect` other than
 * 100-continue; plus two `Host` lines, which Node let through), CONNECT (Node closed the
 * HTTP/1.1 connection with no answer; HTTP/2: a 405 with no body), and URLs Fastify cannot decode
 * (HTTP/1.1 and HTTP/2, data and admin planes). Raw sockets, since no well-behaved client sends
 * these.
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

const CASES: Array<{ name: string; bytes: string; status: number; code: string; message?: string }> = [
  { name: 'two Content-Lengths', bytes: 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', status: 400, code: 'GW_ERR_REQ_BAD_REQUEST' },
  { name: 'a control byte in a header', bytes: 'GET /_ping HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n', status: 400, code: 'GW_ERR_REQ_BAD_REQUEST' },
  { name: 'a bad request line', bytes: 'GE T / HTTP/1.1\r\nHost: x\r\n\r\n', status: 400, code: 'GW_ERR_REQ_BAD_REQUEST' },
  { name: 'headers past the limit', bytes: `GET /_ping HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(40_000)}\r\n\r\n`, status: 431, code: 'GW_ERR_REQ_HEADERS_TOO_LARGE' },
  { name: 'a URL with bad percent-encoding', bytes: 'POST /v1/engines/%ff/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}', status: 400, code: 'GW_ERR_REQ_BAD_REQUEST' },
  // Node's own answer was a bare 400 with no body (requireHostHeader).
  { name: 'HTTP/1.1 without Host', bytes: 'GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n', status: 400, code: 'GW_ERR_REQ_BAD_REQUEST', message: 'Bad request: an HTTP/1.1 request needs a Host header' },
  { name: 'HTTP/1.1 without Host, a body on its way', bytes: `POST /v1/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 70000\r\nConnection: close\r\n\r\n${'x'.repeat(70_000)}`, status: 400, code: 'GW_ERR_REQ_BAD_REQUEST', message: 'Bad request: an HTTP/1.1 request needs a Host header' },
  // Node kept the first and served it.
  { name: 'two Host lines', bytes: 'GET /nope HTTP/1.1\r\nHost: a\r\nhost: b\r\nConnection: close\r\n\r\n', status: 400, code: 'GW_ERR_REQ_BAD_REQUEST', message: 'Bad request: the request has more than one Host header' },
  { name: 'two Host lines on HTTP/1.0', bytes: 'GET /nope HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n', status: 400, code: 'GW_ERR_REQ_BAD_REQUEST', message: 'Bad request: the request has more than one Host header' },
  // Legal: routed as any other request.
  { name: 'HTTP/1.0 without Host', bytes: 'GET /nope HTTP/1.0\r\n\r\n', status: 404, code: 'GW_ERR_REQ_NOT_FOUND' },
  // Node's own answer was a bare 417 on the admin plane.
  { name: 'Expect: bogus', bytes: 'GET /nope HTTP/1.1\r\nHost: x\r\nExpect: bogus\r\nConnection: close\r\n\r\n', status: 417, code: 'GW_ERR_REQ_EXPECTATION_FAILED' },
  // Node's own answer was none: the connection closed.
  { name: 'CONNECT', bytes: 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', status: 405, code: 'GW_ERR_REQ_METHOD_NOT_ALLOWED', message: 'Method CONNECT is not allowed on example.com:443' },
  { name: 'Expect: bogus without Host (Host first, as Node orders them)', bytes: 'GET /nope HTTP/1.1\r\nExpect: bogus\r\nConnection: close\r\n\r\n', status: 400, code: 'GW_ERR_REQ_BAD_REQUEST' },
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
      if (c.message !== undefined) t.equal(body.error?.message, c.message, `${where}, ${c.name}: message`);
    }
  }

  t.test('the connection carries on after a refused Host or Expect', async (t) => {
    // Pipelined on one connection: each refusal, then a request that is routed (a 404), then close.
    const refused = 'GET /nope HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nExpect: bogus\r\n\r\n';
    for (const [where, open] of listeners) {
      const r = await rawExchange(open, `${refused}GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      const all = `${r.headers}\r\n\r\n${r.body}`;
      t.same([...all.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1])), [400, 400, 417, 404], `${where}: four answers on one connection`);
      t.same([...all.matchAll(/"code":"(\w+)"/g)].map((m) => m[1]), ['GW_ERR_REQ_BAD_REQUEST', 'GW_ERR_REQ_BAD_REQUEST', 'GW_ERR_REQ_EXPECTATION_FAILED', 'GW_ERR_REQ_NOT_FOUND'], `${where}: coded`);
    }
  });
});

t.test('the cluster primary\'s admin plane refuses the same way', async (t) => {
  const { createClusterAdmin } = await import('../../core/cluster/admin.ts');
  const { default: pino } = await import('pino');
  const app = createClusterAdmin({
    log: pino({ level: 'silent' }), draining: false, adminCredential: undefined, lastReload: undefined, restarts: { value: 0 },
    ready: () => [], reload: async () => ({ ok: true }),
  });
  t.teardown(() => app.close());
  await app.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.address() as net.AddressInfo).port;
  // Routed requests go to a worker (none here): only the refusals.
  for (const c of CASES.filter((c) => c.status !== 404)) {
    const r = await rawExchange(() => net.connect(port, '127.0.0.1'), c.bytes);
    t.equal(r.status, c.status, `${c.name}: status`);
    t.match(r.body, new RegExp(`^\\{"error":\\{"code":"${c.code}"`), `${c.name}: coded (${r.body.slice(0, 120)})`);
  }
});

t.test('HTTP/2: a CONNECT gets a catalogued 405 (Node\'s was a 405 with no body), and the session carries on', async (t) => {
  const g = await startGateway(t);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const st = s.request({ ':method': 'CONNECT', ':authority': 'example.com:443' }, { endStream: false });
  const r = await collect(st);
  t.equal(r.status, 405);
  t.same(JSON.parse(r.text), { error: { code: 'GW_ERR_REQ_METHOD_NOT_ALLOWED', message: 'Method CONNECT is not allowed on example.com:443' } });
  const next = s.request({ ':method': 'GET', ':path': '/nope' });
  t.equal((await collect(next)).status, 404, 'the session serves the next request');
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
