/**
 * Requests refused before any route sees them still get a catalogued `{error: {code, message}}`:
 *
 * - HTTP/1.1 the parser refuses (bad framing, control bytes, a header block past the limit, a
 *   request head too slow): Node's default `clientError` answer is a bare `400`/`431`/`408`
 *   with no body; Fastify's is its own shape. `clientErrorReply` writes ours and closes.
 * - A URL Fastify cannot decode (`/v1/engines/%ff/completions`, FST_ERR_BAD_URL): Fastify's
 *   `frameworkErrors` hook, `frameworkErrorReply`, answers 400 in our shape.
 * - HTTP/1.x requests Node parses and then answers bare itself: no `Host` on an HTTP/1.1 request
 *   (Node's `requireHostHeader`: a `400` with no body), an `Expect` other than 100-continue (a
 *   `417` with no body) and CONNECT (the connection closed with no answer, `connectRefusal`). Where `requireHostHeader` is off and `checkExpectation` is ours, the
 *   HTTP/1.1 front (core/net/http1.ts) and the admin planes (`guardHttp1Server`) answer them with
 *   `refuseParsed`; `hostProblem` also refuses two `Host` lines, which Node lets through.
 *
 * Only `hostProblem` runs for a well-formed request (a scan of its raw header names); the rest
 * runs on refused input alone.
 */
