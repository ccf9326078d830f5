/**
 * The one error reply of the data plane. Before any response byte: a coded JSON
 * `{error: {code, message}}` with the same headers whichever adapter answers (the Fastify route,
 * its error handler, the HTTP/2 fast lane, a Call). After the headers went out: an SSE error
 * event, then an abnormal end, so a partial completion never looks complete.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { githubRequestId, GITHUB_REQUEST_ID } from '../copilot/routes.ts';
import { GatewayError, JSON_TYPE } from '../errors.ts';
import type { Logger } from '../types.ts';
import type { ClientResponse } from './response.ts';
import { resetClient } from './response.ts';
import type { GatewayState } from './state.ts';

export { JSON_TYPE };

/**
 * The headers of an error reply: JSON, never cached, the error's own (e.g. `retry-after`), the
 * request id once the request has one, and `x-github-request-id` while the Copilot front door
 * is on (its client refuses replies without it).
 */
export function errorHeaders(err: GatewayError, gw: GatewayState, req: IncomingHttpHeaders | undefined, ids?: { requestId?: string; github?: string }): OutgoingHttpHeaders {
  const h: OutgoingHttpHeaders = { 'content-type': JSON_TYPE, 'cache-control': 'no-store' };
  if (ids?.requestId !== undefined) h['x-request-id'] = ids.requestId;
  if (gw.runtime.copilot !== undefined) h[GITHUB_REQUEST_ID] = ids?.github ?? githubRequestId(req ?? {});
  if (err.headers) Object.assign(h, err.headers);
  return h;
}

/**
 * Answer `err` on a response nothing was written to yet (counted in `ghostgate_errors_total`).
 * A response whose client is already gone is left alone.
 */
export function writeError(res: ClientResponse, err: GatewayError, gw: GatewayState, req: IncomingHttpHeaders | undefined, ids?: { requestId?: string; github?: string }): void {
  gw.metrics.errors.labels(err.code).inc();
  // A stream reset by the client (e.g. RST_STREAM in the same write as its request) is closed
  // before it is destroyed; respond() on it throws.
  const st = res.stream;
  if (res.destroyed || (st !== undefined && (st.destroyed || st.closed || st.headersSent))) return;
  const body = JSON.stringify(err.toJSON());
  const h = errorHeaders(err, gw, req, ids);
  // A length, as Fastify's replies have: an HTTP/1.1 client reads a whole body, not chunks.
  h['content-length'] = Buffer.byteLength(body);
  // HTTP/1.1: a writeHead that threw (a header Node refused) has set its status's reason phrase,
  // and Node keeps a phrase once set: the status line read "500 Forbidden". Cleared, Node takes 500's.
  const h1 = res as { statusMessage?: string };
  if (st === undefined && h1.statusMessage) h1.statusMessage = '';
  res.writeHead(err.status, h);
  res.end(body);
}

/**
 * Fail a response whose headers were sent: an SSE `event: error` with the coded error, then an
 * abnormal end (h2 RST_STREAM INTERNAL_ERROR; h1 socket destroyed mid-chunk). The reset goes out
 * once the event is on the wire (a reset discards unsent DATA); a client that stops reading does
 * not hold the stream open: the reset goes out after 1 s regardless.
 */
export function failStarted(res: ClientResponse, err: GatewayError): void {
  const event = `event: error\ndata: ${JSON.stringify(err.toJSON())}\n\n`;
  let done = false;
  const abort = (): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    resetClient(res, err.code);
  };
  const timer = setTimeout(abort, 1000);
  res.write(event, abort);
}

/** Map Fastify's own errors (routing, content type, body) onto the catalog. */
export function toGatewayError(err: unknown, gw: GatewayState): GatewayError {
  if (err instanceof GatewayError) return err;
  const e = err as { code?: string; statusCode?: number; message?: string };
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new GatewayError('GW_ERR_REQ_UNSUPPORTED_MEDIA_TYPE');
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new GatewayError('GW_ERR_REQ_BODY_TOO_LARGE', [gw.runtime.config.limits.bodyBytes]);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY': return new GatewayError('GW_ERR_REQ_INVALID_JSON');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH': return new GatewayError('GW_ERR_REQ_BAD_REQUEST', ['Content-Length does not match the body']);
    default:
      if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) return new GatewayError('GW_ERR_REQ_BAD_REQUEST', [e.message ?? 'invalid request']);
      gw.log.error({ err: e.message, code: e.code }, 'unexpected error on the data plane');
      return new GatewayError('GW_ERR_SERVER_INTERNAL');
  }
}

/** Log an unexpected error and turn it into the catalog's 500. */
export function internal(e: unknown, log: Logger): GatewayError {
  log.error({ err: e instanceof Error ? e.message : String(e) }, 'internal error in request handling');
  return new GatewayError('GW_ERR_SERVER_INTERNAL');
}
