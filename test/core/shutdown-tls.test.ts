/** Graceful shutdown in order (health first, then drain) and TLS certificate rotation without a restart. */
import { X509Certificate } from 'node:crypto';
import { rmSync } from 'node:fs';
import tls from 'node:tls';
import type { TLSSocket } from 'node:tls';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, post, until, within } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';

t.test('shutdown over TLS: /_ping fails first while requests are still served; a request still arriving when the drain starts gets a coded 503 (HTTP/2 and HTTP/1.1)', async (t) => {
  const cert = makeCert();
  t.teardown(() => rmSync(cert.dir, { recursive: true, force: true }));
  // The drain delay keeps serving while health fails; its end is an event (gw.closing), not a
  // sleep. The grace period is long: the requests held open below end it, not a timer.
  const g = await startGateway(t, {
    files: { 'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
    extraConfig: 'shutdown: { drainDelayMs: 3000, graceMs: 60000 }',
  });
  const { tlsPort } = g.gw.addresses!;
  const body = Buffer.from(JSON.stringify({ model: 'ghost-small', prompt: 'x' }));
  const half = body.subarray(0, 10);

  // HTTP/2 over TLS: a request whose body is only half sent.
  const s = await connect(`https://127.0.0.1:${tlsPort}`, { ca: cert.cert, servername: 'localhost' });
  t.teardown(() => s.destroy());
  let goaway = false;
  s.on('goaway', () => { goaway = true; });
  const held = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', 'content-length': String(body.length) });
  held.write(half);
  const heldReply = collect(held);
  // Streams are processed in order: once this one is answered, the held one's HEADERS were seen.
  t.equal((await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' })).status, 200);

  // HTTP/1.1 over TLS: the same; `Expect: 100-continue` makes the server say it has the head.
  const h1 = tls.connect({ host: '127.0.0.1', port: tlsPort!, ca: cert.cert, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
  t.teardown(() => h1.destroy());
  let h1text = '';
  h1.on('data', (d: Buffer) => { h1text += d.toString(); });
  const h1closed = new Promise((r) => h1.once('close', r));
  h1.write(`POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`);
  await until(() => h1text.startsWith('HTTP/1.1 100 Continue'));
  h1.write(half);

  const closing = g.gw.close();
  const ping = await fetch(`${g.adminUrl}/_ping`);
  t.equal(ping.status, 503, 'health fails at once: the load balancer stops sending');
  t.notOk(g.gw.closing, 'still in the drain delay');
  const during = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  t.equal(during.events.at(-1), '[DONE]', 'but requests are still served during the drain delay');
  await until(() => g.gw.closing);
  await until(() => goaway);
  t.pass('the HTTP/2 session got GOAWAY, and stays open for the request still arriving on it');
  const modelBefore = (await g.modelStats()).requests;

  held.end(body.subarray(half.length));
  const r2 = await heldReply;
  t.equal(r2.status, 503, 'HTTP/2: 503');
  t.equal(JSON.parse(r2.text).error.code, 'GW_ERR_SERVER_SHUTTING_DOWN', 'HTTP/2: a coded error');
  t.ok(r2.complete, 'HTTP/2: a whole response');

  h1.write(body.subarray(half.length));
  await within('the HTTP/1.1 connection to close after its answer', h1closed);
  const head = h1text.slice(h1text.indexOf('\r\n\r\n') + 4);
  t.match(head, /^HTTP\/1\.1 503 /, 'HTTP/1.1: 503');
  t.match(head, /\r\nconnection: close\r\n/i, 'HTTP/1.1: Connection: close');
  t.equal(JSON.parse(head.slice(head.indexOf('\r\n\r\n') + 4)).error.code, 'GW_ERR_SERVER_SHUTTING_DOWN', 'HTTP/1.1: a coded error');

  await closing;
  t.equal((await g.modelStats()).requests, modelBefore, 'neither refused request reached the model');
  t.equal(g.gw.runtime.inflight, 0);
});

t.test('TLS certificate rotation: a reload serves the new certificate to new connections', async (t) => {
  const a = makeCert();
  const b = makeCert();
  const g = await startGateway(t, {
    files: { 'tls/key.pem': a.key, 'tls/cert.pem': a.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
  });
  const url = g.gw.addresses!.tls!;
  const fingerprint = async (ca: string): Promise<string> => {
    const s = await connect(url, { ca, servername: 'localhost' });
    const fp = new X509Certificate((s.socket as TLSSocket).getPeerX509Certificate()!.raw).fingerprint256;
    const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' });
    t.equal(r.status, 200);
    s.close();
    return fp;
  };
  t.equal(await fingerprint(a.cert), new X509Certificate(a.cert).fingerprint256);
  g.write('tls/key.pem', b.key);
  g.write('tls/cert.pem', b.cert);
  const res = await (await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' })).json() as { ok: boolean; restartRequired?: string[] };
  t.equal(res.ok, true);
  t.notOk(res.restartRequired, 'no restart needed for a new certificate');
  t.equal(await fingerprint(b.cert), new X509Certificate(b.cert).fingerprint256, 'new connections get the new certificate');
});

t.test('a disabled policy is still checked, so enabling it later cannot fail', async (t) => {
  const g = await startGateway(t, { policies: { 'ok.yaml': 'name: ok\nsteps: []\n' } });
  g.write('policies/off.yaml', 'name: off\nenabled: false\nsteps:\n  - use: set-headers\n    params: { nope: 1 }\n');
  const res = await (await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' })).json() as { ok: boolean; errors: Array<{ code: string; line: number }> };
  t.equal(res.ok, false);
  t.equal(res.errors[0]!.code, 'GW_ERR_CONFIG_PLUGIN_PARAMS');
  t.equal(res.errors[0]!.line, 5);
});