import { STATUS_CODES } from 'node:http';
import type { IncomingMessage, Server as Http1Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { catalog, errorBody, JSON_TYPE } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';

/** The catalog code for an HTTP/1.1 parser error (`err.code` from llhttp / Node's http server). */
export function clientErrorCode(errno: string | undefined): { code: ErrorCode; args: string[] } {
  switch (errno) {
    case 'HPE_HEADER_OVERFLOW': return { code: 'GW_ERR_REQ_HEADERS_TOO_LARGE', args: [] };
    case 'ERR_HTTP_REQUEST_TIMEOUT':
    case 'ERR_HTTP_HEADERS_TIMEOUT': return { code: 'GW_ERR_REQ_TIMEOUT', args: [] };
    default: return { code: 'GW_ERR_REQ_BAD_REQUEST', args: [`malformed HTTP/1.1 request (${errno ?? 'parse error'})`] };
  }
}

/**
 * A `clientError` listener (for `http.Server`, or Fastify's `clientErrorHandler` option): a
 * coded JSON reply with `connection: close`, unless a response already started on the socket
 * or it cannot be written (then it is just closed, as Node does).
 */
export function clientErrorReply(onError?: (code: ErrorCode) => void): (err: NodeJS.ErrnoException, socket: Duplex) => void {
  return (err, socket) => {
    const started = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
    if (err.code === 'ECONNRESET' || !socket.writable || started) { socket.destroy(); return; }
    const { code, args } = clientErrorCode(err.code);
    endSocket(socket, code, args, onError);
  };
}

/**
 * A `connect` listener: an HTTP/1.1 CONNECT request, which Node hands over as a bare socket and,
 * with no listener, closes with no answer, gets `405 GW_ERR_REQ_METHOD_NOT_ALLOWED`; then the
 * connection is closed.
 */
export function connectRefusal(onError?: (code: ErrorCode) => void): (req: IncomingMessage, socket: Duplex) => void {
  return (req, socket) => {
    socket.on('error', () => socket.destroy());
    if (!socket.writable) { socket.destroy(); return; }
    endSocket(socket, 'GW_ERR_REQ_METHOD_NOT_ALLOWED', ['CONNECT', req.url ?? ''], onError);
  };
}

/** Write `code` as a whole HTTP/1.1 response on a socket no response object owns, and close it. */
function endSocket(socket: Duplex, code: ErrorCode, args: ReadonlyArray<string>, onError?: (code: ErrorCode) => void): void {
  onError?.(code);
  const status = catalog[code].status;
  const body = errorBody(code, args);
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: ${JSON_TYPE}\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`);
}

/** Fastify's `frameworkErrors` option: a URL it cannot decode gets our 400, not FST_ERR_BAD_URL. */
export function frameworkErrorReply(onError?: (code: ErrorCode) => void): (err: Error & { code?: string }, req: FastifyRequest, reply: FastifyReply) => void {
  return (err, _req, reply) => {
    const code: ErrorCode = 'GW_ERR_REQ_BAD_REQUEST';
    onError?.(code);
    const why = err.code === 'FST_ERR_BAD_URL' ? 'the URL is not valid (bad percent-encoding)' : 'the request could not be routed';
    void reply.code(400).header('content-type', JSON_TYPE).header('cache-control', 'no-store').send(errorBody(code, [why]));
  };
}

/**
 * Why the `Host` of an HTTP/1.x request is not acceptable, or undefined: an HTTP/1.1 request
 * without one, or any request with more than one `Host` line (RFC 9112 §3.2: both get a 400).
 * HTTP/1.0 without `Host` is legal. Node keeps the first of two `Host` lines and drops the
 * other, so the raw names are counted.
 */
export function hostProblem(req: IncomingMessage): string | undefined {
  if (req.headers.host === undefined) {
    return req.httpVersionMajor === 1 && req.httpVersionMinor >= 1 ? 'an HTTP/1.1 request needs a Host header' : undefined;
  }
  const raw = req.rawHeaders;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && (name === 'Host' || name === 'host' || name.toLowerCase() === 'host') && ++hosts > 1) return 'the request has more than one Host header';
  }
  return undefined;
}

/**
 * Answer `code` to an HTTP/1.x request Node parsed but no route may see, in the catalog's JSON
 * shape. On a kept-alive connection the reply goes out at once and Node reads and drops the
 * unread body after it; on one that closes after the reply, the body is read first, else the
 * close would reset the connection under the reply (a body deadline, where there is one, bounds
 * a client that sends slowly).
 */
export function refuseParsed(req: IncomingMessage, res: ServerResponse, code: ErrorCode, args: ReadonlyArray<string> = [], onError?: (code: ErrorCode) => void): void {
  onError?.(code);
  const body = errorBody(code, args);
  const send = (): void => {
    res.writeHead(catalog[code].status, { 'content-type': JSON_TYPE, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  if (req.complete || res.shouldKeepAlive) { send(); return; }
  req.once('end', send);
  req.resume();
}

/**
 * Refuse a request whose `Host` is not acceptable (`400 GW_ERR_REQ_BAD_REQUEST`); true if it
 * was refused. For servers created with `requireHostHeader: false`.
 */
export function refuseBadHost(req: IncomingMessage, res: ServerResponse, onError?: (code: ErrorCode) => void): boolean {
  const why = hostProblem(req);
  if (why === undefined) return false;
  refuseParsed(req, res, 'GW_ERR_REQ_BAD_REQUEST', [why], onError);
  return true;
}

/**
 * A `checkExpectation` listener: an `Expect` other than 100-continue gets `417
 * GW_ERR_REQ_EXPECTATION_FAILED` (Node's own answer, with no listener, is a bare 417). A bad
 * `Host` is refused first, as Node orders its own checks.
 */
export function expectationFailedReply(onError?: (code: ErrorCode) => void): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    if (!refuseBadHost(req, res, onError)) refuseParsed(req, res, 'GW_ERR_REQ_EXPECTATION_FAILED', [], onError);
  };
}

/**
 * The HTTP/1.x refusals of the data plane's front, for a plain `http.Server` whose one
 * 'request' listener is a Fastify app's (the admin planes): a bad `Host` (the server must be
 * created with `requireHostHeader: false`, Fastify's `http` option), an `Expect` other than
 * 100-continue and a CONNECT get coded replies, not Node's bare ones (or none). Call once,
 * right after creating the app.
 */
export function guardHttp1Server(server: Http1Server, onError?: (code: ErrorCode) => void): void {
  const handlers = server.listeners('request') as Array<(req: IncomingMessage, res: ServerResponse) => void>;
  if (handlers.length !== 1) throw new Error(`guardHttp1Server: expected one 'request' listener, found ${handlers.length}`);
  const handler = handlers[0]!;
  server.removeListener('request', handler);
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (!refuseBadHost(req, res, onError)) handler.call(server, req, res);
  });
  server.on('checkExpectation', expectationFailedReply(onError));
  server.on('connect', connectRefusal(onError));
}
