/**
 * An HTTP/2 request with more header fields than the gateway takes (256, pseudo-headers
 * included): `431 GW_ERR_REQ_HEADERS_TOO_LARGE` in the catalog's JSON shape, the code HTTP/1.1
 * answers a header block over `limits.headerBytes` with, on h2c and TLS, on both lanes, and the
 * session goes on serving. Before, Node reset the stream (RST_STREAM ENHANCE_YOUR_CALM) with no
 * response at all.
 *
 * And a header block over `limits.headerBytes` on HTTP/2: the stream is reset with
 * ENHANCE_YOUR_CALM, no response (docs/configuration.md, `limits.headerBytes`, says why), and the
 * session goes on serving; before the client has acknowledged the gateway's SETTINGS, Node does
 * not apply the limit at all.
 */
import http2 from 'node:http2';
import type { ClientHttp2Session } from 'node:http2';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, post, post1, until } from '../helpers/h2.ts';
import { FLAG, FRAME, frame, headerBlock, rawConnect, settings } from '../helpers/raw-h2.ts';
import { makeCert } from '../helpers/tls.ts';

const cert = makeCert();
const BODY = { model: 'ghost-small', prompt: 'x', max_tokens: 2 };
/** What `post` sends besides the extra fields: :method, :path, :scheme, :authority, content-type. */
const BASE_FIELDS = 5;
const CONTINUATION = 0x9;

/** `n` extra header fields. */
const fields = (n: number): Record<string, string> => Object.fromEntries(Array.from({ length: n }, (_, i) => [`x-h${i}`, 'v']));

t.test('HTTP/2: more than 256 header fields: a coded 431, on h2c and TLS, on both lanes', async (t) => {
  const g = await startGateway(t, {
    files: { 'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
  });
  let refused = 0;
  for (const [name, url] of [['h2c', g.url], ['TLS', `https://127.0.0.1:${g.gw.addresses!.tlsPort!}`]] as const) {
    const s: ClientHttp2Session = await connect(url, { ca: cert.cert, servername: 'localhost' });
    t.teardown(() => s.destroy());
    const atLimit = await post(s, '/v1/completions', BODY, fields(256 - BASE_FIELDS));
    t.equal(atLimit.status, 200, `${name}: 256 fields: served`);
    // The fast lane (a JSON completion) and Fastify's lane (another content type).
    for (const [extra, ct] of [[1, 'application/json'], [1, 'text/plain'], [100, 'application/json']] as const) {
      const n = 256 - BASE_FIELDS + extra;
      const r = await post(s, '/v1/completions', BODY, { ...fields(n), 'content-type': ct });
      t.equal(r.status, 431, `${name}, ${256 + extra} fields, ${ct}: 431 (rst ${r.rstCode}, ${r.error ?? 'no error'})`);
      t.same(JSON.parse(r.text || '{}'), { error: { code: 'GW_ERR_REQ_HEADERS_TOO_LARGE', message: 'Request headers are too large' } }, `${name}: coded JSON`);
      t.equal(r.rstCode, http2.constants.NGHTTP2_NO_ERROR, `${name}: the stream ends cleanly`);
      refused++;
    }
    // A request whose body is still to come: the reply, then RST_STREAM(NO_ERROR) to stop the body.
    const open = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', ...fields(300) }, { endStream: false });
    open.write('{"prompt":');
    const r = await collect(open);
    t.equal(r.status, 431, `${name}: body still coming: 431`);
    t.equal(r.rstCode, http2.constants.NGHTTP2_NO_ERROR, `${name}: then RST_STREAM(NO_ERROR)`);
    refused++;
    t.equal((await post(s, '/v1/completions', BODY)).status, 200, `${name}: the session serves the next request`);

    // Over limits.headerBytes (16 KiB): Node resets the stream, no response; the session goes on.
    const big = await post(s, '/v1/completions', BODY, { 'x-big': 'b'.repeat(20_000) });
    t.equal(big.status, 0, `${name}: a header block over headerBytes: no response`);
    t.equal(big.rstCode, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, `${name}: RST_STREAM(ENHANCE_YOUR_CALM)`);
    t.equal((await post(s, '/v1/completions', BODY)).status, 200, `${name}: and the session serves the next request`);
  }
  // HTTP/1.1 has no count of its own: its head is bounded by limits.headerBytes alone.
  t.equal((await post1(`${g.url}/v1/completions`, BODY, fields(300))).status, 200, 'HTTP/1.1: 300 fields (under headerBytes) are served');
  const m = await (await fetch(`${g.adminUrl}/metrics`)).text();
  t.match(m, new RegExp(`ghostgate_errors_total\\{code="GW_ERR_REQ_HEADERS_TOO_LARGE"\\} ${refused}\\n`), 'counted');

  // limits.headerBytes holds from the client's acknowledgement of the gateway's SETTINGS: a request
  // sent before it (here in the same write as the preface) is bounded by Node alone.
  const block = headerBlock([[':method', 'POST'], [':scheme', 'http'], [':path', '/v1/completions'], [':authority', 'localhost'], ['content-type', 'application/json'], ['x-big', 'b'.repeat(20_000)]]);
  const body = Buffer.from(JSON.stringify(BODY));
  const c = await rawConnect(g.url, Buffer.concat([
    settings(),
    frame(FRAME.HEADERS, 0, 1, block.subarray(0, 16_000)),
    frame(CONTINUATION, FLAG.END_HEADERS, 1, block.subarray(16_000)),
    frame(FRAME.DATA, FLAG.END_STREAM, 1, body),
  ]));
  t.teardown(() => c.socket.destroy());
  const answer = await until(() => c.frames.find((f) => f.streamId === 1 && (f.type === FRAME.HEADERS || f.type === FRAME.RST_STREAM)));
  t.equal(answer.type, FRAME.HEADERS, 'before the SETTINGS acknowledgement: a 20 KB header block is answered');
  t.equal(answer.payload[0], 0x88, 'with :status 200 (HPACK static index 8)');
});
