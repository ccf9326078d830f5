/**
 * Deadlines for client HTTP/2 sessions and streams, on the session's own events (no work in the
 * request handlers):
 *
 * - A stream's request body must be complete within `bodyTimeoutMs` of its HEADERS. Otherwise
 *   the client gets `408 GW_ERR_REQ_TIMEOUT` (if no response started) and the stream is reset.
 *   Cost: one timer per stream that has a body (none for a HEADERS frame with END_STREAM).
 * - A session is *in use* while requests complete on it. A request counts when the client has
 *   sent all of it (HEADERS and, if any, the whole body). PING, SETTINGS, WINDOW_UPDATE and
 *   streams that never finish their body do not count. A session where no request completed for
 *   `idleTimeoutMs` is closed gracefully: GOAWAY, streams in flight still finish, and the client
 *   opens a new connection for its next request. An editor that sends a completion now and then
 *   keeps its session for as long as it likes; a session held open by PINGs alone does not.
 */
import http2 from 'node:http2';
import type { Http2SecureServer, Http2Server, Http2Session, ServerHttp2Stream } from 'node:http2';
import type { IncomingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import { GatewayError } from '../errors.ts';

const { NGHTTP2_NO_ERROR, NGHTTP2_CANCEL } = http2.constants;
const END_STREAM = 0x1;

export type H2Timeout = 'h2_stream_body' | 'h2_session_idle';

export interface H2SessionOptions {
  /** A stream's request body must be complete within this (ms) of its headers. */
  bodyTimeoutMs: number;
  /** Close (GOAWAY) a session on which no request completed for this long (ms); 0 = never. */
  idleTimeoutMs: number;
  onSession?: (session: Http2Session) => void;
  onTimeout?: (what: H2Timeout) => void;
}

interface SessionState {
  /** When a request last completed on the session (performance.now()). */
  last: number;
  timer: NodeJS.Timeout | undefined;
  readonly o: H2SessionOptions;
}

const kSession = Symbol('ghostgate.h2session');
const kTimer = Symbol('ghostgate.h2bodyTimer');
type Stream = ServerHttp2Stream & { [kSession]?: SessionState; [kTimer]?: NodeJS.Timeout };

/** Watch every session of `server`; live sessions are kept in `sessions` (for shutdown). */
export function watchH2Sessions(server: Http2Server | Http2SecureServer, sessions: Set<Http2Session>, o: H2SessionOptions): void {
  server.on('session', (session: Http2Session) => {
    sessions.add(session);
    o.onSession?.(session);
    const st: SessionState = { last: performance.now(), timer: undefined, o };
    if (o.idleTimeoutMs > 0) st.timer = arm(session, st, o.idleTimeoutMs);
    session.once('close', () => { sessions.delete(session); if (st.timer) clearTimeout(st.timer); });
    session.on('stream', (stream: Stream, _h: IncomingHttpHeaders, flags: number) => {
      if ((flags & END_STREAM) !== 0) { st.last = performance.now(); return; }
      stream[kSession] = st;
      const t = setTimeout(onBodyDeadline, o.bodyTimeoutMs, stream);
      t.unref();
      stream[kTimer] = t;
      stream.on('close', onStreamClose);
    });
  });
}

function arm(session: Http2Session, st: SessionState, ms: number): NodeJS.Timeout {
  const t = setTimeout(onIdleCheck, ms, session, st);
  t.unref();
  return t;
}

function onIdleCheck(session: Http2Session, st: SessionState): void {
  st.timer = undefined;
  if (session.closed || session.destroyed) return;
  const idle = performance.now() - st.last;
  const limit = st.o.idleTimeoutMs;
  if (idle < limit) { st.timer = arm(session, st, limit - idle); return; }
  st.o.onTimeout?.('h2_session_idle');
  session.close();
}

/** The client has sent the whole request (END_STREAM seen), whether or not it was read yet. */
function requestComplete(stream: Stream): boolean {
  return stream.readableEnded || (stream as unknown as { _readableState?: { ended?: boolean } })._readableState?.ended === true;
}

function onStreamClose(this: Stream): void {
  clearTimeout(this[kTimer]);
  if (requestComplete(this)) this[kSession]!.last = performance.now();
}

function onBodyDeadline(stream: Stream): void {
  if (stream.closed || stream.destroyed || requestComplete(stream)) return;
  const st = stream[kSession]!;
  st.o.onTimeout?.('h2_stream_body');
  stream.on('error', noop);
  if (stream.headersSent) { stream.close(NGHTTP2_CANCEL); return; }
  const err = new GatewayError('GW_ERR_REQ_TIMEOUT', ['body', st.o.bodyTimeoutMs]);
  stream.respond({ ':status': err.status, 'content-type': 'application/json', 'cache-control': 'no-store' });
  // A complete response, then RST_STREAM(NO_ERROR): "stop sending the request" (RFC 9113 §8.1).
  stream.end(JSON.stringify(err.toJSON()), () => stream.close(NGHTTP2_NO_ERROR));
  // A client whose window is closed does not get to hold the stream: reset regardless.
  setTimeout(() => { if (!stream.closed) stream.close(NGHTTP2_CANCEL); }, 1000).unref();
}

function noop(): void { /* the stream is being cut on purpose */ }
