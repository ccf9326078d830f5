/**
 * One cleartext port for both HTTP/2 with prior knowledge (h2c) and HTTP/1.1.
 *
 * Node's `http2.createServer()` only speaks h2c: `allowHTTP1` is honoured by the TLS server alone.
 * We keep a real `Http2Server` (so Fastify and everything else see the type they expect) and put
 * a tiny sniffer in front of its connection handler: the first bytes of an h2c connection are the
 * fixed preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`; anything else goes to an internal HTTP/1.1
 * server that shares the request handler. The sniffed bytes are put back with `unshift`, which
 * both the http2 session (it drains `socket.read()` on setup) and the http parser consume.
 */
import http from 'node:http';
import type { Http2Server } from 'node:http2';
import type { Socket } from 'node:net';
import type { ErrorCode } from '../errors.ts';
import { clientErrorReply } from '../server/client-error.ts';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
/** How long a new connection may take to send its first bytes before we drop it. */
const SNIFF_TIMEOUT_MS = 10_000;

export type RequestHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

export interface DualProtocolOptions {
  /** Handler for HTTP/1.1 requests; usually the same one the http2 server has. */
  handler: RequestHandler;
  /** Keep-alive timeout for HTTP/1.1 client connections (ms). Default 65 s. */
  keepAliveTimeoutMs?: number;
  /** Largest request header block for HTTP/1.1, in bytes. Default 16 KiB. */
  maxHeaderSize?: number;
  /** Called for each connection handed to HTTP/1.1 (metrics). */
  onHttp1?: () => void;
  /** Called with the code of each HTTP/1.1 request the parser refused (metrics). */
  onClientError?: (code: ErrorCode) => void;
  /** An HTTP/1.1 connection must send a complete request head within this (ms). Default 30 s. */
  headersTimeoutMs?: number;
}

/**
 * Make `h2server` also accept HTTP/1.1 on the same port. Returns the internal HTTP/1.1 server
 * (never listening itself); it is closed when `h2server` closes.
 */
export function acceptHttp1(h2server: Http2Server, opts: DualProtocolOptions): http.Server {
  const h1 = http.createServer({
    keepAliveTimeout: opts.keepAliveTimeoutMs ?? 65_000,
    maxHeaderSize: opts.maxHeaderSize ?? 16 * 1024,
  }, opts.handler);
  h1.on('request', (req: http.IncomingMessage) => { req.socket.setTimeout(0); });
  // A request the parser refuses gets a catalogued JSON reply, not Node's bare 400/431.
  h1.on('clientError', clientErrorReply(opts.onClientError));
  const original = h2server.listeners('connection') as Array<(s: Socket) => void>;
  h2server.removeAllListeners('connection');
  const toH2 = (socket: Socket): void => { for (const fn of original) fn.call(h2server, socket); };
  // The internal server never listens, so Node does not track its connections
  // (closeAllConnections would do nothing): we keep the set ourselves.
  const h1Sockets = new Set<Socket>();
  const toH1 = (socket: Socket): void => {
    h1Sockets.add(socket);
    opts.onHttp1?.();
    // Node enforces headersTimeout only for servers that listen themselves; this one does not.
    // So: a deadline for the request head, lifted when the request arrives (after a response,
    // Node's keepAliveTimeout re-arms the socket's idle timer for the next one).
    socket.setTimeout(opts.headersTimeoutMs ?? 30_000);
    socket.once('close', () => h1Sockets.delete(socket));
    // The HTTP/1.1 parser normally reads straight from the native handle, which would skip the
    // bytes we unshifted; marking the handle consumed makes it read through the socket instead.
    const handle = (socket as unknown as { _handle?: { _consumed?: boolean } })._handle;
    if (handle) handle._consumed = true;
    h1.emit('connection', socket);
    socket.resume();
  };
  h2server.on('connection', (socket: Socket) => sniff(socket, toH2, toH1));
  h2server.once('close', () => { for (const s of h1Sockets) s.destroy(); h1.close(); });
  // server.close() waits for connections to end: idle keep-alive HTTP/1.1 ones never do.
  const origClose = h2server.close.bind(h2server);
  // Busy ones are closed as soon as their response is done (checked every 100 ms).
  const idle = (s: Socket): boolean => !(s as Socket & { _httpMessage?: unknown })._httpMessage;
  h2server.close = ((cb?: (err?: Error) => void) => {
    for (const s of h1Sockets) if (idle(s)) s.destroy();
    if (h1Sockets.size) {
      const t = setInterval(() => {
        for (const s of h1Sockets) if (idle(s)) s.destroy();
        if (h1Sockets.size === 0) clearInterval(t);
      }, 100);
      t.unref();
    }
    return origClose(cb);
  }) as typeof h2server.close;
  return h1;
}

/** Decide from the first bytes whether `socket` speaks h2c; hand it on with the bytes put back. */
export function sniff(socket: Socket, toH2: (s: Socket) => void, toH1: (s: Socket) => void): void {
  let seen: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), SNIFF_TIMEOUT_MS);
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
    if (isPrefacePrefix) toH2(socket); else toH1(socket);
  };
  const onError = (): void => { clearTimeout(timer); socket.destroy(); };
  socket.on('data', onData);
  socket.on('error', onError);
}
