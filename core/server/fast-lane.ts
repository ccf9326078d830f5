/**
 * The fast lanes: completion requests taken straight from the server's 'stream' event (HTTP/2)
 * or from the HTTP/1.1 front's 'request' event, without Fastify's per-request machinery (on
 * HTTP/2 the compat request/response objects; on both, Fastify's Request/Reply, its hooks and
 * listener churn). What that saves is measured, lanes on vs off, by `bench/lane-cpu.ts` (gateway
 * CPU per request at a fixed concurrency) and by `npm run bench -- --only throughput,fastlane-off`.
 *
 * What they take: every POST to a completion path (`matchRoute`: exact paths, no query string)
 * with a JSON content type, with or without Content-Length, while `server.fastLane` is on
 * (default) and the gateway is not closing. Everything else goes to Fastify unchanged: other
 * routes and methods, other content types, and all of it when `server.fastLane` is false.
 *
 * Both lanes and Fastify's route are adapters of the one request path (core/request/): the same
 * body reader and parser, the same error reply, the same Call. This file only turns a raw stream
 * (or Node's HTTP/1.1 request and response) into a `CompletionRequest` and a `ClientResponse`.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import http2 from 'node:http2';
import type { Http2Server, Http2SecureServer, ServerHttp2Stream } from 'node:http2';
import type { Http1Front } from '../net/http1.ts';
import { readJsonBody } from '../request/body.ts';
import { writeError } from '../request/error-reply.ts';
import type { ClientResponse } from '../request/response.ts';
import { matchRoute } from '../request/routes.ts';
import type { RouteMatch } from '../request/routes.ts';
import { serveCompletion } from '../request/serve.ts';
import type { GatewayState } from '../request/state.ts';

type StreamListener = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void;

/** Put the fast lane in front of the server's own 'stream' handler (which feeds Fastify). */
export function installFastLane(server: Http2Server | Http2SecureServer, gw: GatewayState): void {
  const fallback = server.listeners('stream') as StreamListener[];
  server.removeAllListeners('stream');
  const slow: StreamListener = (stream, headers, flags, raw) => { for (const fn of fallback) fn.call(server, stream, headers, flags, raw); };
  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, raw: string[]) => {
    const hot = takes(gw, headers[':method'], headers[':path'], headers['content-type']);
    if (hot === undefined) return slow(stream, headers, flags, raw);
    gw.lanes.fast++;
    const limits = gw.runtime.config.limits;
    const ip = stream.session?.socket?.remoteAddress ?? '';
    readJsonBody(stream, headers, limits.bodyBytes, limits.jsonDepth, (err, body, parsed) => {
      const res = new RawH2Response(stream, headers);
      if (err !== undefined) {
        // Refused mid-body (too large, over a body budget): once the reply is out, RST_STREAM(NO_ERROR)
        // tells the client to stop sending the rest (RFC 9113 §8.1).
        if (!stream.readableEnded) stream.once('finish', stopRequest);
        return writeError(res, err, gw, headers);
      }
      if (stream.destroyed) return;
      serveCompletion(gw, completionOf(ip, stream, headers, hot, body, parsed, res));
    }, { budget: gw.bodyBudget, ip, caps: limits });
  });
}

/**
 * The HTTP/1.1 fast lane, as the handler of an HTTP/1.1 front (core/net/http1.ts): the front's
 * handler before it (Fastify's) runs only for what the lane does not take. The front looks at
 * every request first (deadlines, drain, `Host`).
 */
export function installFastLaneHttp1(front: Http1Front, gw: GatewayState): void {
  const fastify = front.handler;
  const server = front.server;
  front.handler = (req: IncomingMessage, res: ServerResponse) => {
    const headers = req.headers;
    const hot = takes(gw, req.method, req.url, headers['content-type']);
    if (hot === undefined) return fastify.call(server, req, res);
    gw.lanes.fast++;
    const limits = gw.runtime.config.limits;
    const out = res as unknown as ClientResponse;
    const ip = req.socket.remoteAddress ?? '';
    readJsonBody(req, headers, limits.bodyBytes, limits.jsonDepth, (err, body, parsed) => {
      if (err !== undefined) {
        if (req.complete || res.shouldKeepAlive) return writeError(out, err, gw, headers);
        // The client asked to close after this response and is still sending its body: drain it first.
        return drainThen(req, () => writeError(out, err, gw, headers));
      }
      serveCompletion(gw, { route: hot.route, pathModel: hot.model, headers, ip, protocol: 'h1', raw: body, body: parsed, res: out });
    }, { budget: gw.bodyBudget, ip, caps: limits });
  };
}

/** Most of an unwanted request body read (and dropped) before an error reply that closes the connection. */
export const H1_DRAIN_BYTES = 8 * 1024 * 1024;

/**
 * An error answered before the request's body was read, on a connection that closes after the
 * response (`Connection: close`, HTTP/1.0): Node closes the socket once the response is out, and
 * closing a socket with unread input sends a TCP reset, which makes the client fail its write
 * (EPIPE) and drop the reply it had not read yet: a client over the body limit saw a reset, not
 * the 413 (in 5 of 10 tries of a 2 MB body against a gateway process). So the rest of the body
 * is read and dropped first, up to H1_DRAIN_BYTES (past that the reply goes out anyway); the head and body deadlines
 * (core/net/http1.ts) still bound a client that sends slowly. On a kept-alive connection Node
 * drops the unread body itself after the reply, which then goes out at once. Fastify's data
 * plane (core/server/data-plane.ts) drains the same way before its error replies.
 * test/core/bad-input.test.ts, both lanes.
 */
export function drainThen(req: IncomingMessage, reply: () => void): void {
  let got = 0;
  const done = (): void => {
    req.removeListener('data', onData);
    req.removeListener('end', done);
    reply();
  };
  const onData = (c: Buffer): void => { got += c.length; if (got > H1_DRAIN_BYTES) done(); };
  req.on('data', onData);
  req.on('end', done);
  req.resume();
}

/** The completion route a request goes to if a fast lane takes it, else undefined (Fastify's). */
function takes(gw: GatewayState, method: unknown, path: unknown, ct: unknown): RouteMatch | undefined {
  if (method !== 'POST' || gw.closing || typeof path !== 'string') return undefined;
  const hot = matchRoute(path);
  if (hot === undefined || typeof ct !== 'string' || !(ct === 'application/json' || ct.startsWith('application/json;'))) return undefined;
  return gw.runtime.config.server.fastLane ? hot : undefined;
}

function completionOf(ip: string, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, hot: RouteMatch, raw: Buffer | undefined, body: unknown, res: ClientResponse) {
  return { route: hot.route, pathModel: hot.model, headers, ip, protocol: 'h2' as const, raw, body, res };
}

function stopRequest(this: ServerHttp2Stream): void {
  if (!this.closed && !this.destroyed) this.close(http2.constants.NGHTTP2_NO_ERROR);
}

/** The ClientResponse the Call writes to, over a raw HTTP/2 stream (no compat objects). */
class RawH2Response implements ClientResponse {
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
  on(event: 'close', fn: () => void): unknown {
    this.stream.on(event, fn);
    return this;
  }
  once(event: 'drain', fn: () => void): unknown {
    this.stream.once(event, fn);
    return this;
  }
  destroy(): unknown { this.stream.destroy(); return this; }
  get writableEnded(): boolean { return this.#ended; }
  get writableLength(): number { return this.stream.writableLength; }
  get destroyed(): boolean { return this.stream.destroyed; }
}
