/**
 * Deadlines for client HTTP/2 sessions and streams, on the session's own events (no work in the
 * request handlers):
 *
 * - A stream's request body must be complete within `bodyTimeoutMs` of its HEADERS. Otherwise
 *   the client gets `408 GW_ERR_REQ_TIMEOUT` (if no response started) and the stream is reset.
 *   Cost per stream: an array push (no timer, no listener); one timer per session watches the
 *   oldest stream still waiting for its body.
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
import { GatewayError, JSON_TYPE } from '../errors.ts';

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
  /** When a request last completed on the session (performance.now()), as far as we have looked. */
  last: number;
  idleTimer: NodeJS.Timeout | undefined;
  bodyTimer: NodeJS.Timeout | undefined;
  /** Streams whose body had not arrived when they opened, oldest first, and when they opened. */
  readonly pending: ServerHttp2Stream[];
  readonly opened: number[];
  readonly o: H2SessionOptions;
}

/** Look at the pending list only when it grows past this: it stays small, and no work per stream. */
const COMPACT_AT = 64;

/** Watch every session of `server`; live sessions are kept in `sessions` (for shutdown). */
export function watchH2Sessions(server: Http2Server | Http2SecureServer, sessions: Set<Http2Session>, o: H2SessionOptions): void {
  server.on('session', (session: Http2Session) => {
    sessions.add(session);
    o.onSession?.(session);
    const st: SessionState = { last: performance.now(), idleTimer: undefined, bodyTimer: undefined, pending: [], opened: [], o };
    if (o.idleTimeoutMs > 0) st.idleTimer = later(onIdleCheck, o.idleTimeoutMs, session, st);
    session.once('close', () => {
      sessions.delete(session);
      clearTimeout(st.idleTimer);
      clearTimeout(st.bodyTimer);
      st.pending.length = 0;
      st.opened.length = 0;
    });
    session.on('stream', (stream: ServerHttp2Stream, _h: IncomingHttpHeaders, flags: number) => {
      const now = performance.now();
      if ((flags & END_STREAM) !== 0) { st.last = now; return; }
      // The body follows (usually in the same packet, processed right after this event). No timer
      // per stream: the stream joins the session's pending list, whose oldest entry one timer watches.
      dropFinished(st, now);
      if (st.pending.length >= COMPACT_AT) compact(st, now);
      st.pending.push(stream);
      st.opened.push(now);
      st.bodyTimer ??= later(onBodyCheck, o.bodyTimeoutMs, session, st);
    });
  });
}

function later(fn: (session: Http2Session, st: SessionState) => void, ms: number, session: Http2Session, st: SessionState): NodeJS.Timeout {
  const t = setTimeout(fn, Math.max(1, ms), session, st);
  t.unref();
  return t;
}

/** The client has sent the whole request (END_STREAM seen), whether or not it was read yet (`_readableState`: a Node internal, test/core/node-internals.test.ts). */
function requestComplete(stream: ServerHttp2Stream): boolean {
  return stream.readableEnded || (stream as unknown as { _readableState?: { ended?: boolean } })._readableState?.ended === true;
}

/**
 * Drop the oldest pending streams that are done with their body (as a rule all but the newest).
 * A stream kept here after its request ended keeps the whole request reachable (its listeners
 * reach the request's objects) until the list is compacted, even for a full GC: after 40 requests
 * on a session 40 were reachable, now the last one (test/core/request-retention.test.ts). It did
 * not change what survives young-generation GCs (bench/README.md, GC).
 */
function dropFinished(st: SessionState, now: number): void {
  const p = st.pending;
  while (p.length > 0) {
    const s = p[0]!;
    if (requestComplete(s)) st.last = now;
    else if (!s.closed && !s.destroyed) return;
    p.shift();
    st.opened.shift();
  }
}

/** Drop pending streams that are done with their body (counting completed ones as activity). */
function compact(st: SessionState, now: number): void {
  let j = 0;
  for (let i = 0; i < st.pending.length; i++) {
    const s = st.pending[i]!;
    if (requestComplete(s)) { st.last = now; continue; }
    if (s.closed || s.destroyed) continue;
    st.pending[j] = s;
    st.opened[j++] = st.opened[i]!;
  }
  st.pending.length = j;
  st.opened.length = j;
}

function onBodyCheck(session: Http2Session, st: SessionState): void {
  st.bodyTimer = undefined;
  if (session.destroyed) return;
  const now = performance.now();
  const limit = st.o.bodyTimeoutMs;
  let i = 0;
  for (; i < st.pending.length; i++) {
    const s = st.pending[i]!;
    if (requestComplete(s)) { st.last = now; continue; }
    if (s.closed || s.destroyed) continue;
    if (now - st.opened[i]! < limit) break; // this one and all after it are not due yet
    cutStream(s, st.o);
  }
  st.pending.splice(0, i);
  st.opened.splice(0, i);
  if (st.pending.length > 0) st.bodyTimer = later(onBodyCheck, limit - (now - st.opened[0]!), session, st);
}

function onIdleCheck(session: Http2Session, st: SessionState): void {
  st.idleTimer = undefined;
  if (session.closed || session.destroyed) return;
  const now = performance.now();
  compact(st, now);
  const idle = now - st.last;
  const limit = st.o.idleTimeoutMs;
  if (idle < limit) { st.idleTimer = later(onIdleCheck, limit - idle, session, st); return; }
  st.o.onTimeout?.('h2_session_idle');
  session.close();
}

/** The body did not complete in time: 408 if no response started, and reset the stream. */
function cutStream(stream: ServerHttp2Stream, o: H2SessionOptions): void {
  o.onTimeout?.('h2_stream_body');
  stream.on('error', noop);
  if (stream.headersSent) { stream.close(NGHTTP2_CANCEL); return; }
  const err = new GatewayError('GW_ERR_REQ_TIMEOUT', [], { details: { phase: 'body', timeoutMs: o.bodyTimeoutMs } });
  stream.respond({ ':status': err.status, 'content-type': JSON_TYPE, 'cache-control': 'no-store' });
  // A complete response, then RST_STREAM(NO_ERROR): "stop sending the request" (RFC 9113 §8.1).
  stream.end(JSON.stringify(err.toJSON()), () => stream.close(NGHTTP2_NO_ERROR));
  // A client whose window is closed does not get to hold the stream: reset regardless.
  setTimeout(() => { if (!stream.closed) stream.close(NGHTTP2_CANCEL); }, 1000).unref();
}

function noop(): void { /* the stream is being cut on purpose */ }
