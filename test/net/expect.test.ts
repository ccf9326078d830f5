/**
 * `Expect` on the data plane, from outside, on every port and protocol: HTTP/1.1 cleartext and
 * TLS, HTTP/2 h2c and TLS.
 *
 * - `Expect: 100-continue` keeps working: the client gets `100 Continue` (once), then sends its
 *   body and is served, on a connection it can reuse; over HTTP/2 on both lanes (the fast lane
 *   sent none before).
 * - Any other expectation gets `417 GW_ERR_REQ_EXPECTATION_FAILED` in the catalog's JSON shape
 *   (Node's own answer was a bare 417 with no body on HTTP/1.1; on HTTP/2 the fast lane served
 *   it and Fastify's lane got Node's bare 417), and the connection goes on serving. An HTTP/1.1
 *   client that asked to close gets the 417, not a reset, also with a body on its way.
 */
import http from 'node:http';
import https from 'node:https';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, post, within } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';

const cert = makeCert();
const BODY = JSON.stringify({ model: 'ghost-small', prompt: 'def f(', max_tokens: 4 });

interface H1Reply { status: number; text: string; continued: boolean; reused: boolean; error?: string }

/**
 * One HTTP/1.1 POST with `expect`. For 100-continue the body is held until the server's `100
 * Continue` (as curl does for large bodies); for any other expectation it is sent at once.
 */
function h1(base: string, agent: http.Agent, expect: string, o: { body?: string; close?: boolean } = {}): Promise<H1Reply> {
  const body = o.body ?? BODY;
  const secure = base.startsWith('https:');
  return new Promise((resolve) => {
    let continued = false;
    const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), expect };
    if (o.close) headers.connection = 'close';
    const req = (secure ? https : http).request(`${base}/v1/completions`, { method: 'POST', agent, headers, ...(secure ? { ca: cert.cert, servername: 'localhost' } : {}) }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode!, text, continued, reused: req.reusedSocket }));
    });
    req.on('error', (e) => resolve({ status: 0, text: '', continued, reused: req.reusedSocket, error: e.message }));
    if (expect === '100-continue') {
      req.on('continue', () => { continued = true; req.end(body); });
      req.flushHeaders();
    } else req.end(body);
  });
}

t.test('Expect over HTTP/1.1 and HTTP/2, cleartext and TLS', async (t) => {
  const g = await startGateway(t, {
    files: { 'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
  });
  const tlsBase = `https://127.0.0.1:${g.gw.addresses!.tlsPort!}`;
  let refused = 0;

  for (const [name, base, Agent] of [['cleartext', g.url, http.Agent], ['TLS', tlsBase, https.Agent]] as const) {
    t.test(`HTTP/1.1 ${name}`, async (t) => {
      // One socket for the whole sequence: each request must leave the connection usable.
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      t.teardown(() => agent.destroy());

      const go = await h1(base, agent, '100-continue');
      t.equal(go.status, 200, `100-continue: served (${go.error ?? go.text.slice(0, 120)})`);
      t.ok(go.continued, 'the client got 100 Continue before sending its body');
      t.match(JSON.parse(go.text), { choices: Array }, 'a completion');

      for (const expect of ['bogus', 'x-custom=1']) {
        const r = await h1(base, agent, expect);
        t.equal(r.status, 417, `Expect: ${expect}: 417 (${r.error ?? ''})`);
        t.same(JSON.parse(r.text), { error: { code: 'GW_ERR_REQ_EXPECTATION_FAILED', message: 'The request\'s Expect header cannot be met; only 100-continue is supported' } }, 'coded JSON');
        refused++;
        const next = await h1(base, agent, '100-continue');
        t.equal(next.status, 200, 'the connection serves the next request');
        t.ok(next.reused, 'on the same socket');
      }

      // Connection: close, with a body bigger than a socket buffer still coming: the 417, not a reset.
      const big = JSON.stringify({ model: 'ghost-small', prompt: 'x'.repeat(512 * 1024) });
      const closing = await h1(base, new Agent({ keepAlive: false }), 'bogus', { body: big, close: true });
      t.equal(closing.status, 417, `Connection: close: 417 (${closing.error ?? ''})`);
      t.match(JSON.parse(closing.text), { error: { code: 'GW_ERR_REQ_EXPECTATION_FAILED' } });
      refused++;
    });
  }

  for (const [name, url] of [['h2c', g.url], ['TLS', tlsBase]] as const) {
    t.test(`HTTP/2 ${name}`, async (t) => {
      const s = await connect(url, { ca: cert.cert, servername: 'localhost' });
      t.teardown(() => s.destroy());
      const ok = await post(s, '/v1/completions', JSON.parse(BODY), { expect: '100-continue' });
      t.equal(ok.status, 200, '100-continue, body sent at once: served');
      // A client that waits for the 100 before its body, on the fast lane and on Fastify's (a 415 there).
      for (const [ct, status] of [['application/json', 200], ['text/plain', 415]] as const) {
        const st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': ct, expect: '100-continue' }, { endStream: false });
        let continues = 0;
        st.on('continue', () => { continues++; st.end(BODY); });
        // Bounded: a gateway that never sends the 100 leaves this client waiting (the fast lane did).
        const r = await within(`${ct}: an answer after 100 Continue`, collect(st)).finally(() => st.close());
        t.equal(r.status, status, `${ct}: 100-continue, body sent after the 100: answered`);
        t.equal(continues, 1, `${ct}: one 100 Continue`);
      }
      // The fast lane (a JSON completion) and Fastify's lane (another content type, else a 415).
      for (const ct of ['application/json', 'text/plain']) {
        const r = await post(s, '/v1/completions', BODY, { expect: 'bogus', 'content-type': ct });
        t.equal(r.status, 417, `${ct}: 417`);
        t.same(JSON.parse(r.text), { error: { code: 'GW_ERR_REQ_EXPECTATION_FAILED', message: 'The request\'s Expect header cannot be met; only 100-continue is supported' } }, `${ct}: coded JSON`);
        refused++;
      }
      t.equal((await post(s, '/v1/completions', JSON.parse(BODY))).status, 200, 'the session serves the next request');
    });
  }

  t.test('counted', async (t) => {
    const m = await (await fetch(`${g.adminUrl}/metrics`)).text();
    t.match(m, new RegExp(`ghostgate_errors_total\\{code="GW_ERR_REQ_EXPECTATION_FAILED"\\} ${refused}\\n`), `${refused} refusals in ghostgate_errors_total`);
  });
});
