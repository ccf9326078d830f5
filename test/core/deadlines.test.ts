/**
 * Every connection phase has a deadline (issue #10.4), on raw sockets and real HTTP/2 sessions:
 * - HTTP/1.1 (cleartext and TLS): the head within `limits.headersTimeoutMs` of its first byte,
 *   however it is trickled; the body within `limits.bodyTimeoutMs`; `limits.headerBytes` on both
 *   ports. A keep-alive connection idle between requests is not cut by these.
 * - HTTP/2: a stream whose body does not complete in time gets 408 and is reset; a session with
 *   no completed request for `http2.sessionIdleTimeoutMs` is closed (GOAWAY) even while it PINGs,
 *   but one that keeps sending requests, or has a long response in flight, is never cut.
 */
import http from 'node:http';
import type { ClientHttp2Session } from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import type { Test } from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import type { TestGateway } from '../helpers/gateway.ts';
import { collect, connect, open, post, post1, sleep, within } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';

const HEAD_MS = 400;
const BODY_MS = 400;
const cert = makeCert();

async function gateway(t: Tap, extra = ''): Promise<TestGateway> {
  return startGateway(t, {
    files: { 'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
    extraConfig: `limits: { headersTimeoutMs: ${HEAD_MS}, bodyTimeoutMs: ${BODY_MS}, headerBytes: 2048 }\n${extra}`,
  });
}
type Tap = Test;

/** A raw client socket on the cleartext or TLS port that records what it receives and when it closes. */
async function raw(t: Tap, g: TestGateway, secure: boolean): Promise<{ sock: net.Socket; text: () => string; closed: Promise<number> }> {
  const a = g.gw.addresses!;
  // From before the connect: the gateway's deadlines run from the connection (a TLS handshake,
  // slow on a busy machine, counts), so a clock started after it could read less than the deadline.
  const t0 = Date.now();
  const sock: net.Socket = secure
    ? tls.connect({ port: a.tlsPort!, host: '127.0.0.1', ca: cert.cert, servername: 'localhost', ALPNProtocols: ['http/1.1'] })
    : net.connect(a.port, '127.0.0.1');
  t.teardown(() => sock.destroy());
  await new Promise((r) => sock.once(secure ? 'secureConnect' : 'connect', r));
  let text = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => { text += d; });
  sock.on('error', () => { /* reset by the gateway: fine */ });
  const closed = new Promise<number>((r) => sock.once('close', () => r(Date.now() - t0)));
  return { sock, text: () => text, closed };
}

/** Write `s` one byte every `ms` until the socket closes (then stop). */
function trickle(sock: net.Socket, s: string, ms = 50): void {
  let i = 0;
  const timer = setInterval(() => {
    if (sock.destroyed || sock.writableEnded) { clearInterval(timer); return; }
    sock.write(s[i++ % s.length]!);
  }, ms);
  sock.once('close', () => clearInterval(timer));
}

