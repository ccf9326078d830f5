/**
 * The data plane: OpenAI-compatible completion routes. This file is the hot path: per request
 * it builds the Exchange, runs the compiled pipeline, takes a last look at the client, forwards
 * on a pooled upstream stream, and relays bytes back as they arrive. Nothing here parses,
 * compiles or allocates more than it must.
 */
import { randomUUID } from 'node:crypto';
import http2 from 'node:http2';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';
import { performance } from 'node:perf_hooks';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { GatewayError } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';
import { GatewayExchange } from '../exchange.ts';
import type { GatewayMetrics } from '../metrics.ts';
import type { HealthMonitor } from '../health.ts';
import type { CompiledPipeline } from '../pipeline.ts';
import { ROUTES } from '../runtime.ts';
import type { RoutePath, Runtime } from '../runtime.ts';
import type { JsonObject, LocalReply, Logger, OutboundRequest, Outcome, UpstreamResponse } from '../types.ts';
import { UpstreamAbortError } from '../upstream/client.ts';
import { clientFacts } from './client-facts.ts';
import { guardOfStream, markOwned } from './client-sessions.ts';
import type { ClientInflight, SessionGuard } from './client-sessions.ts';
import { parseJsonBody } from './json-body.ts';
import { SseSplitter } from './sse.ts';

const { NGHTTP2_CANCEL } = http2.constants;

/** What the data plane needs from the gateway. */
export interface GatewayState {
  readonly runtime: Runtime;
  readonly metrics: GatewayMetrics;
  readonly health: HealthMonitor;
  readonly log: Logger;
  readonly closing: boolean;
  /** Requests in flight upstream per client IP (`limits.maxInflightPerClientIp`). */
  readonly clientInflight: ClientInflight;
}

/** The part of http.ServerResponse / Http2ServerResponse we use (their overloads don't unify). */
export interface AnyResponse {
  writeHead(status: number, headers: OutgoingHttpHeaders): unknown;
  write(chunk: Buffer | string, cb?: () => void): boolean;
  end(chunk?: string): unknown;
  once(event: 'close' | 'drain', fn: () => void): unknown;
  destroy(): unknown;
  readonly writableEnded: boolean;
  readonly destroyed: boolean;
  /** Bytes written and not yet taken by the client (the stall check watches it shrink). */
  readonly writableLength: number;
  /** Present on HTTP/2 responses. */
  readonly stream?: Http2ServerResponse['stream'];
  /** The request; on HTTP/1.1 its connection is watched by the last look. */
  readonly req?: { headers: IncomingHttpHeaders; readonly socket?: { readonly destroyed: boolean; readonly readableEnded: boolean; readonly remoteAddress?: string } | null };
}
type RawBodyRequest = FastifyRequest & { rawBody?: Buffer };

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Upstream response headers we never relay (hop-by-hop, or the gateway's to set). */
const DROP_RESPONSE_HEADERS = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te', 'trailer', 'http2-settings', 'content-length', 'set-cookie', 'server', 'date', 'x-request-id']);

/**
 * The data plane as a Fastify plugin: completion routes, token exchange routes, and the error
 * mapping. Wrapped with fastify-plugin so its content-type parser, not-found and error handlers
 * apply to the whole instance (not an encapsulated child).
 */
export const dataPlanePlugin = fp<{ gw: GatewayState }>(async (app, opts) => { registerDataPlane(app, opts.gw); }, {
  name: 'ghostgate-data-plane',
  fastify: '5.x',
});

/** Register the completion routes, the token exchange routes and the error mapping on `app`. */
export function registerDataPlane(app: FastifyInstance, gw: GatewayState): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    let parsed: unknown;
    try {
      parsed = parseJsonBody(body as Buffer, gw.runtime.config.limits.jsonDepth);
    } catch (e) {
      return done(e as GatewayError, undefined);
    }
    (req as RawBodyRequest).rawBody = body as Buffer;
    done(null, parsed);
  });

  for (const path of ROUTES) {
    app.post(path, (request, reply) => handleCompletion(gw, path, request as RawBodyRequest, reply));
  }
  registerAuthRoutes(app, gw);
  // Known paths with another method: 405, not 404.
  for (const path of [...ROUTES, '/v1/token']) {
    app.route({
      method: ['GET', 'PUT', 'DELETE', 'PATCH'], url: path,
      handler: (req, reply) => { sendError(reply, new GatewayError('GW_ERR_REQ_METHOD_NOT_ALLOWED', [req.method, path]), gw); },
    });
  }
  app.setNotFoundHandler((req, reply) => sendError(reply, new GatewayError('GW_ERR_REQ_NOT_FOUND', [req.method, req.url.split('?')[0]!]), gw));
  app.setErrorHandler((err, _req, reply) => sendError(reply, toGatewayError(err, gw), gw));
}

