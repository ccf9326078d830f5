/**
 * `shutdown.graceMs` holds on every protocol (issue #7.3): after SIGTERM, a real gateway process
 * lets in-flight requests run for at most the grace period (one that fits finishes, with
 * `Connection: close`); at the deadline, an HTTP/1.1 response
 * (cleartext and TLS) and an HTTP/2 one are cut the way a mid-stream failure is: an SSE
 * `event: error` naming GW_ERR_SERVER_SHUTTING_DOWN, then an abnormal end (HTTP/1.1: the
 * connection closed mid-chunk, never the terminating chunk; HTTP/2: RST_STREAM), and the
 * process exits.
 */
import http from 'node:http';
import https from 'node:https';
import t from 'tap';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { connect, open, within } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';

const BODY = JSON.stringify({ model: 'ghost-small', prompt: 'x', stream: true });

interface Cut { text: string; complete: boolean; firstBytes: Promise<void>; done: Promise<void> }

/** A streaming HTTP/1.1 request; `complete` is Node's "the terminating chunk arrived". */
function h1Stream(url: string, agent: http.Agent, extra: Record<string, string> = {}): Cut & { connection?: string } {
  const out: Partial<Cut> & { text: string; connection?: string } = { text: '', complete: false };
  let first!: () => void;
  out.firstBytes = new Promise<void>((r) => { first = r; });
  out.done = new Promise<void>((resolve) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.request(`${url}/v1/completions`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(BODY), ...extra } }, (res) => {
      out.connection = res.headers.connection;
      res.setEncoding('utf8');
      res.on('data', (d: string) => { out.text += d; first(); });
      res.on('error', () => { /* aborted: what we expect */ });
      res.on('close', () => { out.complete = res.complete; resolve(); });
    });
    req.on('error', () => resolve());
    req.end(BODY);
  });
  return out as Cut & { connection?: string };
}

t.test('SIGTERM: HTTP/1.1 and HTTP/2 responses still running at graceMs are cut with an error event, and the process exits', async (t) => {
  const cert = makeCert();
  const g = await startGatewayProcess(t, {
    // 400 tokens, 50 ms apart: 20 s, far longer than the grace period.
    modelArgs: ['--ttft-ms', '0', '--token-ms', '50', '--tokens', '400'],
    files: { 'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
    extraConfig: 'shutdown: { drainDelayMs: 0, graceMs: 3000 }',
  });
  const a1 = new http.Agent({ keepAlive: true });
  const a2 = new https.Agent({ keepAlive: true, ca: cert.cert, servername: 'localhost' });
  t.teardown(() => { a1.destroy(); a2.destroy(); });
  const clear = h1Stream(g.url, a1);
  const tls = h1Stream(g.tlsUrl!, a2);
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  const st = open(s, '/v1/completions', JSON.parse(BODY));
  let h2text = '';
  st.setEncoding('utf8');
  const h2first = new Promise<void>((r) => st.on('data', (d: string) => { h2text += d; r(); }));
  const h2done = new Promise<{ ended: boolean; rst: number | undefined }>((resolve) => {
    let ended = false;
    st.on('end', () => { ended = true; });
    st.on('error', () => { /* reset: expected */ });
    st.on('close', () => resolve({ ended, rst: st.rstCode }));
  });
  await within('first bytes on every stream', Promise.all([clear.firstBytes, tls.firstBytes, h2first]), 20_000);
  // One more that fits in the grace period: response headers after 300 ms (so after SIGTERM), then 10 tokens 50 ms apart.
  const a3 = new http.Agent({ keepAlive: true });
  t.teardown(() => a3.destroy());
  const short = h1Stream(g.url, a3, { 'x-ttft-ms': '300', 'x-headers-after-ttft': '1', 'x-token-ms': '50', 'x-tokens': '10' });
  await within('the model to have all four requests', (async () => {
    while ((await (await fetch(`${g.model.url}/_stats`)).json() as { inFlight: number }).inFlight < 4) await new Promise((r) => setTimeout(r, 10));
  })(), 20_000);

  const t0 = Date.now();
  g.child.kill('SIGTERM');
  await within('all four responses to end', Promise.all([clear.done, tls.done, h2done, short.done]), 20_000);
  const code = await within('the process to exit', g.exited, 20_000);
  const took = Date.now() - t0;
  t.equal(code, 0, 'the process exits (0)');
  // Loose bound: without the fix the streams ran to their end, ~20 s.
  t.ok(took < 15_000, `exited ${took} ms after SIGTERM (graceMs 3000)`);

  t.match(short.text, /data: \[DONE\]\n\n$/, 'HTTP/1.1: a response that fits in the grace period finishes');
  t.equal(short.complete, true, 'with its terminating chunk');
  t.equal(short.connection, 'close', `and Connection: close (its headers were sent during the drain): ${short.connection}`);

  for (const [name, r] of [['HTTP/1.1 cleartext', clear], ['HTTP/1.1 TLS', tls]] as const) {
    t.match(r.text, /event: error\ndata: \{"error":\{"code":"GW_ERR_SERVER_SHUTTING_DOWN"/, `${name}: an error event names the cause`);
    t.notMatch(r.text, /\[DONE\]/, `${name}: the completion did not finish`);
    t.equal(r.complete, false, `${name}: no terminating chunk (the connection was closed mid-response)`);
  }
  const h2 = await h2done;
  t.match(h2text, /event: error\ndata: \{"error":\{"code":"GW_ERR_SERVER_SHUTTING_DOWN"/, 'HTTP/2: an error event names the cause');
  t.equal(h2.ended, false, 'HTTP/2: no END_STREAM');
  t.not(h2.rst, 0, 'HTTP/2: reset, not a clean end');
});
