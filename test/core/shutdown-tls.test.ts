/** Graceful shutdown in order (health first, then drain) and TLS certificate rotation without a restart. */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post, until } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';

t.test('shutdown: /_ping fails first while requests are still served, then new requests get a coded 503', async (t) => {
  // A drain delay long enough that the request below is surely sent and served inside it on a
  // busy machine; the end of the delay is then an event (gw.closing), not a sleep.
  const g = await startGateway(t, { extraConfig: 'shutdown: { drainDelayMs: 5000, graceMs: 2000 }' });
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  const closing = g.gw.close();
  const ping = await fetch(`${g.adminUrl}/_ping`);
  t.equal(ping.status, 503, 'health fails at once: the load balancer stops sending');
  t.notOk(g.gw.closing, 'still in the drain delay');
  const during = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  t.equal(during.events.at(-1), '[DONE]', 'but requests are still served during the drain delay');
  await until(() => g.gw.closing);
  const after = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' });
  if (after.status !== 0) {
    t.equal(after.status, 503);
    t.equal(JSON.parse(after.text).error.code, 'GW_ERR_SERVER_SHUTTING_DOWN', 'a coded error, not Fastify\'s');
  } else t.pass('session already closed by the server (GOAWAY)');
  await closing;
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
