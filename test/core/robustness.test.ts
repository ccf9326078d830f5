/**
 * Hostile input and lifecycle races: a deeply nested body, reloads while old requests still
 * stream, shutdown after a reload, a reload during shutdown, a client that never finishes its
 * HTTP/1.1 request head.
 */
import net from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, firstData, open, post, post1 } from '../helpers/h2.ts';

const deep = (n: number): string => `{"model":"ghost","prompt":${'['.repeat(n)}${']'.repeat(n)}}`;

t.test('a deeply nested body is a coded 400, on HTTP/2 and HTTP/1.1, and the gateway lives on', async (t) => {
  const g = await startGateway(t);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const h2 = await post(s, '/v1/completions', deep(6000));
  t.equal(h2.status, 400);
  t.match(JSON.parse(h2.text), { error: { code: 'GW_ERR_REQ_JSON_TOO_DEEP' } });
  const h1 = await post1(`${g.url}/v1/completions`, deep(6000));
  t.equal(h1.status, 400);
  const ok = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  t.equal(ok.events.at(-1), '[DONE]', 'still serving');
  t.equal(g.gw.runtime.inflight, 0);
});

t.test('two reloads while an old request streams: the pool it uses stays open until it ends', async (t) => {
  const g = await startGateway(t, {
    policies: { 'p.yaml': 'name: p\nsteps: []\n' },
    modelArgs: ['--ttft-ms', '5', '--token-ms', '40', '--tokens', '40'],
  });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  const slow = collect(st);
  await firstData(st);
  g.write('policies/p.yaml', 'name: p\ndescription: edited\nsteps: []\n');
  t.equal((await (await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' })).json() as { ok: boolean }).ok, true, 'reload 1 (pool kept)');
  writeFileSync(g.configFile, readFileSync(g.configFile, 'utf8').replace('pool: { size: 2 }', 'pool: { size: 3 }'));
  t.equal((await (await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' })).json() as { ok: boolean }).ok, true, 'reload 2 (new pool)');
  const r = await slow;
  t.equal(r.status, 200);
  t.ok(r.complete, 'ended cleanly');
  t.equal(r.events.at(-1), '[DONE]', 'the old request ran to completion on its pool');
  t.equal(r.events.length, 41);
});

t.test('shutdown after a reload waits for requests of the old runtime too', async (t) => {
  const g = await startGateway(t, {
    policies: { 'p.yaml': 'name: p\nsteps: []\n' },
    modelArgs: ['--ttft-ms', '5', '--token-ms', '20', '--tokens', '25'],
  });
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  const slow = collect(st);
  await firstData(st);
  g.write('policies/p.yaml', 'name: p\ndescription: edited\nsteps: []\n');
  await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' });
  const closing = g.gw.close(5000);
  const r = await slow;
  t.equal(r.events.at(-1), '[DONE]', 'the old runtime\'s stream finished within the grace period');
  await closing;
});

t.test('a reload during shutdown is refused', async (t) => {
  const g = await startGateway(t, { extraConfig: 'shutdown: { drainDelayMs: 300 }' });
  const closing = g.gw.close(1000);
  const r = await g.gw.reload('test');
  t.equal(r.ok, false);
  t.equal(r.error?.code, 'GW_ERR_SERVER_SHUTTING_DOWN');
  await closing;
});

t.test('an HTTP/1.1 client that never finishes its request head is disconnected', async (t) => {
  const g = await startGateway(t, { extraConfig: 'limits: { headersTimeoutMs: 300 }' });
  const port = g.gw.addresses!.port;
  const sock = net.connect(port, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  sock.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\n');
  let answer = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => { answer += d; });
  const closedIn = await new Promise<number>((resolve) => { const t0 = Date.now(); sock.once('close', () => resolve(Date.now() - t0)); sock.on('error', () => {}); });
  t.ok(closedIn < 10_000, `closed after ${closedIn} ms (headersTimeoutMs 300; Node's own default is 60 s)`);
  t.match(answer, /^HTTP\/1\.1 408 [^]*"GW_ERR_REQ_TIMEOUT"/, 'told why: 408 with a coded error');
  const ok = await post1(`${g.url}/v1/completions`, { model: 'ghost-small', prompt: 'x' });
  t.equal(ok.status, 200, 'a normal HTTP/1.1 request is unaffected');
});