function registerAuthRoutes(app: FastifyInstance, gw: GatewayState): void {
  app.post('/v1/token', async (req, reply) => {
    const auth = gw.runtime.auth;
    if (!auth) throw new GatewayError('GW_ERR_AUTH_NOT_CONFIGURED');
    const out = await auth.exchange({ headers: req.headers, body: req.body, ip: req.ip });
    reply.header('cache-control', 'no-store');
    return out;
  });
  app.get('/.well-known/jwks.json', async (_req, reply) => {
    const auth = gw.runtime.auth;
    if (!auth) throw new GatewayError('GW_ERR_AUTH_NOT_CONFIGURED');
    reply.header('cache-control', 'public, max-age=300');
    return auth.jwks();
  });
}

/** Map Fastify's own errors (body parsing, limits) onto the catalog. */
function toGatewayError(err: unknown, gw: GatewayState): GatewayError {
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

function sendError(reply: FastifyReply, err: GatewayError, gw: GatewayState): void {
  gw.metrics.errors.labels(err.code).inc();
  if (err.headers) reply.headers(err.headers);
  reply.code(err.status).header('content-type', 'application/json').header('cache-control', 'no-store').send(JSON.stringify(err.toJSON()));
}

/**
 * One completion request, start to end. Not `async`: the common path (no async step) runs
 * synchronously up to the upstream send, with no promise allocated for the pipeline.
 */
function handleCompletion(gw: GatewayState, path: RoutePath, request: RawBodyRequest, reply: FastifyReply): void {
  const rt = gw.runtime;
  if (gw.closing) return sendError(reply, new GatewayError('GW_ERR_SERVER_SHUTTING_DOWN'), gw);
  const made = createExchange(rt, {
    path, body: request.body, headers: request.headers, ip: request.ip,
    protocol: request.raw.httpVersionMajor === 2 ? 'h2' : 'h1',
    pathModel: path === '/v1/engines/:model/completions' ? (request.params as { model: string }).model : undefined,
  });
  if (made instanceof GatewayError) return sendError(reply, made, gw);
  reply.hijack();
  const call = new Call(gw, rt, rt.pipeline(path, made.asked), made.ex, reply.raw as unknown as AnyResponse, request.rawBody, path, made.asked);
  call.start();
}

export interface ExchangeInput {
  path: RoutePath;
  body: unknown;
  headers: IncomingHttpHeaders;
  ip: string;
  protocol: 'h2' | 'h1';
  /** The model from the URL (`/v1/engines/:model/completions`). */
  pathModel?: string;
}

/**
 * Build the Exchange for a request exactly as the data plane does (also used by `explain`).
 * Returns a GatewayError for a body the gateway cannot route.
 */
export function createExchange(rt: Runtime, input: ExchangeInput): { ex: GatewayExchange; asked: string } | GatewayError {
  const body = input.body as JsonObject;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return new GatewayError('GW_ERR_REQ_INVALID_BODY', ['the body must be a JSON object']);
  }
  let asked: unknown = input.pathModel ?? body.model;
  if (asked === undefined || asked === null) asked = rt.config.defaultModel;
  if (typeof asked !== 'string' || asked === '') {
    return asked === undefined ? new GatewayError('GW_ERR_ROUTE_NO_MODEL') : new GatewayError('GW_ERR_REQ_INVALID_BODY', ['"model" must be a string']);
  }
  const known = rt.models.get(asked);
  const headers = input.headers;
  const rid = headers['x-request-id'];
  const ex = new GatewayExchange({
    id: typeof rid === 'string' && REQUEST_ID.test(rid) ? rid : randomUUID(),
    method: 'POST',
    path: input.path,
    protocol: input.protocol,
    ip: input.ip,
    headers: pickHeaders(headers, rt.config.facts.headers),
    client: clientFacts(headers, rt.config.client),
    body,
    route: { model: known ? known.model : asked, upstream: known ? known.upstream : '', upstreamModel: known ? known.upstreamModel : asked, arms: {} },
    authorization: typeof headers.authorization === 'string' ? headers.authorization : undefined,
  });
  // The Copilot client wants this on every reply of its GitHub-API host (core/copilot).
  if (rt.copilot !== undefined) ex.responseHeaders['x-github-request-id'] = ex.id;
  return { ex, asked };
}

