/**
 * Connection caps (issue #10.4): a total across both data-plane ports and one per client IP,
 * refused on accept (before TLS or the protocol sniffer), counted, and the admin plane answers
 * throughout. The total stays below the process's open-file limit, so a full data plane cannot
 * starve the admin plane of descriptors (a real process under `ulimit -n 256`).
 */
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import type { Test } from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import type { TestGateway } from '../helpers/gateway.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { post1, waitFor, within } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';

async function metrics(adminUrl: string): Promise<string> {
  return (await fetch(`${adminUrl}/metrics`)).text();
}
function value(text: string, series: string): number {
  const i = text.indexOf(`\n${series} `);
  return i === -1 ? 0 : Number(text.slice(i + series.length + 2, text.indexOf('\n', i + 1)));
}

/** Open a TCP connection; resolves once connected, with a promise of its close and whether it got bytes. */
async function tcp(t: Test, port: number, localAddress = '127.0.0.1'): Promise<{ sock: net.Socket; closed: Promise<void>; got: () => number }> {
  const sock = net.connect({ port, host: '127.0.0.1', localAddress });
  t.teardown(() => sock.destroy());
  sock.on('error', () => { /* refused: closed by the gateway */ });
  let got = 0;
  sock.on('data', (d: Buffer) => { got += d.length; });
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  await new Promise((r) => sock.once('connect', r));
  return { sock, closed, got: () => got };
}

async function openCount(g: TestGateway, n: number): Promise<void> {
  await waitFor(`${n} open connections`, async () => value(await metrics(g.adminUrl), 'ghostgate_client_connections') === n, 10_000);
}

t.test('limits.maxConnections: the excess is closed on accept, on either port; the admin plane answers; freed slots are reused', async (t) => {
  const cert = makeCert();
  const g = await startGateway(t, {
    files: { 'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
    extraConfig: 'limits: { maxConnections: 5, maxConnectionsPerIp: 0 }',
  });
  const a = g.gw.addresses!;
  const held = [];
  for (let i = 0; i < 5; i++) held.push(await tcp(t, a.port));
  await openCount(g, 5);
  const over = await tcp(t, a.port);
  await within('the 6th connection to be closed', over.closed, 10_000);
  t.equal(over.got(), 0, 'closed without a byte');
  // The TLS port shares the cap, and refuses before the handshake.
  const secure = tls.connect({ port: a.tlsPort!, host: '127.0.0.1', ca: cert.cert, servername: 'localhost' });
  t.teardown(() => secure.destroy());
  const handshake = await within('the TLS connection to end', new Promise<string>((r) => { secure.once('secureConnect', () => r('handshake completed')); secure.once('error', (e) => r(`error: ${e.message}`)); secure.once('close', () => r('closed')); }), 10_000);
  t.not(handshake, 'handshake completed', `no TLS handshake (${handshake})`);
  t.equal((await fetch(`${g.adminUrl}/_ping`)).status, 200, 'the admin plane answers at the cap');
  const m = await metrics(g.adminUrl);
  t.equal(value(m, 'ghostgate_client_connections_refused_total{reason="max_connections"}'), 2, 'both refusals counted');
  held[0]!.sock.destroy();
  await openCount(g, 4);
  const r = await post1(`${g.url}/v1/completions`, { model: 'ghost-small', prompt: 'x' });
  t.equal(r.status, 200, 'a freed slot serves a new client');
});

t.test('limits.maxConnectionsPerIp: one address is capped, another is served', async (t) => {
  const g = await startGateway(t, { extraConfig: 'limits: { maxConnectionsPerIp: 3 }' });
  const port = g.gw.addresses!.port;
  for (let i = 0; i < 3; i++) await tcp(t, port);
  await openCount(g, 3);
  const over = await tcp(t, port);
  await within('the 4th connection from 127.0.0.1 to be closed', over.closed, 10_000);
  t.equal(over.got(), 0, 'closed without a byte');
  // Another loopback address is another client.
  const status = await new Promise<number>((resolve, reject) => {
    const body = JSON.stringify({ model: 'ghost-small', prompt: 'x' });
    const req = http.request(`${g.url}/v1/completions`, { method: 'POST', localAddress: '127.0.0.2', headers: { 'content-type': 'application/json', 'content-length': body.length } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)); });
    req.on('error', reject);
    req.end(body);
  });
  t.equal(status, 200, 'a client from 127.0.0.2 is served');
  t.equal(value(await metrics(g.adminUrl), 'ghostgate_client_connections_refused_total{reason="max_per_ip"}'), 1, 'counted');
});

t.test('under ulimit -n 256, a cap configured above the fd budget is lowered: connections beyond it are refused, the admin plane and the process live on', async (t) => {
  const g = await startGatewayProcess(t, {
    modelArgs: ['--ttft-ms', '0', '--token-ms', '0', '--tokens', '2'],
    openFileLimit: 256,
    extraConfig: 'limits: { maxConnections: 10000, maxConnectionsPerIp: 0 }',
  });
  t.match(g.stdout(), /"using":192[^\n]*limits\.maxConnections is above what the open-file limit allows/, 'a warning says which cap is used (256 less a reserve of 64)');
  const port = Number(new URL(g.url).port);
  const conns = [];
  for (let i = 0; i < 250; i++) conns.push(await tcp(t, port));
  await waitFor('58 refusals', async () => value(await metrics(g.adminUrl), 'ghostgate_client_connections_refused_total{reason="max_connections"}') >= 58, 20_000);
  t.equal((await fetch(`${g.adminUrl}/_ping`)).status, 200, 'the admin plane answers with the data plane full');
  for (const c of conns) c.sock.destroy();
  await waitFor('the connections to be released', async () => value(await metrics(g.adminUrl), 'ghostgate_client_connections') === 0, 20_000);
  const r = await post1(`${g.url}/v1/completions`, { model: 'ghost-small', prompt: 'x' });
  t.equal(r.status, 200, 'and the data plane serves again');
  t.equal(g.child.exitCode, null, 'the process is still running');
});
