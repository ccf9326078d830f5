/**
 * The HTTP/2 fast lane for completion requests.
 *
 * Measured (bench + --cpu-prof): on the stock Fastify path a proxied completion cost the gateway
 * ~90 µs of CPU, a third of it in per-request machinery we do not need for this one route: the
 * h2 compat request/response objects, Fastify's Request/Reply, an AsyncResource per body parse,
 * and listener churn. Well-formed completion requests on HTTP/2 (POST, a completion path, JSON,
 * a Content-Length within the limit) are taken here straight from the server's 'stream' event
 * and run through the same Call (pipeline, forward, relay, cancel) as every other request.
 * Everything else (HTTP/1.1, other routes and methods, bodies without Content-Length or over the
 * limit, other content types) goes to Fastify unchanged: its routing, parsing and error replies.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { Http2Server, Http2SecureServer, Http2Session, ServerHttp2Stream } from 'node:http2';
import { GatewayError } from '../errors.ts';
import type { RoutePath } from '../runtime.ts';
import { Call, createExchange } from './data-plane.ts';
import { parseJsonBody } from './json-body.ts';
import { watchStream } from './client-sessions.ts';
import type { GuardContext } from './client-sessions.ts';
import type { AnyResponse, GatewayState } from './data-plane.ts';

const ENGINE = /^\/v1\/engines\/([A-Za-z0-9._:-]{1,128})\/completions$/;

/** Which hot route a path is, or undefined (then Fastify handles it). */
function hotRoute(path: string): { route: RoutePath; model?: string } | undefined {
  if (path === '/v1/completions') return { route: '/v1/completions' };
  if (path === '/v1/chat/completions') return { route: '/v1/chat/completions' };
  if (path.charCodeAt(4) === 101 /* e */) {
    const m = ENGINE.exec(path);
    if (m) return { route: '/v1/engines/:model/completions', model: m[1] };
  }
  return undefined;
}

type StreamListener = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void;

/** Put the fast lane in front of the server's own 'stream' handler (which feeds Fastify). */
export function installFastLane(server: Http2Server | Http2SecureServer, gw: GatewayState): void {
  const fallback = server.listeners('stream') as StreamListener[];
  server.removeAllListeners('stream');
  const slow: StreamListener = (stream, headers, flags, raw) => { for (const fn of fallback) fn.call(server, stream, headers, flags, raw); };
  // Every stream, first: per-session reset accounting (rapid reset) and in-flight counting.
  const guards: GuardContext = { metrics: gw.metrics, log: gw.log, get settings() { return gw.runtime.config.http2; } };
  server.on('session', (session: Http2Session) => {
    session.prependListener('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
      watchStream(session, stream, guards, headers[':method'] === 'POST' && hotRoute(headers[':path'] as string) !== undefined);
    });
  });
  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, raw: string[]) => {
    if (headers[':method'] !== 'POST' || gw.closing) return slow(stream, headers, flags, raw);
    const hot = hotRoute(headers[':path'] as string);
    const ct = headers['content-type'];
    const cl = headers['content-length'];
    const len = cl === undefined ? -1 : Number(cl);
    const limit = gw.runtime.config.limits.bodyBytes;
    if (hot === undefined || typeof ct !== 'string' || !(ct === 'application/json' || ct.startsWith('application/json;'))
      || len === 0 || Number.isNaN(len) || len > limit || (flags & END_STREAM) !== 0) {
      return slow(stream, headers, flags, raw);
    }
    readBody(stream, len, limit, gw, (body) => handle(gw, stream, headers, hot.route, hot.model, body));
  });
}

const END_STREAM = 0x1;

/**
 * Read the body: exactly Content-Length bytes when declared (HTTP/2 clients often omit it), never
 * more than the limit. Mismatch → 400, too large → 413, as on the Fastify path.
 */
