/**
 * SIGTERM never costs an HTTP/1.1 keep-alive client a request (issue #7.3 / #10.4, found by the
 * attack run: with keep-alive users under load, every one got ECONNRESET on its next request).
 *
 * A real gateway process, keep-alive users on the cleartext and the TLS port sending streaming
 * completions back to back on one socket each. After SIGTERM:
 * - the response in flight finishes whole (its headers went out before the drain, so they say
 *   `keep-alive`);
 * - a request that then arrives on that socket gets an answer, never a reset: a coded 503
 *   `GW_ERR_SERVER_SHUTTING_DOWN` (or a full response), with `Connection: close`;
 * - so every user is told to close (`Connection: close`) before its socket goes, and its next
 *   request opens a new connection, which is refused (the listener is closed): safe to retry
 *   elsewhere, even for a POST.
 * And an idle keep-alive connection at the drain is not closed under a request already on its
 * way: the request is answered (503, `Connection: close`); one that stays idle is closed.
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { within } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';

const BODY = JSON.stringify({ model: 'ghost-small', prompt: 'x', stream: true });
const USERS = 5;

interface Result { status?: number; connection?: string; complete?: boolean; text: string; error?: string; reused: boolean; sentAfterTerm: boolean }

function request(url: string, agent: http.Agent, sentAfterTerm: boolean, streaming: (on: boolean) => void = () => undefined): Promise<Result> {
  return new Promise((resolve) => {
    const mod = url.startsWith('https:') ? https : http;
    const out: Result = { text: '', reused: false, sentAfterTerm };
    const req = mod.request(`${url}/v1/completions`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(BODY) } }, (res) => {
      out.status = res.statusCode;
      out.connection = res.headers.connection;
      res.setEncoding('utf8');
      res.on('data', (d: string) => { out.text += d; streaming(true); });
      res.on('error', () => { /* seen as complete=false */ });
      res.on('close', () => { streaming(false); out.complete = res.complete; resolve(out); });
    });
    req.on('socket', () => { out.reused = req.reusedSocket; });
    req.on('error', (e: NodeJS.ErrnoException) => { out.reused = req.reusedSocket; out.error = e.code ?? e.message; resolve(out); });
    req.end(BODY);
  });
}

