/**
 * The first look at every client HTTP/2 stream, before the fast lane or Fastify see it: the
 * session's accounting (core/server/client-sessions.ts: rapid reset, in-flight counts) and the
 * answers to requests no lane may see: more header fields than MAX_HEADER_PAIRS (`431
 * GW_ERR_REQ_HEADERS_TOO_LARGE`), a CONNECT (`405 GW_ERR_REQ_METHOD_NOT_ALLOWED`), an `Expect`
 * other than 100-continue (`417 GW_ERR_REQ_EXPECTATION_FAILED`); and `100 Continue` for one that
 * asks for it, on both lanes.
 * test/net/header-pairs.test.ts, test/net/expect.test.ts.
 */
import http2 from 'node:http2';
import type { IncomingHttpHeaders } from 'node:http';
import type { Http2SecureServer, Http2Server, Http2ServerRequest, Http2ServerResponse, Http2Session, ServerHttp2Stream } from 'node:http2';
import type { Http2Settings } from '../config/model.ts';
import { catalog, errorBody, JSON_TYPE } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';
import type { GatewayMetrics } from '../metrics.ts';
import { matchRoute } from '../request/routes.ts';
import type { Logger } from '../types.ts';
import { watchStream } from './client-sessions.ts';
import type { GuardContext } from './client-sessions.ts';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = http2.constants;
const END_STREAM = 0x1;

/** A session's 'stream' listener (Node passes the flat [name, value, ...] list last). */
type StreamListener = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void;

/**
 * Most header fields an HTTP/2 request may carry, pseudo-headers included. Node's own cap
 * (`maxHeaderListPairs`, core/server/listeners.ts) is set above it: past Node's cap nghttp2 resets
 * the stream (RST_STREAM ENHANCE_YOUR_CALM) with no response, so the count is checked here,
 * where the client can get a coded `431`.
 */
export const MAX_HEADER_PAIRS = 256;
const MAX_RAW_HEADERS = MAX_HEADER_PAIRS * 2;

/**
 * Watch every stream of every client session of `server`, first (before the fast lane or
 * Fastify see it): per-session reset accounting (rapid reset) and in-flight counting; and answer
 * here, before any route, a request with more than MAX_HEADER_PAIRS header fields (`431
 * GW_ERR_REQ_HEADERS_TOO_LARGE`), a CONNECT (`405 GW_ERR_REQ_METHOD_NOT_ALLOWED`) or an `Expect`
 * other than 100-continue (`417 GW_ERR_REQ_EXPECTATION_FAILED`), as the HTTP/1.1 side does; send `100 Continue` to one with
 * `expect: 100-continue` whose body is still to come, whichever lane takes it. Installed whether
 * or not the fast lane is on.
 *
 * The session's own 'stream' listeners (Node's, which hands the stream to the server's 'stream'
 * event, and the deadlines' of core/net/h2-sessions.ts) are called from this one, so a refused
 * stream reaches none of them. Per stream that is one length check, one property read and one
 * comparison more than before, and one listener call instead of three (bench/stream-guard.ts).
 */
export function installStreamGuards(server: Http2Server | Http2SecureServer, gw: { readonly metrics: GatewayMetrics; readonly log: Logger; readonly runtime: { readonly config: { readonly http2: Http2Settings } } }): void {
  const ctx: GuardContext = { metrics: gw.metrics, log: gw.log, get settings() { return gw.runtime.config.http2; } };
  server.on('session', (session: Http2Session) => {
    const onward = session.listeners('stream') as StreamListener[];
    session.removeAllListeners('stream');
    session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, raw: string[]) => {
      const method = headers[':method'];
      watchStream(session, stream, ctx, method === 'POST' && matchRoute(headers[':path'] as string) !== undefined);
      if (raw.length > MAX_RAW_HEADERS) return refuse(stream, flags, 'GW_ERR_REQ_HEADERS_TOO_LARGE', ctx);
      // Node's own answer to a CONNECT is a 405 with no body.
      if (method === 'CONNECT') return refuse(stream, flags, 'GW_ERR_REQ_METHOD_NOT_ALLOWED', ctx, ['CONNECT', String(headers[':authority'] ?? '')]);
      const expect = headers.expect;
      if (expect !== undefined) {
        // `100-continue` as Node's HTTP/2 layer takes it: in these letters alone (its answer to any
        // other Expect is a bare 417, and the fast lane would not look).
        if (expect !== '100-continue') return refuse(stream, flags, 'GW_ERR_REQ_EXPECTATION_FAILED', ctx);
        // The client may wait for it before it sends its body: sent here for both lanes.
        if ((flags & END_STREAM) === 0 && !stream.closed && !stream.destroyed) stream.additionalHeaders({ ':status': 100 });
      }
      for (let i = 0; i < onward.length; i++) onward[i]!.call(session, stream, headers, flags, raw);
    });
  });
  // Node's compat layer (Fastify's lane) would send a second `100 Continue`; with a
  // 'checkContinue' listener it leaves the request to it instead.
  server.on('checkContinue', (req: Http2ServerRequest, res: Http2ServerResponse) => server.emit('request', req, res));
}

/**
 * Answer a stream no route will see with `code`, then stop the rest of its request, if any is
 * still coming, with RST_STREAM(NO_ERROR) (RFC 9113 §8.1). A client whose window is closed does
 * not hold the stream: it is reset after 1 s regardless.
 */
function refuse(stream: ServerHttp2Stream, flags: number, code: ErrorCode, ctx: GuardContext, args: ReadonlyArray<string> = []): void {
  ctx.metrics.errors.labels(code).inc();
  stream.on('error', noop);
  if (stream.destroyed || stream.closed) return;
  const body = errorBody(code, args);
  stream.respond({ ':status': catalog[code].status, 'content-type': JSON_TYPE, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
  stream.end(body, (flags & END_STREAM) === 0 ? () => stream.close(NGHTTP2_NO_ERROR) : undefined);
  setTimeout(() => { if (!stream.closed) stream.close(NGHTTP2_CANCEL); }, 1000).unref();
}

function noop(): void { /* a refused stream: nothing more to tell its client */ }
