/**
 * The HTTP/1.1 side of a data-plane port: an internal `http.Server` (never listening itself)
 * that is handed sockets by the cleartext preface sniffer and by the TLS listener's ALPN
 * fallback, so both ports get the same limits, deadlines and shutdown.
 *
 * Deadlines, per socket, with two reusable timers (no allocation per request):
 * - head: the request head must be complete within `headersTimeoutMs` of its first byte; for the
 *   first request on a connection, of the TCP connection being accepted (cleartext: the
 *   sniffer's first-bytes wait and the head share this one deadline; TLS: the handshake and the
 *   head share it). A deadline, not an idle timer: trickling bytes does not extend it.
 * - body: the request body must be complete within `bodyTimeoutMs` of its head.
 * Between requests, Node's keep-alive idle timer (`keepAliveTimeoutMs`) applies.
 * At a deadline the client gets `408` with a coded JSON error (unless a response already
 * started) and the connection is closed.
 */
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { GatewayError, JSON_TYPE } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';
import { clientErrorReply, connectRefusal, expectationFailedReply, refuseBadHost } from '../server/client-error.ts';

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

export interface Http1Options {
  /** The request handler (usually the same one the HTTP/2 server has). */
  handler: RequestHandler;
  /** Largest request head, in bytes (Node's `maxHeaderSize`). */
  maxHeaderSize: number;
  /** The request head must be complete within this (ms) of its first byte. */
  headersTimeoutMs: number;
  /** The request body must be complete within this (ms) of its head. */
  bodyTimeoutMs: number;
  /** Idle time between requests on a keep-alive connection (ms). Default 65 s. */
  keepAliveTimeoutMs?: number;
  /** A connection was adopted (metrics). */
  onConnection?: () => void;
  /** A deadline cut a connection (metrics). */
  onTimeout?: (phase: 'h1_headers' | 'h1_body') => void;
  /** A request refused before any handler saw it (bad framing, headers over the limit, an `Expect` other than 100-continue) was answered (metrics). */
  onClientError?: (code: ErrorCode) => void;
}

/** The phase a connection is in (for the deadlines). */
const Phase = { Head: 1, Body: 2 } as const;
type Phase = typeof Phase[keyof typeof Phase];

interface State {
  phase: Phase;
  req: IncomingMessage | undefined;
  res: ServerResponse | undefined;
  head: NodeJS.Timeout;
  /** The head timer was armed for less than `headersTimeoutMs` (time already spent before adopt). */
  headShort: boolean;
  front: Http1Front;
  body: NodeJS.Timeout | undefined;
  /** Draining: the socket is closed when this fires unless a request arrives first. */
  linger: NodeJS.Timeout | undefined;
}

const kState = Symbol('ghostgate.h1state');
type Tracked = Socket & { [kState]?: State; _httpMessage?: ServerResponse | null };

export class Http1Front {
  readonly server: http.Server;
  /**
   * Where a request goes once the front has looked at it (deadlines, drain, `Host`): the
   * options' `handler` at first; a lane may wrap it (core/server/fast-lane.ts).
   */
  handler: RequestHandler;
  readonly #o: Http1Options;
  readonly #sockets = new Set<Tracked>();
  #draining = false;