t.test('SIGTERM: HTTP/1.1 keep-alive users (cleartext and TLS) lose no request: in-flight ones finish, the next one on the socket is answered with Connection: close', async (t) => {
  const cert = makeCert();
  const g = await startGatewayProcess(t, {
    // ~300 ms per completion, so most users have a response streaming when SIGTERM lands.
    modelArgs: ['--ttft-ms', '0', '--token-ms', '20', '--tokens', '15'],
    files: { 'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
    extraConfig: 'shutdown: { drainDelayMs: 0, graceMs: 10000 }',
  });
  let termed = false;
  let completedBeforeTerm = 0;
  let onProgress = (): void => undefined;
  const users = [...Array.from({ length: USERS }, () => g.url), ...Array.from({ length: USERS }, () => g.tlsUrl!)].map((url) => {
    const agent = url.startsWith('https:') ? new https.Agent({ keepAlive: true, maxSockets: 1, ca: cert.cert, servername: 'localhost' }) : new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.teardown(() => agent.destroy());
    const results: Result[] = [];
    const user = { url, results, done: Promise.resolve(), streaming: false };
    const mark = (on: boolean): void => { user.streaming = on; onProgress(); };
    user.done = (async (): Promise<void> => {
      for (let i = 0; i < 2000; i++) {
        const r = await request(url, agent, termed, mark);
        results.push(r);
        if (!termed && r.status === 200) completedBeforeTerm++;
        // Told to close, or refused/reset: this user is done with this gateway.
        if (r.error !== undefined || r.connection === 'close') break;
      }
      // The next request opens a new connection: refused, since the listener is closed.
      if (termed) results.push(await request(url, agent, true));
    })();
    return user;
  });
  // Every user has finished a few requests on its socket and has a response streaming (its head
  // went out with `keep-alive`): the case the attack found.
  await within('every user to be streaming after 3 requests each', new Promise<void>((r) => {
    onProgress = () => { if (completedBeforeTerm >= users.length * 3 && users.every((u) => u.streaming)) r(); };
  }), 30_000);
  termed = true;
  g.child.kill('SIGTERM');
  await within('every user to stop', Promise.all(users.map((u) => u.done)), 30_000);
  t.equal(await within('the process to exit', g.exited, 30_000), 0, 'the process exits 0');

  if (process.env.DEBUG_KA) for (const u of users) console.error(u.url.slice(0, 5), u.results.map((r) => `${r.status ?? r.error}/${r.connection}/${r.reused ? "R" : "N"}${r.sentAfterTerm ? "*" : ""}`).join(" "));
  let answeredAfterTerm = 0;
  for (const [i, u] of users.entries()) {
    const name = `${u.url.startsWith('https:') ? 'TLS' : 'cleartext'} user ${i % USERS}`;
    const closing = u.results.findIndex((r) => r.connection === 'close');
    // Nothing before the last request (the one on a new connection) failed: no request lost on a socket.
    const failed = u.results.slice(0, -1).filter((r) => r.error !== undefined || r.complete !== true);
    t.same(failed.map((r) => `${r.error ?? `incomplete ${r.status}`} reused=${r.reused}`), [], `${name}: no request ended in a reset or a cut (${u.results.length} requests)`);
    t.ok(closing >= 0 && closing === u.results.length - 2, `${name}: told to close (Connection: close) by the last response on its socket`);
    for (const r of u.results.slice(0, -1)) {
      if (r.error !== undefined) continue; // reported above
      if (r.status === 200) t.match(r.text, /data: \[DONE\]\n\n$/, `${name}: a 200 is a whole completion`);
      else {
        t.equal(r.status, 503, `${name}: a request refused during the drain gets 503`);
        t.match(r.text, /"code":"GW_ERR_SERVER_SHUTTING_DOWN"/, `${name}: with its code`);
        t.equal(r.connection, 'close', `${name}: and Connection: close`);
      }
      if (r.sentAfterTerm && r.reused) answeredAfterTerm++;
    }
    const last = u.results.at(-1)!;
    t.ok(last.error !== undefined && !last.reused, `${name}: the next request opens a new connection, which is refused (${last.error}, reused=${last.reused})`);
  }
  // The case the attack found: a request sent on a kept-alive socket after SIGTERM.
  t.ok(answeredAfterTerm > 0, `requests sent on a kept-alive socket after SIGTERM were answered (${answeredAfterTerm})`);
});

t.test('drain: a request that crosses the drain on an idle keep-alive connection is answered (503, Connection: close), not reset; an idle one is closed', async (t) => {
  const cert = makeCert();
  const g = await startGateway(t, {
    files: { 'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
    extraConfig: 'shutdown: { drainDelayMs: 0, graceMs: 5000 }',
  });
  const a = g.gw.addresses!;
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'x' });
  const request = `POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
  const open = async (secure: boolean): Promise<{ sock: net.Socket; text: () => string; closed: Promise<void> }> => {
    const sock: net.Socket = secure
      ? tls.connect({ port: a.tlsPort!, host: '127.0.0.1', ca: cert.cert, servername: 'localhost', ALPNProtocols: ['http/1.1'] })
      : net.connect(a.port, '127.0.0.1');
    t.teardown(() => sock.destroy());
    await new Promise((r) => sock.once(secure ? 'secureConnect' : 'connect', r));
    let text = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => { text += d; });
    sock.on('error', () => { /* a reset shows as a missing response below */ });
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    // One whole response first: the connection is then an idle keep-alive one.
    sock.write(request);
    await within('the first response', new Promise<void>((r) => { const iv = setInterval(() => { if (/\r\n0\r\n\r\n$/.test(text)) { clearInterval(iv); r(); } }, 5); }), 10_000);
    text = '';
    return { sock, text: () => text, closed };
  };
  const crossing = [await open(false), await open(true)];
  // A request with no body that is answered at once (a 404): same answer shape, `Connection: close`.
  const bodiless = await open(false);
  const idle = [await open(false), await open(true)];
  const closing = g.gw.close();
  // The drain starts after the current tick; the request is written as it does, as a client's
  // next request would be that had not seen the close yet.
  await new Promise((r) => setImmediate(r));
  for (const c of crossing) c.sock.write(request);
  bodiless.sock.write('GET /no-such-path HTTP/1.1\r\nhost: x\r\n\r\n');
  await within('every connection to close', Promise.all([...crossing, bodiless, ...idle].map((c) => c.closed)), 15_000);
  t.match(bodiless.text(), /^HTTP\/1\.1 404 [^]*\r\nconnection: close\r\n/i, 'a request answered at once also says Connection: close');
  for (const [i, c] of crossing.entries()) {
    const port = i === 0 ? 'cleartext' : 'TLS';
    t.match(c.text(), /^HTTP\/1\.1 503 /, `${port}: the crossing request is answered 503`);
    t.match(c.text(), /\r\nconnection: close\r\n/i, `${port}: with Connection: close`);
    t.match(c.text(), /"code":"GW_ERR_SERVER_SHUTTING_DOWN"/, `${port}: and its code`);
  }
  for (const c of idle) t.equal(c.text(), '', 'an idle connection is closed without a word');
  await within('close() to finish', closing, 15_000);
});
