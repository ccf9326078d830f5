/**
 * One request path, every way in (#8.1). The core behaviours of a completion run across
 * {server.fastLane on, off} × {HTTP/1.1, HTTP/2 without Content-Length, HTTP/2 with
 * Content-Length, HTTP/2 over TLS}: a stream to [DONE], a cancel that reaches the model as a
 * reset, coded errors with the same response headers, the last look, and a truncated upstream
 * response that never looks complete. Each transport also asserts which adapter served it
 * (`gw.lanes`): with the fast lane on, completions take it (HTTP/2 and HTTP/1.1); off, Fastify's
 * route serves everything. So a broken adapter fails here whichever lane the client would have
 * taken.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import type { ClientHttp2Session } from 'node:http2';
import net from 'node:net';
import t from 'tap';
import type { Test } from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import type { TestGateway } from '../helpers/gateway.ts';
import { collect, connect, sseData, waitFor } from '../helpers/h2.ts';
import type { Response } from '../helpers/h2.ts';
import { rawConnect, request, rst } from '../helpers/raw-h2.ts';
import { makeCert } from '../helpers/tls.ts';

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR } = http2.constants;
type Transport = 'h1' | 'h2' | 'h2-cl' | 'tls-h2';
const TRANSPORTS: Transport[] = ['h1', 'h2', 'h2-cl', 'tls-h2'];
const BODY_LIMIT = 8192;

interface Sent { res: Promise<Response>; cancel(): void }
interface Client { send(body: string, headers?: Record<string, string>): Sent; close(): void }

function h2Client(session: ClientHttp2Session, withLength: boolean): Client {
  return {
    send(body, headers = {}) {
      const st = session.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', ...(withLength ? { 'content-length': Buffer.byteLength(body) } : {}), ...headers });
      st.end(body);
      return { res: collect(st), cancel: () => st.close(NGHTTP2_CANCEL) };
    },
    close: () => session.destroy(),
  };
}

function h1Client(url: string): Client {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  return {
    send(body, headers = {}) {
      let req!: http.ClientRequest;
      const res = new Promise<Response>((resolve) => {
        req = http.request(`${url}/v1/completions`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers } }, (r) => {
          let text = '';
          r.setEncoding('utf8');
          r.on('data', (d: string) => { text += d; });
          r.on('end', () => resolve({ status: r.statusCode!, headers: r.headers, text, events: sseData(text), complete: r.complete }));
          r.on('error', (e) => resolve({ status: r.statusCode!, headers: r.headers, text, events: sseData(text), error: e.message, complete: false }));
        });
        req.on('error', (e) => resolve({ status: 0, headers: {}, text: '', events: [], error: e.message, complete: false }));
        req.end(body);
      });
      return { res, cancel: () => req.destroy() };
    },
    close: () => agent.destroy(),
  };
}

const cancelledBeforeForward = async (g: TestGateway): Promise<number> => (await g.gw.metrics.cancelledBeforeForward.get()).values[0]?.value ?? 0;
const completion = (id: string): string => JSON.stringify({ model: 'ghost-small', prompt: `p-${id}`, stream: true });

for (const fastLane of [true, false]) {
  t.test(`server.fastLane: ${fastLane}`, async (t) => {
    const { key, cert } = makeCert();
    const g = await startGateway(t, {
      files: { 'tls/key.pem': key, 'tls/cert.pem': cert },
      listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
      extraConfig: `server: { fastLane: ${fastLane} }\nlimits: { bodyBytes: ${BODY_LIMIT} }`,
    });
    const tlsUrl = g.gw.addresses!.tls!;
    const clients: Record<Transport, Client> = {
      'h1': h1Client(g.url),
      'h2': h2Client(await connect(g.url), false),
      'h2-cl': h2Client(await connect(g.url), true),
      'tls-h2': h2Client(await connect(tlsUrl, { ca: cert, servername: 'localhost' }), false),
    };
    t.teardown(() => { for (const c of Object.values(clients)) c.close(); });

    for (const tr of TRANSPORTS) {
      const c = clients[tr];
      const h2 = tr !== 'h1';
      const lane: 'fast' | 'fastify' = fastLane ? 'fast' : 'fastify';

      await t.test(`${tr}: streams to [DONE] through the ${lane} lane`, async (t) => {
        const before = { ...g.gw.lanes };
        const r = await c.send(completion(`${tr}-ok`), { 'x-request-id': `${tr}-ok` }).res;
        t.equal(r.status, 200);
        t.equal(r.events.at(-1), '[DONE]');
        t.ok(r.complete, 'a clean end');
        t.equal(r.headers['x-request-id'], `${tr}-ok`);
        t.same({ fast: g.gw.lanes.fast - before.fast, fastify: g.gw.lanes.fastify - before.fastify }, lane === 'fast' ? { fast: 1, fastify: 0 } : { fast: 0, fastify: 1 }, `served by the ${lane} lane`);
      });

      await t.test(`${tr}: coded errors, the same headers on every lane`, async (t) => {
        const cases: Array<[string, string, number, string]> = [
          ['not JSON', '{"model": ', 400, 'GW_ERR_REQ_INVALID_JSON'],
          ['empty', '', 400, 'GW_ERR_REQ_INVALID_JSON'],
          ['too deep', '['.repeat(100) + ']'.repeat(100), 400, 'GW_ERR_REQ_JSON_TOO_DEEP'],
          ['too large', JSON.stringify({ model: 'ghost-small', prompt: 'x'.repeat(BODY_LIMIT) }), 413, 'GW_ERR_REQ_BODY_TOO_LARGE'],
          ['not an object', '[1]', 400, 'GW_ERR_REQ_INVALID_BODY'],
          ['unknown model', JSON.stringify({ model: 'nope', prompt: 'x' }), 404, 'GW_ERR_ROUTE_UNKNOWN_MODEL'],
        ];
        for (const [name, body, status, code] of cases) {
          const r = await c.send(body).res;
          t.equal(r.status, status, `${name}: ${status}`);
          t.equal((JSON.parse(r.text) as { error: { code: string } }).error.code, code, `${name}: ${code}`);
          t.equal(r.headers['content-type'], 'application/json; charset=utf-8', `${name}: content-type`);
          t.equal(r.headers['cache-control'], 'no-store', `${name}: cache-control`);
          t.equal(Number(r.headers['content-length']), Buffer.byteLength(r.text), `${name}: content-length`);
        }
      });

      await t.test(`${tr}: a cancel reaches the model as a reset`, async (t) => {
        const id = `${tr}-cancel-${fastLane}`;
        const sent = c.send(completion(id), { 'x-request-id': id, 'x-ttft-ms': '20000' });
        await waitFor('the model to have the request', async () => (await g.modelRequests()).some((r) => r.id === id));
        sent.cancel();
        await waitFor('the model to see the cancel', async () => (await g.modelStats()).aborts.some((a) => a.id === id));
        const a = (await g.modelStats()).aborts.find((x) => x.id === id)!;
        t.equal(a.phase, 'before-first-token');
        t.equal(a.rstCode, NGHTTP2_CANCEL, 'RST_STREAM(CANCEL) upstream');
        await sent.res;
        await waitFor('nothing in flight', () => g.gw.runtime.inflight === 0);
      });

      await t.test(`${tr}: a truncated upstream response never looks complete`, async (t) => {
        const r = await c.send(completion(`${tr}-cut`), { 'x-fail-after-tokens': '2' }).res;
        t.equal(r.status, 200, 'headers had gone out');
        t.notOk(r.complete, 'never a clean end');
        t.match(r.text, /event: error\ndata: \{"error":\{"code":"GW_ERR_UPSTREAM_ABORTED"/);
        t.notMatch(r.text, /\[DONE\]/);
        if (h2) t.equal(r.rstCode, NGHTTP2_INTERNAL_ERROR, 'RST_STREAM(INTERNAL_ERROR)');
        else t.ok(r.error, 'the connection is cut mid-body');
      });

      await t.test(`${tr}: the last look: a request and its reset in one write never reach the model`, async (t) => {
        const id = `${tr}-gone-${fastLane}`;
        const before = await cancelledBeforeForward(g);
        const lanes = { ...g.gw.lanes };
        if (h2) {
          const raw = await rawConnect(tr === 'tls-h2' ? tlsUrl : g.url, undefined, undefined, tr === 'tls-h2' ? { ca: cert } : undefined);
          t.teardown(() => raw.socket.destroy());
          raw.socket.write(Buffer.concat([request(1, '/v1/completions', completion(id), [['x-request-id', id]], tr === 'h2-cl'), rst(1)]));
        } else {
          const u = new URL(g.url);
          const b = completion(id);
          const s = net.connect(Number(u.port), u.hostname, () => s.end(`POST /v1/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: ${b.length}\r\nx-request-id: ${id}\r\n\r\n${b}`));
          s.on('error', () => { /* the gateway may reset it */ });
          s.resume();
          t.teardown(() => s.destroy());
        }
        await waitFor('the request counted as cancelled before forward', async () => (await cancelledBeforeForward(g)) > before);
        t.equal(await cancelledBeforeForward(g), before + 1);
        // A request on the next connection is served, so the model would have seen this one by now.
        const after = await c.send(completion(`${tr}-after`), { 'x-request-id': `${tr}-after` }).res;
        t.equal(after.events.at(-1), '[DONE]');
        const ids = (await g.modelRequests()).map((r) => r.id);
        t.ok(ids.includes(`${tr}-after`) && !ids.includes(id), 'the model never saw it');
        t.ok(g.gw.lanes[lane] > lanes[lane], `taken by the ${lane} lane`);
      });
    }
  });
}

t.test('server.fastLane is hot: a reload moves HTTP/2 completions between the lanes', async (t) => {
  const g = await startGateway(t);
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  const c = h2Client(s, false);
  const served = async (): Promise<{ fast: number; fastify: number }> => {
    const before = { ...g.gw.lanes };
    const r = await c.send(completion('hot')).res;
    t.equal(r.events.at(-1), '[DONE]');
    return { fast: g.gw.lanes.fast - before.fast, fastify: g.gw.lanes.fastify - before.fastify };
  };
  t.same(await served(), { fast: 1, fastify: 0 }, 'on by default');
  g.write('gateway.config.yaml', readFileSync(g.configFile, 'utf8') + 'server: { fastLane: false }\n');
  t.ok((await g.gw.reload('test')).ok, 'reloaded');
  t.same(await served(), { fast: 0, fastify: 1 }, 'off after the reload, on the same connection');
});