  constructor(o: Http1Options) {
    this.#o = o;
    // requestTimeout/headersTimeout: Node enforces them only for servers that listen themselves
    // (this one never does); our own deadlines below replace them.
    // requireHostHeader: Node's answer to an HTTP/1.1 request without `Host` is a bare 400; ours
    // is refuseBadHost's coded one (which also refuses two `Host` lines).
    this.server = http.createServer({ keepAliveTimeout: o.keepAliveTimeoutMs ?? 65_000, maxHeaderSize: o.maxHeaderSize, requestTimeout: 0, requireHostHeader: false });
    this.handler = o.handler;
    // The front's look first: during a drain the response is marked `Connection: close` before the handler runs.
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.#onRequest(req, res);
      if (!refuseBadHost(req, res, o.onClientError)) this.handler.call(this.server, req, res);
    });
    // A request the parser refuses gets a catalogued JSON reply, not Node's bare 400/431; a
    // CONNECT a coded 405, not a close with no answer.
    this.server.on('clientError', clientErrorReply(o.onClientError));
    this.server.on('connect', connectRefusal(o.onClientError));
    // An `Expect` other than 100-continue: Node emits this instead of 'request' (with no listener
    // it answers a bare 417 with no body). 100-continue is Node's: `100 Continue`, then 'request'.
    // The request's deadlines and drain apply as to any other.
    const expectationFailed = expectationFailedReply(o.onClientError);
    this.server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
      this.#onRequest(req, res);
      expectationFailed(req, res);
    });
  }

  /** The request head deadline (ms). */
  get headersTimeoutMs(): number { return this.#o.headersTimeoutMs; }

  /** Open HTTP/1.1 connections. */
  get size(): number { return this.#sockets.size; }

  /** Connections with a response in progress. */
  busy(): number {
    let n = 0;
    for (const s of this.#sockets) if (s._httpMessage) n++;
    return n;
  }

  /**
   * Take over a connection whose first bytes are (or will be) HTTP/1.1. Bytes already read
   * must have been put back (`unshift`) before. `acceptedAt` (`performance.now()`) is when the
   * connection was accepted: the first request's head deadline runs from then, not from now.
   */
  adopt(socket: Socket, acceptedAt?: number): void {
    const s = socket as Tracked;
    if (this.#draining) { s.destroy(); return; }
    this.#sockets.add(s);
    this.#o.onConnection?.();
    const full = this.#o.headersTimeoutMs;
    const left = acceptedAt === undefined ? full : Math.max(1, full - (performance.now() - acceptedAt));
    const st: State = { phase: Phase.Head, req: undefined, res: undefined, head: setTimeout(onHeadDeadline, left, this, s), headShort: left < full, front: this, body: undefined, linger: undefined };
    st.head.unref();
    s[kState] = st;
    s.on('data', onData);
    s.once('close', () => {
      clearTimeout(st.head);
      if (st.body) clearTimeout(st.body);
      if (st.linger) clearTimeout(st.linger);
      st.req = undefined; st.res = undefined;
      this.#sockets.delete(s);
    });
    // The HTTP/1.1 parser normally reads straight from the native handle, which would skip bytes
    // we unshifted (and the 'data' events the head deadline watches); marking the handle
    // consumed makes it read through the socket instead (Node internal: test/core/node-internals.test.ts).
    const handle = (s as unknown as { _handle?: { _consumed?: boolean } })._handle;
    if (handle) handle._consumed = true;
    this.server.emit('connection', s);
    s.resume();
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const st = (req.socket as Tracked)[kState];
    if (st === undefined) return;
    st.phase = Phase.Body;
    st.req = req;
    st.res = res;
    if (st.body === undefined) {
      st.body = setTimeout(onBodyDeadline, this.#o.bodyTimeoutMs, this, req.socket);
      st.body.unref();
    } else st.body.refresh();
    if (this.#draining) {
      // A request that arrived on a kept-alive connection during the drain: it is answered (the
      // handler refuses it with a coded 503, or serves it) with `Connection: close`, then the
      // connection closes. Never a reset with no response.
      res.shouldKeepAlive = false;
      if (st.linger) { clearTimeout(st.linger); st.linger = undefined; }
    }
  }

  /** A deadline passed: answer 408 if no response started, and close. */
  cut(s: Tracked, phase: 'h1_headers' | 'h1_body'): void {
    if (s.destroyed) return;
    this.#o.onTimeout?.(phase);
    const res = s._httpMessage;
    if (res && res.headersSent) { s.destroy(); return; }
    const head = phase === 'h1_headers';
    const err = new GatewayError('GW_ERR_REQ_TIMEOUT', [], { details: { phase: head ? 'head' : 'body', timeoutMs: head ? this.#o.headersTimeoutMs : this.#o.bodyTimeoutMs } });
    const body = JSON.stringify(err.toJSON());
    const raw = `HTTP/1.1 ${err.status} Request Timeout\r\ncontent-type: ${JSON_TYPE}\r\ncache-control: no-store\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
    // Never wait for a client that does not read: the bytes are small, the kernel takes them.
    s.write(raw, () => s.destroy());
    setTimeout(() => s.destroy(), 1000).unref();
  }

  /**
   * Shutdown, step one. From now on every response says `Connection: close` and its connection
   * closes after it; new connections are refused. A response whose head already went out with
   * `keep-alive` cannot take that back, and its client may reuse the socket the moment the
   * response ends: so that connection, like an idle keep-alive one, stays open for `lingerMs` to
   * answer a request already on its way (with `Connection: close`), and is closed after that if
   * none came. Closing it at once would reset such a request with no response: a lost request
   * for a client that cannot retry a POST.
   */
  drain(lingerMs = 1000): void {
    if (this.#draining) return;
    this.#draining = true;
    for (const s of this.#sockets) {
      const res = s._httpMessage;
      if (!res) linger(s, lingerMs);
      else if (!res.headersSent) res.shouldKeepAlive = false;
      else if (res.shouldKeepAlive) res.once('finish', () => linger(s, lingerMs));
      // else: `Connection: close` already; Node closes the connection after the response.
    }
  }

  /** Shutdown, last step: close every connection still open. */
  destroyAll(): void {
    for (const s of this.#sockets) s.destroy();
    this.server.close();
  }
}

/** Draining: close `s` in `ms` unless a request arrives on it first (see `drain`). */
function linger(s: Tracked, ms: number): void {
  const st = s[kState];
  if (s.destroyed || st === undefined || st.linger !== undefined) return;
  // A request already started on it: it gets its answer (with `Connection: close`) and then closes.
  if (s._httpMessage) return;
  st.linger = setTimeout(() => s.destroy(), ms);
  st.linger.unref();
}

function onData(this: Tracked): void {
  const st = this[kState]!;
  // The first byte of the next request on a keep-alive connection starts its head deadline.
  if (st.phase === Phase.Body && st.req!.complete) {
    st.phase = Phase.Head;
    st.req = undefined; st.res = undefined;
    if (st.headShort) rearmHead(this, st); else st.head.refresh();
  }
}

/** The first head deadline was shortened (it ran from accept); later ones get the full time. */
function rearmHead(s: Tracked, st: State): void {
  clearTimeout(st.head);
  st.head = setTimeout(onHeadDeadline, st.front.headersTimeoutMs, st.front, s);
  st.head.unref();
  st.headShort = false;
}

function onHeadDeadline(front: Http1Front, s: Tracked): void {
  if (s[kState]?.phase === Phase.Head) front.cut(s, 'h1_headers');
}

function onBodyDeadline(front: Http1Front, s: Tracked): void {
  const st = s[kState];
  if (st?.phase === Phase.Body && !st.req!.complete) front.cut(s, 'h1_body');
}