function pickHeaders(h: IncomingHttpHeaders, names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) {
    const v = h[n];
    if (typeof v === 'string') out[n] = v;
  }
  return out;
}

/** The life of one proxied request. A class so V8 sees one shape and closures are few. */
export class Call {
  readonly gw: GatewayState;
  readonly rt: Runtime;
  readonly p: CompiledPipeline;
  readonly ex: GatewayExchange;
  readonly res: AnyResponse;
  readonly rawBody: Buffer | undefined;
  readonly path: RoutePath;
  readonly asked: string;
  upstreamName = '';
  status = 0;
  headersSent = false;
  finished = false;
  upstreamBody: UpstreamResponse['body'] | undefined = undefined;
  /** The client session's guard while this request counts against its in-flight cap. */
  guard: SessionGuard | undefined = undefined;
  /** The client address while this request counts against its per-IP in-flight cap. */
  countedIp: string | undefined = undefined;
  /** Armed while the relay waits for the client to take bytes (see `stallCheck`). */
  stallTimer: NodeJS.Timeout | undefined = undefined;
  stallLength = 0;

  constructor(gw: GatewayState, rt: Runtime, p: CompiledPipeline, ex: GatewayExchange, res: AnyResponse, rawBody: Buffer | undefined, path: RoutePath, asked: string) {
    this.gw = gw; this.rt = rt; this.p = p; this.ex = ex; this.res = res; this.rawBody = rawBody; this.path = path; this.asked = asked;
  }

  start(): void {
    markOwned(this.res.stream);
    this.rt.enter(this.ex);
    this.gw.metrics.inflight.inc();
    this.res.once('close', () => this.onClientClose());
    this.ex.cancellation.addEventListener('abort', () => this.onAbort());
    let r: LocalReply | undefined | Promise<LocalReply | undefined>;
    try {
      r = this.p.run(this.ex);
    } catch (e) {
      return this.failBeforeHeaders(e);
    }
    if (r === undefined) return this.forward();
    if (typeof (r as Promise<unknown>).then === 'function') {
      (r as Promise<LocalReply | undefined>).then((v) => (v === undefined ? this.forward() : this.local(v)), (e) => this.failBeforeHeaders(e));
      return;
    }
    this.local(r as LocalReply);
  }

  /** The client's stream or socket closed. Before we ended the response, that is a cancel. */
  onClientClose(): void {
    if (this.res.writableEnded || this.finished) return;
    this.ex.clientGone();
  }

  /** The exchange's signal fired: the client went away, or a step/gateway cancelled it. */
  onAbort(): void {
    const ex = this.ex;
    // The upstream stream was reset synchronously by the signal's listener in the upstream client.
    // before_first_byte = during the prefill (no token relayed yet): the expensive window.
    const phase = this.upstreamName === '' ? 'before_forward' : ex.firstByteAt === 0 ? 'before_first_byte' : 'streaming';
    this.gw.metrics.cancelPropagation.labels(phase).observe((performance.now() - ex.cancelledAt) / 1000);
    if (ex.cancelCode !== undefined) {
      // Cancelled by the gateway (e.g. superseded): tell the client why, if it is still there.
      const err = new GatewayError(ex.cancelCode);
      this.endWithError(err, ex.cancelCode === 'GW_ERR_POLICY_SUPERSEDED' ? 'superseded' : err.status >= 500 ? 'error' : 'local');
      return;
    }
    if (this.upstreamName !== '') this.finish('client_cancelled');
    // before forwarding: forward() takes the last look and finishes.
  }