async function metric(g: TestGateway, name: string, label: string): Promise<number> {
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  const m = new RegExp(`^${name}\\{[^}]*${label}[^}]*\\} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

const HEAD = 'POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n';

for (const secure of [false, true]) {
  const port = secure ? 'TLS' : 'cleartext';

  t.test(`HTTP/1.1 (${port}): a head trickled one byte at a time is cut at the deadline with 408`, async (t) => {
    const g = await gateway(t);
    const c = await raw(t, g, secure);
    // Far more bytes than the deadline allows at this pace, and each one arrives before an idle timer would fire.
    trickle(c.sock, `${HEAD}x-padding: ${'a'.repeat(400)}`);
    const ms = await within('the connection to be closed', c.closed, 10_000);
    t.match(c.text(), /^HTTP\/1\.1 408 [^]*"code":"GW_ERR_REQ_TIMEOUT","message":"The request was not received in time","phase":"head","timeoutMs":400\}/);
    t.match(c.text(), /\r\ncontent-type: application\/json; charset=utf-8\r\n/i, 'the same JSON content type as every other error reply');
    t.ok(ms >= HEAD_MS - 50, `not before the deadline (${ms} ms)`);
    t.equal(await metric(g, 'ghostgate_client_timeouts_total', 'phase="h1_headers"'), 1, 'counted');
  });

  t.test(`HTTP/1.1 (${port}): a body never sent, or trickled, is cut at the body deadline with 408`, async (t) => {
    const g = await gateway(t);
    const never = await raw(t, g, secure);
    never.sock.write(`${HEAD}content-length: 50\r\n\r\n`);
    const trickled = await raw(t, g, secure);
    trickled.sock.write(`${HEAD}content-length: 1000\r\n\r\n`);
    trickle(trickled.sock, '{"prompt":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}');
    await within('both connections to be closed', Promise.all([never.closed, trickled.closed]), 10_000);
    for (const c of [never, trickled]) t.match(c.text(), /^HTTP\/1\.1 408 [^]*"code":"GW_ERR_REQ_TIMEOUT",[^}]*"phase":"body","timeoutMs":400\}/);
    t.equal(await metric(g, 'ghostgate_client_timeouts_total', 'phase="h1_body"'), 2, 'counted');
    t.same(g.logs.filter((l) => JSON.parse(l).level >= 50), [], 'no error logged: a cut request is not an internal error');
  });

  t.test(`HTTP/1.1 (${port}): the next request on a keep-alive connection has its own head deadline; idle time between requests is not cut`, async (t) => {
    const g = await gateway(t);
    const c = await raw(t, g, secure);
    const body = JSON.stringify({ model: 'ghost-small', prompt: 'x' });
    const request = `${HEAD}content-length: ${body.length}\r\n\r\n${body}`;
    c.sock.write(request);
    await within('the first response', (async () => { while (!/\r\n0\r\n\r\n$/.test(c.text())) await sleep(10); })(), 10_000);
    // Idle for longer than both deadlines: keep-alive (65 s) governs this, not the request deadlines.
    await sleep(HEAD_MS + BODY_MS + 200);
    t.equal(c.sock.destroyed, false, 'an idle keep-alive connection is kept');
    c.sock.write(request);
    await within('the second response', (async () => { while ((c.text().match(/HTTP\/1\.1 200/g) ?? []).length < 2 || !/\r\n0\r\n\r\n$/.test(c.text())) await sleep(10); })(), 10_000);
    trickle(c.sock, HEAD);
    await within('the trickled third request to be cut', c.closed, 10_000);
    t.match(c.text(), /HTTP\/1\.1 408 [^]*GW_ERR_REQ_TIMEOUT/);
  });

  t.test(`HTTP/1.1 (${port}): limits.headerBytes applies`, async (t) => {
    const g = await gateway(t);
    const c = await raw(t, g, secure);
    // 4 KiB of headers: under Node's default (16 KiB), over the configured 2 KiB.
    c.sock.write(`${HEAD}x-big: ${'b'.repeat(4096)}\r\ncontent-length: 2\r\n\r\n{}`);
    await within('the connection to be closed', c.closed, 10_000);
    t.match(c.text(), /^HTTP\/1\.1 431 /);
  });
}

// One deadline from accept: on the cleartext port the protocol sniffer's wait for the first bytes
// and the request head share it, on the TLS port the handshake and the head; a client that waits
// before its first byte and then trickles gets `headersTimeoutMs` in all, not up to twice that
// (issue #10.4, found again by the attack run).
const LONG_HEAD_MS = 2500;

for (const secure of [false, true]) t.test(`HTTP/1.1 (${secure ? 'TLS' : 'cleartext'}): the head deadline runs from accept, also across the ${secure ? 'TLS handshake' : 'protocol sniffer'}`, async (t) => {
  const g = await startGateway(t, {
    files: { 'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
    extraConfig: `limits: { headersTimeoutMs: ${LONG_HEAD_MS}, bodyTimeoutMs: ${LONG_HEAD_MS} }`,
  });
  // Silent for 70% of the limit after the TCP connect (within the sniffer's first-bytes budget;
  // on TLS, before the handshake starts), then a head trickled slower than it could ever complete.
  const start = Date.now();
  const tcp = net.connect(g.gw.addresses![secure ? 'tlsPort' : 'port']!, '127.0.0.1');
  t.teardown(() => tcp.destroy());
  tcp.on('error', () => { /* reset by the gateway: fine */ });
  await new Promise((r) => tcp.once('connect', r));
  await new Promise((r) => setTimeout(r, LONG_HEAD_MS * 0.7));
  const sock: net.Socket = secure ? tls.connect({ socket: tcp, ca: cert.cert, servername: 'localhost', ALPNProtocols: ['http/1.1'] }) : tcp;
  sock.on('error', () => { /* reset by the gateway: fine */ });
  if (secure) await new Promise((r) => sock.once('secureConnect', r));
  let text = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => { text += d; });
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  trickle(sock, `${HEAD}x-padding: ${'a'.repeat(400)}`);
  await within('the connection to be closed', closed, 20_000);
  const ms = Date.now() - start;
  t.match(text, /^HTTP\/1\.1 408 [^]*"phase":"head","timeoutMs":2500\}/, '408 GW_ERR_REQ_TIMEOUT for the head');
  t.ok(ms >= LONG_HEAD_MS - 50, `not before the deadline (${ms} ms after connect)`);
  // Before the fix the deadline restarted at the hand-over: 1.7 x the limit.
  t.ok(ms < LONG_HEAD_MS * 1.45, `at the deadline from accept, not from the first byte (${ms} ms after connect, limit ${LONG_HEAD_MS})`);

  // The next request on the same keep-alive connection gets the whole deadline again, from its
  // own first byte (the first one was shortened by the time spent before the hand-over).
  const c = await raw(t, g, secure);
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'x' });
  await new Promise((r) => setTimeout(r, LONG_HEAD_MS * 0.7));
  c.sock.write(`${HEAD}content-length: ${body.length}\r\n\r\n${body}`);
  await within('the first response', (async () => { while (!/\r\n0\r\n\r\n$/.test(c.text())) await sleep(10); })(), 10_000);
  const t0 = Date.now();
  trickle(c.sock, HEAD);
  await within('the trickled second head to be cut', c.closed, 20_000);
  const second = Date.now() - t0;
  t.match(c.text(), /HTTP\/1\.1 408 [^]*GW_ERR_REQ_TIMEOUT/);
  t.ok(second >= LONG_HEAD_MS * 0.9, `the second head had the full deadline (${second} ms)`);
});

t.test('HTTP/2: streams with headers and no body are answered 408 and reset; the session stays usable', async (t) => {
  const g = await gateway(t);
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  const stuck = Array.from({ length: 20 }, () => collect(s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' }, { endStream: false })));
  const rs = await within('20 stuck streams to be closed', Promise.all(stuck), 10_000);
  for (const r of rs) t.equal(r.status, 408);
  t.same(new Set(rs.map((r) => r.headers['content-type'])), new Set(['application/json; charset=utf-8']), 'the same JSON content type as every other error reply');
  t.same(new Set(rs.map((r) => JSON.stringify(JSON.parse(r.text).error))), new Set([JSON.stringify({ code: 'GW_ERR_REQ_TIMEOUT', message: 'The request was not received in time', phase: 'body', timeoutMs: BODY_MS })]));
  t.equal(await metric(g, 'ghostgate_client_timeouts_total', 'phase="h2_stream_body"'), 20, 'counted');
  const ok = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' });
  t.equal(ok.status, 200, 'the session still serves requests');
  const trickled = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' }, { endStream: false });
  const done = collect(trickled);
  const timer = setInterval(() => { if (!trickled.closed && !trickled.destroyed) trickled.write(' '); }, 50);
  t.teardown(() => clearInterval(timer));
  t.equal((await within('a trickled body to be cut', done, 10_000)).status, 408, 'a trickled body too');
  t.same(g.logs.filter((l) => JSON.parse(l).level >= 50), [], 'no error logged');
});

t.test('HTTP/2: a stuck stream among many completed ones is still cut (the pending list is compacted, not lost)', async (t) => {
  const g = await gateway(t);
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  const stuck = (): Promise<{ status: number }> => collect(s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' }, { endStream: false }));
  const first = stuck();
  // In batches of 50: under http2.maxInflightPerSession (128), over the list's compaction size (64).
  let served = 0;
  for (let i = 0; i < 3; i++) {
    const oks = await Promise.all(Array.from({ length: 50 }, () => post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' })));
    served += oks.filter((r) => r.status === 200).length;
  }
  t.equal(served, 150, '150 requests served meanwhile');
  const last = stuck();
  const [a, b] = await within('both stuck streams to be cut', Promise.all([first, last]), 10_000);
  t.equal(a.status, 408, 'the one opened before 150 others');
  t.equal(b.status, 408, 'the one opened after them');
});

t.test('HTTP/2: a client that goes away with streams still waiting for their body does not take the gateway down', async (t) => {
  const g = await startGateway(t);
  for (const how of ['session destroyed', 'socket closed'] as const) {
    const s = await connect(g.url);
    s.on('error', () => { /* we close it */ });
    const streams = Array.from({ length: 20 }, () => s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' }, { endStream: false }));
    for (const st of streams) st.on('error', () => { /* we close it */ });
    await new Promise<void>((r) => s.ping(() => r()));
    // Measured: the crash this guards against needed the streams to have waited >= 20 ms before the
    // client went away. A sleep is a lower bound, so this sets the case up on any machine; nothing
    // is asserted on time.
    await sleep(100);
    if (how === 'session destroyed') s.destroy(); else s.socket.destroy();
    const fresh = await connect(g.url);
    t.teardown(() => fresh.destroy());
    const ok = await post(fresh, '/v1/completions', { model: 'ghost-small', prompt: 'x' });
    t.equal(ok.status, 200, `${how}: the gateway still serves`);
  }
  t.same(g.logs.filter((l) => JSON.parse(l).level >= 50), [], 'no error logged');
});

/** Resolves when the session receives GOAWAY or closes; `null` if `until` settles first. */
function goaway(s: ClientHttp2Session): Promise<'goaway'> {
  return new Promise((r) => { s.once('goaway', () => r('goaway')); s.once('close', () => r('goaway')); });
}

t.test('HTTP/2: a session kept alive only by PINGs is closed; one that keeps completing requests, or has a long response running, is not cut', async (t) => {
  const IDLE = 600;
  const g = await startGateway(t, {
    modelArgs: ['--ttft-ms', '0', '--token-ms', '1', '--tokens', '2'],
    extraConfig: `http2: { sessionIdleTimeoutMs: ${IDLE} }`,
  });
  // Pinger: no requests, a PING every 100 ms.
  const pinger = await connect(g.url);
  t.teardown(() => pinger.destroy());
  const pingerGone = goaway(pinger);
  const pings = setInterval(() => { if (!pinger.closed && !pinger.destroyed) pinger.ping(() => {}); }, 100);
  t.teardown(() => clearInterval(pings));
  // Worker: a request every 100 ms for at least 3 idle periods.
  const worker = await connect(g.url);
  t.teardown(() => worker.destroy());
  let workerGoaway = false;
  worker.once('goaway', () => { workerGoaway = true; });
  const t0 = Date.now();
  let n = 0;
  while (Date.now() - t0 < 3 * IDLE || n < 10) {
    const r = await post(worker, '/v1/completions', { model: 'ghost-small', prompt: 'x' });
    t.equal(r.status, 200);
    n++;
    await sleep(100);
  }
  t.equal(await within('the pinging session to be closed', pingerGone, 10_000), 'goaway', 'a session with PINGs and no request is closed');
  t.equal(workerGoaway, false, `a session that completed ${n} requests over ${Date.now() - t0} ms was never told to go away`);
  t.equal(await metric(g, 'ghostgate_client_timeouts_total', 'phase="h2_session_idle"'), 1, 'counted once');
});

t.test('HTTP/2: a response longer than the idle time finishes cleanly (GOAWAY is graceful)', async (t) => {
  const IDLE = 400;
  const g = await startGateway(t, {
    modelArgs: ['--ttft-ms', '0', '--token-ms', '50', '--tokens', '30'],
    extraConfig: `http2: { sessionIdleTimeoutMs: ${IDLE} }`,
  });
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  const gone = goaway(s);
  const r = await collect(open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }));
  t.equal(r.events.at(-1), '[DONE]', 'the 1.5 s completion finished');
  t.ok(r.complete, 'with a clean END_STREAM');
  t.equal(await within('GOAWAY', gone, 10_000), 'goaway', 'the session was told to go away meanwhile');
});

t.test('a normal HTTP/1.1 keep-alive client is unaffected by the deadlines', async (t) => {
  const g = await gateway(t);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 5; i++) t.equal((await post1(`${g.url}/v1/completions`, { model: 'ghost-small', prompt: 'x' }, {}, agent)).status, 200);
});