function readBody(stream: ServerHttp2Stream, len: number, limit: number, gw: GatewayState, done: (b: Buffer) => void): void {
  let first: Buffer | undefined;
  let chunks: Buffer[] | undefined;
  let got = 0;
  const onData = (c: Buffer): void => {
    got += c.length;
    if (got > limit) {
      stream.removeListener('data', onData);
      stream.removeListener('end', onEnd);
      replyError(stream, new GatewayError('GW_ERR_REQ_BODY_TOO_LARGE', [limit]), gw);
      return;
    }
    if (first === undefined) first = c;
    else (chunks ??= [first]).push(c);
  };
  const onEnd = (): void => {
    stream.removeListener('data', onData);
    if ((len >= 0 && got !== len) || got === 0) {
      return replyError(stream, got === 0 ? new GatewayError('GW_ERR_REQ_INVALID_JSON') : new GatewayError('GW_ERR_REQ_BAD_REQUEST', ['Content-Length does not match the body']), gw);
    }
    done(chunks ? Buffer.concat(chunks, got) : first!);
  };
  stream.on('data', onData);
  stream.once('end', onEnd);
  stream.on('error', () => { /* a reset while reading: nothing to answer */ });
}

function handle(gw: GatewayState, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, route: RoutePath, pathModel: string | undefined, raw: Buffer): void {
  try {
    handleUnsafe(gw, stream, headers, route, pathModel, raw);
  } catch (e) {
    // Call catches its own errors; this is for anything before it exists. Never crash the process.
    gw.log.error({ err: e instanceof Error ? e.message : String(e) }, 'fast lane: unexpected error');
    replyError(stream, e instanceof GatewayError ? e : new GatewayError('GW_ERR_SERVER_INTERNAL'), gw);
  }
}

function handleUnsafe(gw: GatewayState, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, route: RoutePath, pathModel: string | undefined, raw: Buffer): void {
  if (stream.destroyed) return;
  if (gw.closing) return replyError(stream, new GatewayError('GW_ERR_SERVER_SHUTTING_DOWN'), gw);
  let body: unknown;
  const rt = gw.runtime;
  try {
    body = parseJsonBody(raw, rt.config.limits.jsonDepth);
  } catch (e) {
    return replyError(stream, e as GatewayError, gw);
  }
  const made = createExchange(rt, { path: route, body, headers, ip: stream.session?.socket?.remoteAddress ?? '', protocol: 'h2', pathModel });
  if (made instanceof GatewayError) return replyError(stream, made, gw);
  const res = new RawH2Response(stream, headers);
  new Call(gw, rt, rt.pipeline(route, made.asked), made.ex, res, raw, route, made.asked).start();
}

function replyError(stream: ServerHttp2Stream, err: GatewayError, gw?: GatewayState): void {
  gw?.metrics.errors.labels(err.code).inc();
  // A stream reset by the client (e.g. RST_STREAM in the same write as its request) is closed
  // before it is destroyed; respond() on it throws, outside any try (this runs from 'end').
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  const headers: OutgoingHttpHeaders = { ':status': err.status, 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' };
  // The Copilot client wants this on every reply of its GitHub-API host (core/copilot).
  if (gw?.runtime.copilot !== undefined) headers['x-github-request-id'] = randomUUID();
  stream.respond(headers);
  stream.end(JSON.stringify(err.toJSON()));
}

/** The AnyResponse the Call writes to, over a raw HTTP/2 stream (no compat objects). */
class RawH2Response implements AnyResponse {
  readonly stream: ServerHttp2Stream;
  readonly req: { headers: IncomingHttpHeaders };
  /** Whether we ended the response (a destroyed stream reports writableEnded true on its own). */
  #ended = false;
  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders) {
    this.stream = stream;
    this.req = { headers };
  }
  writeHead(status: number, headers: OutgoingHttpHeaders): unknown {
    if (this.stream.destroyed || this.stream.closed || this.stream.headersSent) return this;
    headers[':status'] = status;
    this.stream.respond(headers);
    return this;
  }
  write(chunk: Buffer | string, cb?: () => void): boolean {
    if (this.stream.destroyed) { cb?.(); return true; }
    return this.stream.write(chunk, cb);
  }
  end(chunk?: string): unknown {
    this.#ended = true;
    if (!this.stream.destroyed) this.stream.end(chunk);
    return this;
  }
  once(event: 'close' | 'drain', fn: () => void): unknown {
    this.stream.once(event, fn);
    return this;
  }
  destroy(): unknown { this.stream.destroy(); return this; }
  get writableEnded(): boolean { return this.#ended; }
  get writableLength(): number { return this.stream.writableLength; }
  get destroyed(): boolean { return this.stream.destroyed; }
}