  local(r: LocalReply): void {
    try {
      this.#local(r);
    } catch (e) {
      if (!this.headersSent) this.failBeforeHeaders(e);
      else this.endWithError(internal(e, this.gw.log), 'error');
    }
  }

  #local(r: LocalReply): void {
    if (this.finished) return;
    if (this.ex.cancellation.aborted) return this.finish('cancelled_before_forward');
    const headers: OutgoingHttpHeaders = { 'content-type': 'application/json', 'cache-control': 'no-store', 'x-request-id': this.ex.id, ...this.ex.responseHeaders, ...r.headers };
    const code = (r.body as { error?: { code?: string } }).error?.code;
    if (code) this.gw.metrics.errors.labels(code).inc();
    this.status = r.status;
    this.headersSent = true;
    this.res.writeHead(r.status, headers);
    this.res.end(JSON.stringify(r.body));
    this.finish('local');
  }

  /**
   * The pipeline let the request through. Forward it after the last look, which waits for the
   * input already read from this client's connection to be processed: a client may send its
   * request and its RST_STREAM (or an HTTP/1.1 request and its FIN) in one write, and the reset
   * is handled only once the code that parsed the request has returned. See `lastLook`.
   */
  forward(): void {
    if (this.finished) return;
    setImmediate(lastLook, this, this.ex.facts.request.protocol === 'h1' ? 1 : 0);
  }

  /** Forward now (the last look's checks run first). */
  forwardNow(): void {
    try {
      this.#forward();
    } catch (e) {
      this.failBeforeHeaders(e);
    }
  }

  #forward(): void {
    if (this.finished) return;
    const ex = this.ex;
    const rt = this.rt;
    // Last look: a client already gone is never sent upstream (no wasted prefill).
    if (!ex.cancellation.aborted && clientGone(this.res)) ex.clientGone();
    if (ex.cancellation.aborted) return this.finish('cancelled_before_forward');
    const upstream = rt.upstreams.get(ex.route.upstream);
    if (upstream === undefined) {
      return this.failBeforeHeaders(new GatewayError('GW_ERR_ROUTE_UNKNOWN_MODEL', [this.asked]));
    }
    // One client session may hold only so many upstream streams (HTTP/1.1 has one at a time),
    // and one client address only so many across its connections.
    const guard = guardOfStream(this.res.stream);
    if (guard !== undefined && guard.upstreamInflight >= rt.config.http2.maxInflightPerSession) {
      return this.failBeforeHeaders(new GatewayError('GW_ERR_REQ_TOO_MANY_IN_FLIGHT', [`on this connection (${rt.config.http2.maxInflightPerSession})`], { headers: { 'retry-after': '1' } }));
    }
    const ipCap = rt.config.limits.maxInflightPerClientIp;
    if (ipCap > 0) {
      const ip = guard !== undefined ? guard.ip : this.res.req?.socket?.remoteAddress ?? '';
      if (!this.gw.clientInflight.take(ip, ipCap)) {
        return this.failBeforeHeaders(new GatewayError('GW_ERR_REQ_TOO_MANY_IN_FLIGHT', [`from this client address (${ipCap})`], { headers: { 'retry-after': '1' } }));
      }
      this.countedIp = ip;
    }
    if (guard !== undefined) {
      guard.upstreamInflight++;
      this.guard = guard;
    }
    this.upstreamName = upstream.name;
    const out = outboundRequest(ex, upstream.name, upstream.config.forwardHeaders, this.path, this.res.req?.headers, this.rawBody);
    if (this.p.forwarding.length) this.p.runForwarding(ex, out);
    ex.forwardedAt = performance.now();
    upstream.send({ path: out.path, headers: out.headers as Record<string, string>, body: out.body, signal: ex.cancellation }).then(
      (r) => this.relay(r),
      (e) => this.failBeforeHeaders(e),
    );
  }

  relay(r: UpstreamResponse): void {
    try {
      this.#relay(r);
    } catch (e) {
      // e.g. a response header Node refuses to send: never an uncaught exception.
      cancelUpstream(r.body);
      if (!this.headersSent) this.failBeforeHeaders(e);
      else this.endWithError(internal(e, this.gw.log), 'error');
    }
  }

  #relay(r: UpstreamResponse): void {
    const ex = this.ex;
    const res = this.res;
    const body = r.body;
    this.upstreamBody = body;
    if (this.finished || ex.cancellation.aborted) { cancelUpstream(body); return; }
    if (this.p.responseHeaders.length) this.p.runResponseHeaders(ex, r.status, r.headers);
    const out: OutgoingHttpHeaders = {};
    for (const k in r.headers) {
      if (k.charCodeAt(0) === 58 /* ':' */ || DROP_RESPONSE_HEADERS.has(k)) continue;
      out[k] = r.headers[k];
    }
    out['x-request-id'] = ex.id;
    Object.assign(out, ex.responseHeaders);
    this.status = r.status;
    this.headersSent = true;
    res.writeHead(r.status, out);
    const sse = this.p.wantsEvents ? new SseSplitter((data) => this.p.runResponseEvent(ex, data)) : undefined;
    let first = true;
    body.on('data', (chunk: Buffer) => {
      if (first) { first = false; ex.firstByteAt = performance.now(); }
      if (sse) sse.push(chunk);
      if (!res.write(chunk)) {
        // Back-pressure: stop reading upstream (its flow-control window then stops the upstream)
        // until the client has taken what is buffered, and watch for a client that never does.
        body.pause();
        res.once('drain', () => { this.clearStall(); body.resume(); });
        this.armStall();
      }
    });
    body.once('end', () => {
      if (this.finished || ex.cancellation.aborted) return;
      if (!r.complete()) return this.endWithError(new GatewayError('GW_ERR_UPSTREAM_ABORTED', [this.upstreamName]), 'upstream_aborted');
      res.end();
      this.finish('ok');
    });
    let failure: GatewayError | undefined;
    body.once('close', () => {
      // Closed without 'end': the upstream failed mid-response (or we cancelled it).
      if (this.finished || ex.cancellation.aborted) return;
      if (!body.readableEnded) this.endWithError(failure ?? new GatewayError('GW_ERR_UPSTREAM_ABORTED', [this.upstreamName]), 'upstream_aborted');
    });
    body.on('error', (e) => { if (e instanceof GatewayError) failure = e; /* reported on 'close' */ });
  }

  /**
   * The client stopped taking bytes: if it takes none for `limits.clientStallMs`, the request is
   * cancelled upstream and the client's stream reset (HAProxy's `timeout client`), so a reader
   * that never reads does not hold an upstream stream, and the bytes buffered for it, forever.
   */
  armStall(): void {
    const ms = this.rt.config.limits.clientStallMs;
    if (ms === 0 || this.stallTimer !== undefined || this.finished) return;
    this.stallLength = this.res.writableLength;
    this.stallTimer = setTimeout(stallCheck, ms, this, ms);
  }

  clearStall(): void {
    if (this.stallTimer === undefined) return;
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
  }

  /** No byte taken for `clientStallMs`: cancel upstream, reset the client. */
  stalled(): void {
    if (this.finished) return;
    if (this.upstreamBody && !this.upstreamBody.destroyed) cancelUpstream(this.upstreamBody);
    this.finish('client_stalled');
    resetClient(this.res, 'client stalled');
  }

  /** Failure before any response byte: a coded JSON error (unless the client is gone). */
  failBeforeHeaders(e: unknown): void {
    if (this.finished) return;
    if (e instanceof UpstreamAbortError || this.ex.cancellation.aborted) {
      if (this.ex.cancelCode === undefined) this.finish(this.upstreamName === '' ? 'cancelled_before_forward' : 'client_cancelled');
      return;
    }
    const err = e instanceof GatewayError ? e : internal(e, this.gw.log);
    // 5xx from the gateway itself (a plugin crash, a bug) counts against the SLO; 4xx do not.
    const outcome: Outcome = err.code.startsWith('GW_ERR_UPSTREAM_') ? 'upstream_error' : err.status >= 500 ? 'error' : 'local';
    this.endWithError(err, outcome);
  }

  /**
   * End with an error. Before headers: JSON `{error}` with the status. After: an SSE error event,
   * then an abnormal end (h2 RST_STREAM INTERNAL_ERROR; h1 socket destroyed mid-chunk), so no
   * client can mistake a partial completion for a complete one.
   */
  endWithError(err: GatewayError, outcome: Outcome): void {
    if (this.finished) return;
    const res = this.res;
    this.gw.metrics.errors.labels(err.code).inc();
    if (this.upstreamBody && !this.upstreamBody.destroyed) cancelUpstream(this.upstreamBody);
    if (res.destroyed || res.stream?.destroyed) return this.finish(outcome);
    if (!this.headersSent) {
      this.status = err.status;
      this.headersSent = true;
      const headers: OutgoingHttpHeaders = { 'content-type': 'application/json', 'cache-control': 'no-store', 'x-request-id': this.ex.id, ...err.headers };
      const gh = this.ex.responseHeaders['x-github-request-id'];
      if (gh !== undefined) headers['x-github-request-id'] = gh;
      res.writeHead(err.status, headers);
      res.end(JSON.stringify(err.toJSON()));
      return this.finish(outcome);
    }
    const event = `event: error\ndata: ${JSON.stringify(err.toJSON())}\n\n`;
    this.finish(outcome);
    // Reset only once the error event is on the wire (a reset discards unsent DATA); a client
    // that stops reading does not hold the stream open: the reset goes out after 1 s regardless.
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

  finish(outcome: Outcome): void {
    if (this.finished) return;
    this.finished = true;
    const ex = this.ex;
    const now = performance.now();
    const m = this.gw.metrics;
    if (this.stallTimer !== undefined) this.clearStall();
    if (this.guard !== undefined) { this.guard.upstreamInflight--; this.guard = undefined; }
    if (this.countedIp !== undefined) { this.gw.clientInflight.release(this.countedIp); this.countedIp = undefined; }
    if (outcome === 'cancelled_before_forward') m.cancelledBeforeForward.inc();
    const model = ex.route.model;
    const up = ex.route.upstream || 'none';
    const arm = ex.labels.arm ?? '';
    m.inflight.dec();
    m.requests.labels(this.path, model, up, outcome, statusText(this.status), arm).inc();
    m.duration.labels(this.path, model, up, outcome, arm).observe((now - ex.startedAt) / 1000);
    if (ex.firstByteAt > 0) m.ttfb.labels(this.path, model, up, arm).observe((ex.firstByteAt - ex.startedAt) / 1000);
    // An upstream 5xx relayed as-is still means this instance is failing its users.
    if (outcome === 'ok') this.gw.health.record(this.status < 500);
    else if (outcome === 'local') this.gw.health.record(true);
    else if (outcome === 'upstream_error' || outcome === 'upstream_aborted' || outcome === 'error') this.gw.health.record(false);
    if (this.p.done.length) this.p.runDone(ex, outcome);
    this.rt.leave(this.ex);
  }
}

