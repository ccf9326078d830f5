/** Completions stream to [DONE] over every transport a client may use. */
import http from 'node:http';
import https from 'node:https';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post, post1, within } from '../helpers/h2.ts';
import { startRawH2, upstreamYaml } from '../helpers/raw-h2-upstream.ts';
import { makeCert } from '../helpers/tls.ts';

const body = { model: 'ghost-small', prompt: 'def fib(', stream: true };

t.test('h2c: streams chunks and ends with [DONE]', async (t) => {
  const g = await startGateway(t);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', body, { 'x-request-id': 'stream-h2c-1' });
  t.equal(r.status, 200);
  t.equal(r.headers['content-type'], 'text/event-stream');
  t.equal(r.headers['x-request-id'], 'stream-h2c-1', 'request id echoed');
  t.ok(r.complete, 'stream ended cleanly');
  t.equal(r.events.at(-1), '[DONE]');
  t.equal(r.events.length, 9, '8 tokens + [DONE]');
  const first = JSON.parse(r.events[0]!) as { object: string; choices: Array<{ text: string }> };
  t.equal(first.object, 'text_completion');
  const seen = await g.modelRequests();
  const fwd = seen.find((x) => x.id === 'stream-h2c-1');
  t.ok(fwd, 'the upstream saw the request with our request id');
  t.equal(fwd!.headers['x-request-id'], 'stream-h2c-1');
});

t.test('h2c: chat, engines route, alias, default model and non-streaming', async (t) => {
  const g = await startGateway(t);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const chat = await post(s, '/v1/chat/completions', { model: 'ghost', messages: [{ role: 'user', content: 'hi' }], stream: true });
  t.equal(chat.status, 200);
  t.equal(chat.events.at(-1), '[DONE]');
  t.equal((JSON.parse(chat.events[0]!) as { object: string }).object, 'chat.completion.chunk');
  const eng = await post(s, '/v1/engines/ghost-small/completions', { prompt: 'x', stream: true });
  t.equal(eng.status, 200);
  t.equal(eng.events.at(-1), '[DONE]');
  const dflt = await post(s, '/v1/completions', { prompt: 'x', stream: true });
  t.equal(dflt.status, 200, 'no model in the body: the default model serves');
  const plain = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' });
  t.equal(plain.status, 200);
  t.match(JSON.parse(plain.text), { object: 'text_completion', choices: [{ finish_reason: String }] });
  const reqs = await g.modelRequests();
  t.ok(reqs.every((r) => r.body.model === 'ghost-small'), 'aliases and the engines path are rewritten to the upstream model');
  t.ok(reqs.some((r) => r.path === '/v1/chat/completions'));
});

t.test('HTTP/1.1 on the same cleartext port: streams to [DONE] with keep-alive', async (t) => {
  const g = await startGateway(t);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 3; i++) {
    const r = await post1(`${g.url}/v1/completions`, body, {}, agent);
    t.equal(r.status, 200);
    t.ok(r.complete);
    t.equal(r.events.at(-1), '[DONE]');
  }
});

t.test('TLS: h2 via ALPN and HTTP/1.1 fallback, with a certificate made here', async (t) => {
  const { key, cert } = makeCert();
  const g = await startGateway(t, {
    files: { 'tls/key.pem': key, 'tls/cert.pem': cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
  });
  const tlsUrl = g.gw.addresses!.tls!;
  t.ok(tlsUrl.startsWith('https://'));
  const s = await connect(tlsUrl, { ca: cert, servername: 'localhost' });
  t.teardown(() => s.close());
  t.equal(s.alpnProtocol, 'h2');
  const r = await post(s, '/v1/completions', body);
  t.equal(r.status, 200);
  t.equal(r.events.at(-1), '[DONE]');
  const r1 = await new Promise<{ status: number; text: string; version: string }>((resolve, reject) => {
    const req = https.request(`${tlsUrl}/v1/completions`, { method: 'POST', ca: cert, servername: 'localhost', headers: { 'content-type': 'application/json' } }, (res) => {
      let text = ''; res.setEncoding('utf8'); res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode!, text, version: res.httpVersion }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
  t.equal(r1.version, '1.1', 'an HTTP/1.1-only TLS client falls back');
  t.equal(r1.status, 200);
  t.match(r1.text, /data: \[DONE\]/);
});

// HTTP/1.1 writes are held (corked) until the end of the loop iteration so that a response's last
// chunk and its end leave in one write (core/request/relay.ts, WriteBatch). A held write must
// still leave in that iteration: each event reaches the client while the upstream sends nothing more.
t.test('HTTP/1.1 and h2c: each event reaches the client while the upstream holds the next', async (t) => {
  const FIRST = 'data: {"choices":[{"text":"a"}]}\n\n';
  const waiting: Array<() => void> = [];
  const up = await startRawH2(t, {
    onRequest: (c, id) => {
      c.respond(id);
      c.data(id, FIRST);
      waiting.push(() => c.data(id, 'data: [DONE]\n\n', true));
    },
  });
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => upstreamYaml(up.url, 'h2c') });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 3; i++) {
    const text = await within(`HTTP/1.1 response ${i + 1} to [DONE]`, new Promise<string>((resolve, reject) => {
      const req = http.request(`${g.url}/v1/completions`, { method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
          // The first event is here while the upstream holds [DONE]: now let it go.
          if (text === FIRST) waiting.shift()!();
        });
        res.on('end', () => resolve(text));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(JSON.stringify(body));
    }));
    t.equal(text, FIRST + 'data: [DONE]\n\n', `response ${i + 1}: the first event alone, then [DONE], on one keep-alive socket`);
  }
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' });
  st.end(JSON.stringify(body));
  st.setEncoding('utf8');
  let text = '';
  await within('h2c response to [DONE]', new Promise<void>((resolve) => {
    st.on('data', (d: string) => { text += d; if (text === FIRST) waiting.shift()!(); });
    st.on('end', () => resolve());
  }));
  t.equal(text, FIRST + 'data: [DONE]\n\n', 'h2c: the first event alone, then [DONE]');
});
