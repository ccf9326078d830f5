/**
 * One port, two protocols.
 *
 * Cleartext: Node's `http2.createServer()` only speaks h2c (`allowHTTP1` is honoured by the TLS
 * server alone). We keep a real `Http2Server` (so Fastify and everything else see the type they
 * expect) and put a tiny sniffer in front of its connection handler: the first bytes of an h2c
 * connection are the fixed preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`; anything else goes to the
 * port's HTTP/1.1 front (core/net/http1.ts). The sniffed bytes are put back with `unshift`, which
 * both the http2 session (it drains `socket.read()` on setup) and the http parser consume.
 *
 * TLS: connections that did not negotiate `h2` via ALPN go to the same kind of HTTP/1.1 front
 * instead of Node's built-in fallback, so both ports get the same header limit, deadlines and
 * shutdown.
 */
import type http from 'node:http';
import type { Http2SecureServer, Http2Server } from 'node:http2';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { TLSSocket } from 'node:tls';
import type { ErrorCode } from '../errors.ts';
import { Http1Front } from './http1.ts';
import type { RequestHandler } from './http1.ts';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

export interface DualProtocolOptions {
  /** Handler for HTTP/1.1 requests; usually the same one the http2 server has. */
  handler: RequestHandler;
  /** Keep-alive timeout for HTTP/1.1 client connections (ms). Default 65 s. */
  keepAliveTimeoutMs?: number;
  /** Largest request header block for HTTP/1.1, in bytes. Default 16 KiB. */
  maxHeaderSize?: number;
  /** Called with the code of each HTTP/1.1 request the parser refused (metrics). */
  onClientError?: (code: ErrorCode) => void;
  /** A request head must be complete within this (ms); also the sniffer's budget. Default 30 s. */
  headersTimeoutMs?: number;
  /** A request body must be complete within this (ms) of its head. Default 300 s. */
  bodyTimeoutMs?: number;
}

/**
 * Make `h2server` also accept HTTP/1.1 on the same port (a simple form for the bundled model
 * server). Returns the internal HTTP/1.1 server (never listening itself); `h2server.close()`
 * closes its idle connections, and busy ones once their response is done.
 */
export function acceptHttp1(h2server: Http2Server, opts: DualProtocolOptions): http.Server {
  const headersTimeoutMs = opts.headersTimeoutMs ?? 30_000;
  const front = new Http1Front({
    handler: opts.handler, maxHeaderSize: opts.maxHeaderSize ?? 16 * 1024, keepAliveTimeoutMs: opts.keepAliveTimeoutMs,
    headersTimeoutMs, bodyTimeoutMs: opts.bodyTimeoutMs ?? 300_000, onClientError: opts.onClientError,
  });
  routeHttp1(h2server, front, headersTimeoutMs);
  const origClose = h2server.close.bind(h2server);
  h2server.close = ((cb?: (err?: Error) => void) => { front.drain(); return origClose(cb); }) as typeof h2server.close;
  return front.server;
}

/**
 * Hand the HTTP/1.1 connections of cleartext `h2server` to `front`. A new connection must send
 * enough bytes to tell the protocols apart within `firstBytesTimeoutMs`; an HTTP/1.1 one then
 * has what is left of `front`'s head deadline, which also runs from accept.
 */
export function routeHttp1(h2server: Http2Server, front: Http1Front, firstBytesTimeoutMs: number): void {
  const original = h2server.listeners('connection') as Array<(s: Socket) => void>;
  h2server.removeAllListeners('connection');
  const toH2 = (socket: Socket): void => { for (const fn of original) fn.call(h2server, socket); };
  // One deadline from accept: the sniffer's wait for the first bytes and the request head share it.
  const toH1 = (socket: Socket, acceptedAt: number): void => front.adopt(socket, acceptedAt);
  h2server.on('connection', (socket: Socket) => sniff(socket, toH2, toH1, firstBytesTimeoutMs));
  h2server.once('close', () => front.destroyAll());
}

const kAcceptedAt = Symbol('ghostgate.acceptedAt');
type Accepted = Socket & { [kAcceptedAt]?: number };

/**
 * Route TLS connections that did not negotiate h2 to `front` (HTTP/1.1). The first request's head
 * deadline runs from the TCP accept, like on the cleartext port: the handshake and the head share it.
 */
export function routeHttp1OverTls(server: Http2SecureServer, front: Http1Front): void {
  server.prependListener('connection', (raw: Accepted) => { raw[kAcceptedAt] = performance.now(); });
  const original = server.listeners('secureConnection') as Array<(s: TLSSocket) => void>;
  server.removeAllListeners('secureConnection');
  server.on('secureConnection', (socket: TLSSocket) => {
    if (socket.alpnProtocol === 'h2') { for (const fn of original) fn.call(server, socket); return; }
    // `_parent`: the TCP socket the TLS one wraps (Node internal, test/core/node-internals.test.ts;
    // without it, the full deadline).
    front.adopt(socket, (socket as unknown as { _parent?: Accepted })._parent?.[kAcceptedAt]);
  });
  server.once('close', () => front.destroyAll());
}

/** Decide from the first bytes whether `socket` speaks h2c; hand it on with the bytes put back. */
export function sniff(socket: Socket, toH2: (s: Socket) => void, toH1: (s: Socket, acceptedAt: number) => void, timeoutMs = 10_000): void {
  const acceptedAt = performance.now();
  let seen: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  timer.unref();
  const onData = (chunk: Buffer): void => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, PREFACE.length);
    const isPrefacePrefix = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
    if (isPrefacePrefix && n < PREFACE.length) return; // need more bytes to decide
    clearTimeout(timer);
    socket.removeListener('data', onData);
    socket.removeListener('error', onError);
    socket.pause();
    socket.unshift(seen);
    if (isPrefacePrefix) toH2(socket); else toH1(socket, acceptedAt);
  };
  const onError = (): void => { clearTimeout(timer); socket.destroy(); };
  socket.on('data', onData);
  socket.on('error', onError);
}