/**
 * The request as it goes upstream: the upstream model name set, the client's bytes reused when
 * no step changed the body, headers from the allow-list plus steps' (never the client's
 * Authorization; the upstream client adds the upstream's own credential).
 */
export function outboundRequest(
  ex: GatewayExchange, upstream: string, forward: readonly string[], path: RoutePath,
  incoming: IncomingHttpHeaders | undefined, rawBody: Buffer | undefined,
): OutboundRequest {
  if (ex.body.model !== ex.route.upstreamModel) ex.setBody('/model', ex.route.upstreamModel);
  let body: Buffer;
  try {
    body = ex.bodyChanged || rawBody === undefined ? Buffer.from(JSON.stringify(ex.body)) : rawBody;
  } catch {
    // JSON.parse accepts nesting that JSON.stringify cannot re-serialise (stack depth).
    throw new GatewayError('GW_ERR_REQ_INVALID_BODY', ['the body is nested too deeply']);
  }
  const headers: Record<string, string> = { 'content-type': 'application/json', 'x-request-id': ex.id };
  const accept = incoming?.accept;
  headers.accept = typeof accept === 'string' ? accept : 'application/json, text/event-stream';
  if (incoming) {
    for (const n of forward) {
      const v = incoming[n];
      if (typeof v === 'string' && n !== 'authorization') headers[n] = v;
    }
  }
  const extra = ex.upstreamHeaders;
  for (const k in extra) if (k !== 'authorization') headers[k] = extra[k]!;
  return { upstream, path: path === '/v1/chat/completions' ? '/v1/chat/completions' : '/v1/completions', headers, body };
}

