/**
 * Requests refused before any route sees them still get a catalogued `{error: {code, message}}`:
 *
 * - HTTP/1.1 the parser refuses (bad framing, control bytes, a header block past the limit, a
 *   request head too slow): Node's default `clientError` answer is a bare `400`/`431`/`408`
 *   with no body; Fastify's is its own shape. `clientErrorReply` writes ours and closes.
 * - A URL Fastify cannot decode (`/v1/engines/%ff/completions`, FST_ERR_BAD_URL): Fastify's
 *   `frameworkErrors` hook, `frameworkErrorReply`, answers 400 in our shape.
 *
 * Both run only on refused input; nothing here is on the path of a well-formed request.
 */
import { STATUS_CODES } from 'node:http';
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
    onError?.(code);
    const status = catalog[code].status;
    const body = errorBody(code, args);
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: ${JSON_TYPE}\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`);
  };
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
