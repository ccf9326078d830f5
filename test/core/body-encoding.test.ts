/**
 * A request body with a Content-Encoding the gateway would have to decode is refused, not read:
 * 415 GW_ERR_REQ_UNSUPPORTED_ENCODING naming the encoding, with Accept-Encoding: identity, on
 * every route whose body the gateway parses (completions on both lanes and both protocols, the
 * token exchange). Nothing reaches the model. Passthrough routes, which never read the body,
 * forward it byte for byte with its Content-Encoding, for the upstream to decode. An HTTP/1.1
 * Transfer-Encoding with a coding besides chunked (`gzip, chunked`) gets 501 on all of them.
 */
import zlib from 'node:zlib';
import t from 'tap';
import type { Test } from 'tap';
import { passthroughRig } from '../helpers/fake-openai.ts';
import { connect, post, post1 } from '../helpers/h2.ts';
import type { Response } from '../helpers/h2.ts';
import { h1Bytes, h1Raw } from '../../bench/harness.ts';

const JSON_BODY = JSON.stringify({ model: 'ghost-small', prompt: 'def f(' });
const PLAIN = Buffer.from(JSON_BODY);
const REFUSED: Array<[encoding: string, body: Buffer]> = [
  ['gzip', zlib.gzipSync(PLAIN)],
  ['gzip', PLAIN], // labelled, not compressed: still not what the gateway may read as JSON
  ['deflate', zlib.deflateSync(PLAIN)],
  ['br', zlib.brotliCompressSync(PLAIN)],
  ['zstd', zlib.zstdCompressSync(PLAIN)],
  ['x-snappy', PLAIN],
  ['GZIP', zlib.gzipSync(PLAIN)],
  ['gzip, identity', zlib.gzipSync(PLAIN)],
  // 64 MiB of zeros in ~64 KB: refused as it is, never inflated.
  ['gzip', zlib.gzipSync(Buffer.alloc(64 * 1024 * 1024))],
];

function refused(t: Test, r: Response, encoding: string, what: string): void {
  t.equal(r.status, 415, `${what}: status`);
  const e = (JSON.parse(r.text) as { error: { code: string; message: string } }).error;
  t.equal(e.code, 'GW_ERR_REQ_UNSUPPORTED_ENCODING', `${what}: code`);
  t.match(e.message, `"${encoding}"`, `${what}: names the encoding`);
  t.equal(r.headers['accept-encoding'], 'identity', `${what}: says what is accepted`);
}

for (const fastLane of [true, false]) t.test(`completions and the token exchange refuse encoded bodies (server.fastLane: ${fastLane})`, async (t) => {
  const { g, up, token } = await passthroughRig(t, `server: { fastLane: ${fastLane} }`);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  for (const [encoding, body] of REFUSED) {
    const what = `${encoding} (${body.length} B)`;
    refused(t, await post(s, '/v1/completions', body, { 'content-encoding': encoding }), encoding, `h2 ${what}`);
    refused(t, await post1(`${g.url}/v1/completions`, body, { 'content-encoding': encoding }), encoding, `h1 ${what}`);
  }
  refused(t, await post(s, '/v1/token', zlib.gzipSync('{}'), { 'content-encoding': 'gzip' }), 'gzip', 'token exchange');
  t.equal((await g.modelRequests()).length, 0, 'no encoded body reached the model');
  for (const encoding of ['identity', ' Identity ']) {
    t.equal((await post(s, '/v1/completions', PLAIN, { 'content-encoding': encoding })).status, 200, `h2 ${encoding}: served`);
    t.equal((await post1(`${g.url}/v1/completions`, PLAIN, { 'content-encoding': encoding })).status, 200, `h1 ${encoding}: served`);
  }
  t.notOk(s.closed || s.destroyed, 'the session survived');
  t.equal(g.gw.runtime.inflight, 0, 'nothing in flight');

  // Passthrough: not read, so forwarded as sent, label and all.
  const gz = zlib.gzipSync(JSON.stringify({ model: 'text-embedding-3-small', input: 'hello' }));
  const r = await post(s, '/v1/embeddings', gz, { authorization: `Bearer ${token}`, 'content-encoding': 'gzip' });
  t.equal(r.status, 200, r.text);
  const seen = up.seen.at(-1)!;
  t.equal(seen.headers['content-encoding'], 'gzip', 'passthrough: the label goes upstream');
  t.same(seen.raw, gz, 'passthrough: the bytes as sent');

  // Transfer-Encoding: gzip, chunked: Node undoes the chunking only; the rest is refused everywhere.
  const port = Number(new URL(g.url).port);
  const seenBefore = up.seen.length;
  for (const path of ['/v1/completions', '/v1/token', '/v1/embeddings']) {
    const gzBody = zlib.gzipSync(PLAIN);
    const chunked = Buffer.concat([Buffer.from(`${gzBody.length.toString(16)}\r\n`), gzBody, Buffer.from('\r\n0\r\n\r\n')]);
    const r1 = await h1Raw(port, h1Bytes(`POST ${path} HTTP/1.1`, ['host: 127.0.0.1', 'connection: close', 'content-type: application/json', `authorization: Bearer ${token}`, 'transfer-encoding: gzip, chunked'], chunked), 30_000);
    t.equal(r1.status, 501, `${path} gzip, chunked: status`);
    t.equal((JSON.parse(r1.body.toString()) as { error: { code: string } }).error.code, 'GW_ERR_REQ_UNSUPPORTED_TRANSFER_CODING', `${path}: code`);
  }
  t.equal(up.seen.length, seenBefore, 'passthrough: nothing forwarded');
  t.equal((await g.modelRequests()).length, 4, 'completions: nothing forwarded');
});