/**
 * The last look's wait: one turn of the event loop (setImmediate runs after the poll phase in
 * which the request was read), so input nghttp2 had already received from the same read, such as
 * an RST_STREAM right behind the request's DATA, has been processed. HTTP/1.1 needs a second
 * turn: libuv returns from a short read before it reads the EOF behind it, so a FIN sent with the
 * request is seen only at the next poll (which does not block while an immediate is pending).
 */
function lastLook(call: Call, turns: number): void {
  if (turns > 0) setImmediate(lastLook, call, turns - 1);
  else call.forwardNow();
}

/** The stall timer fired: a client that took some bytes meanwhile gets another period. */
function stallCheck(call: Call, ms: number): void {
  call.stallTimer = undefined;
  if (call.finished) return;
  const len = call.res.writableLength;
  if (len < call.stallLength) {
    call.stallLength = len;
    call.stallTimer = setTimeout(stallCheck, ms, call, ms);
    return;
  }
  call.stalled();
}

/**
 * End the client's response abnormally: RST_STREAM on HTTP/2, the socket closed mid-body on
 * HTTP/1.1. destroy(err), not close(code): close() on a server stream first sends END_STREAM when
 * it can, which the client takes as a clean end; destroy(err) sends only the RST.
 */
function resetClient(res: AnyResponse, why: string): void {
  if (res.stream !== undefined) { res.stream.on('error', noop); res.stream.destroy(new Error(why)); }
  else res.destroy();
}

/** Whether the client's stream or connection is already gone (read from state, not events). */
function clientGone(res: AnyResponse): boolean {
  if (res.destroyed) return true;
  const st = res.stream;
  if (st !== undefined) return st.destroyed || st.closed;
  // The request's socket: a pipelined HTTP/1.1 response has none of its own until the ones
  // before it are done.
  const sock = res.req?.socket;
  return sock != null && (sock.destroyed || sock.readableEnded);
}

/** Stop an upstream response: RST_STREAM(CANCEL) on h2 (a plain destroy would send NO_ERROR), socket close on h1. */
const STATUS_TEXT: string[] = [];
function statusText(s: number): string { return (STATUS_TEXT[s] ??= String(s)); }

function noop(): void { /* the error is ours, already reported to the client */ }

function cancelUpstream(body: UpstreamResponse['body']): void {
  const h2 = body as unknown as { close?: (code: number) => void; rstCode?: number };
  // RST_STREAM(CANCEL), then destroy: a stream whose upstream already sent END_STREAM while we
  // had paused it (a client that does not read) is kept open by Node until its readable side is
  // consumed, so close() alone never ends it: it held its buffered response and its session's
  // stream count (a GOAWAYed session stayed draining forever). test/core/upstream-stream-release.test.ts
  if (typeof h2.close === 'function' && 'rstCode' in h2) h2.close(NGHTTP2_CANCEL);
  body.destroy();
}

function internal(e: unknown, log: Logger): GatewayError {
  log.error({ err: e instanceof Error ? e.message : String(e) }, 'internal error in request handling');
  return new GatewayError('GW_ERR_SERVER_INTERNAL');
}

export type { ErrorCode };
