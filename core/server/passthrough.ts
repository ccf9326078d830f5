/**
 * OpenAI routes off the completion path, and `GET /v1/models`.
 *
 * Passthrough (`passthrough:` in the config): `/v1/embeddings`, `/v1/moderations` and whatever
 * else an operator lists are forwarded as they are (body streamed, never parsed) to a named
 * upstream by @fastify/http-proxy, with the same rules for credentials as completions: the
 * client's bearer is verified (as the `auth` step does) and never forwarded; the upstream's own
 * credential is put in its place; only the upstream's `forwardHeaders` and the body's headers go
 * upstream. The policies' other steps (which read a completion body) do not run on these paths.
 *
 * The upstream is reached over HTTP/1.1 (https for an https:// upstream, with its `tls` settings),
 * on an undici pool of its own, not the HTTP/2 session pool: there is no upstream GOAWAY on this
 * path, and a request is not retried (a POST may have been processed).
 *
 * Cancellation: a client that leaves (RST_STREAM, a closed HTTP/1.1 socket) aborts the upstream
 * request at once, before or after its response headers: each request carries an AbortSignal
 * into undici (reply-from passes none of its own), and on HTTP/1.1 undici closes that upstream
 * connection. Shutdown: a passthrough request is in flight on its runtime like a completion, so
 * the grace period waits for it and its deadline cuts it (a coded 503 before the upstream's
 * headers; upstream aborted). How: core/server/passthrough-cancel.ts;
 * docs/operations.md#passthrough-routes.
 *
 * `GET /v1/models` (and `/v1/models/{id}`) is answered by the gateway from its logical models, in
 * OpenAI's shape, behind a gateway token when `auth:` is configured.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import proxy from '@fastify/http-proxy';
import { Counter } from 'prom-client';
import { Agent } from 'undici';
import { bearerToken } from '../auth/bearer.ts';
import { GatewayError, JSON_TYPE } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';
import type { GatewayMetrics } from '../metrics.ts';
import type { Runtime } from '../runtime.ts';
import type { Logger } from '../types.ts';
import { unsupportedTransferCoding } from '../request/body.ts';
import { cancellableDispatcher, clientGone, InFlight, resetOnBodyError, SIGNAL } from './passthrough-cancel.ts';
import type { PassthroughTarget } from './passthrough-table.ts';

/** What these routes read of the gateway. */
export interface PassthroughState {
  readonly runtime: Runtime;
  readonly metrics: GatewayMetrics;
  readonly log: Logger;
  readonly closing: boolean;
}

/** Request headers that describe the body; passed upstream besides the upstream's `forwardHeaders`. */
const BODY_HEADERS = ['content-type', 'content-length', 'content-encoding', 'accept', 'accept-encoding', 'x-request-id'];

function send(reply: FastifyReply, err: GatewayError, metrics: GatewayMetrics): FastifyReply {
  metrics.errors.labels(err.code).inc();
  if (err.headers) reply.headers(err.headers);
  return reply.code(err.status).header('content-type', JSON_TYPE).header('cache-control', 'no-store').send(JSON.stringify(err.toJSON()));
}

/**
 * The client's bearer, verified like the `auth` step does (same codes, same challenge header).
 * Throws (or, for a token's first sight, rejects with) a GatewayError; returns when the request may pass.
 */
function authenticate(req: FastifyRequest, rt: Runtime): unknown {
  const auth = rt.auth;
  if (!auth) throw new GatewayError('GW_ERR_AUTH_NOT_CONFIGURED');
  const token = bearerToken(req.headers.authorization);
  if (token === null) throw auth.reject('GW_ERR_AUTH_MALFORMED_TOKEN');
  if (token === undefined) throw auth.reject('GW_ERR_AUTH_MISSING_TOKEN');
  return auth.verify(token);
}

/** The upstream failure reply-from reports, onto the catalog. */
function upstreamError(error: { code?: string; statusCode?: number } | undefined, t: PassthroughTarget | undefined, timeoutMs: number): GatewayError {
  const name = t?.upstream ?? 'passthrough';
  const code = error?.code ?? '';
  let c: ErrorCode = 'GW_ERR_UPSTREAM_RESET';
  let args: Array<string | number> = [name];
  if (code === 'FST_REPLY_FROM_GATEWAY_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT') { c = 'GW_ERR_UPSTREAM_TIMEOUT'; args = [name, timeoutMs]; }
  else if (code === 'FST_REPLY_FROM_CONNECT_TIMEOUT' || code === 'FST_REPLY_FROM_SERVICE_UNAVAILABLE' || code === 'FST_REPLY_FROM_INTERNAL_SERVER_ERROR') c = 'GW_ERR_UPSTREAM_CONNECT';
  return new GatewayError(c, args);
}

/** Registers `GET /v1/models` and one proxied route (with everything under it) per `passthrough:` entry. */
export const passthroughPlugin = fp<{ gw: PassthroughState }>(async (app, { gw }) => {
  registerModels(app, gw);
  const rt = gw.runtime;
  const counter = (rt.metricsRegistry.getSingleMetric('ghostgate_passthrough_requests_total') as Counter<'path' | 'upstream' | 'status'> | undefined)
    ?? new Counter({ name: 'ghostgate_passthrough_requests_total', help: 'Requests forwarded by passthrough routes, by path, upstream and response status', labelNames: ['path', 'upstream', 'status'], registers: [rt.metricsRegistry] });
  for (const entry of rt.config.passthrough) {
    const u = rt.config.upstreams[entry.upstream]!;
    const initial = rt.passthrough.get(entry.path)!;
    const firstByteMs = u.timeouts.firstByteMs;
    // Its own context: reply-from's content-type parsers (the body as a stream) stay in here.
    await app.register(async (child: FastifyInstance) => {
      child.removeAllContentTypeParsers();
      /** The request's state: its entry as the running config has it (a reload may change its upstream's host or key). */
      const current = (req: FastifyRequest): InFlight | undefined => (req as FastifyRequest & { passthrough?: InFlight }).passthrough;
      // The pool is ours, not reply-from's: reply-from would never close it (its destroyAgent is off).
      const agent = new Agent({
        pipelining: 1,
        connections: u.pool.size,
        headersTimeout: firstByteMs,
        bodyTimeout: u.timeouts.idleMs,
        // The upstream's TLS settings; verification on unless it says otherwise (tested).
        connect: {
          timeout: u.timeouts.connectMs,
          rejectUnauthorized: u.tls?.rejectUnauthorized ?? true,
          ...(u.tls?.servername ? { servername: u.tls.servername } : {}),
          ...(initial.ca ? { ca: initial.ca } : {}),
        },
      });
      // Runs once the server has closed (every client connection gone, so no request is left).
      child.addHook('onClose', async () => { await agent.destroy(); });
      await child.register(proxy, {
        upstream: '',
        rewritePrefix: initial.basePath + entry.path,
        httpMethods: ['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'HEAD', 'OPTIONS'],
        undici: cancellableDispatcher(agent),
        preHandler: async (req: FastifyRequest, reply: FastifyReply) => {
          if (gw.closing) return send(reply, new GatewayError('GW_ERR_SERVER_SHUTTING_DOWN'), gw.metrics);
          const r = gw.runtime;
          const t = r.passthrough.get(entry.path);
          if (t === undefined || !t.methods.has(req.method)) return send(reply, new GatewayError('GW_ERR_REQ_NOT_FOUND', [req.method, req.url.split('?')[0]!]), gw.metrics);
          // limits.bodyBytes, by the declared length (the body is streamed, not read here).
          const limit = r.config.limits.bodyBytes;
          if (Number(req.headers['content-length'] ?? 0) > limit) return send(reply, new GatewayError('GW_ERR_REQ_BODY_TOO_LARGE', [limit]), gw.metrics);
          // A body still coded after Node undid the chunking would go upstream without its label.
          const coding = unsupportedTransferCoding(req.headers);
          if (coding !== undefined) return send(reply, coding, gw.metrics);
          if (t.auth) {
            try { await authenticate(req, r); } catch (e) {
              return send(reply, e instanceof GatewayError ? e : new GatewayError('GW_ERR_SERVER_INTERNAL'), gw.metrics);
            }
          }
          const f = new InFlight(t);
          (req as FastifyRequest & { passthrough?: InFlight }).passthrough = f;
          // From here until the response closes the request is in flight on this runtime.
          r.enter(f);
          const res = reply.raw;
          res.once('close', () => {
            r.leave(f);
            if (!res.writableEnded) f.clientGone();
          });
          // A client gone while it was authenticated: undici gets a signal already aborted.
          if (clientGone(res)) f.clientGone();
          return undefined;
        },
        replyOptions: {
          // Never retry: reply-from would resend a GET answered 503 up to 10 times (tested).
          retryDelay: () => null,
          getUpstream: (req: FastifyRequest) => current(req)?.target.origin ?? initial.origin,
          rewriteRequestHeaders: (req: FastifyRequest, headers: Record<string, string | string[] | undefined>) => {
            const f = current(req);
            const t = f?.target ?? initial;
            const out: Record<string | symbol, unknown> = { host: headers.host, [SIGNAL]: f?.signal };
            for (const h of BODY_HEADERS) if (headers[h] !== undefined) out[h] = headers[h];
            for (const h of t.forwardHeaders) if (headers[h] !== undefined) out[h] = headers[h];
            // The client's Authorization never goes upstream; the upstream's own credential does.
            delete out.authorization;
            if (t.credential) out[t.credential.header] = t.credential.value;
            return out;
          },
          onResponse: (req: FastifyRequest, reply: FastifyReply, res: { statusCode: number; stream: NodeJS.ReadableStream }) => {
            const f = current(req);
            counter.labels(entry.path, f?.target.upstream ?? entry.upstream, String(res.statusCode)).inc();
            resetOnBodyError(reply, res.stream);
            reply.send(res.stream);
          },
          onError: (reply: FastifyReply, { error }: { error: { code?: string; statusCode?: number } }) => {
            const f = current(reply.request);
            const t = f?.target;
            const upstream = t?.upstream ?? entry.upstream;
            // Aborted by us: the client left (nobody to answer), or the shutdown deadline (a coded 503).
            if (f?.why !== undefined) {
              counter.labels(entry.path, upstream, 'cancelled').inc();
              if (f.why === 'shutdown') send(reply, new GatewayError('GW_ERR_SERVER_SHUTTING_DOWN'), gw.metrics);
              return;
            }
            counter.labels(entry.path, upstream, 'error').inc();
            gw.log.warn({ path: entry.path, upstream: t?.upstream, err: error.code }, 'passthrough: upstream request failed');
            send(reply, upstreamError(error, t, firstByteMs), gw.metrics);
          },
        },
      } as never);
    }, { prefix: entry.path });
  }
}, { name: 'ghostgate-passthrough', fastify: '5.x' });

/** One model in OpenAI's list shape. */
interface ModelObject { id: string; object: 'model'; created: number; owned_by: string }

/** `GET /v1/models` and `GET /v1/models/{id}`: the gateway's logical models, as OpenAI lists them. */
function registerModels(app: FastifyInstance, gw: PassthroughState): void {
  const guard = async (req: FastifyRequest, reply: FastifyReply): Promise<boolean> => {
    const rt = gw.runtime;
    if (!rt.auth) return true;
    try { await authenticate(req, rt); return true; } catch (e) {
      send(reply, e instanceof GatewayError ? e : new GatewayError('GW_ERR_SERVER_INTERNAL'), gw.metrics);
      return false;
    }
  };
  const model = (rt: Runtime, id: string): ModelObject => ({ id, object: 'model', created: Math.floor(rt.loadedAt.getTime() / 1000), owned_by: 'ghostgate' });
  app.get('/v1/models', async (req, reply) => {
    if (!(await guard(req, reply))) return reply;
    const rt = gw.runtime;
    return reply.header('cache-control', 'no-store').send({ object: 'list', data: Object.keys(rt.config.models).map((id) => model(rt, id)) });
  });
  app.get('/v1/models/:id', async (req, reply) => {
    if (!(await guard(req, reply))) return reply;
    const rt = gw.runtime;
    const id = (req.params as { id: string }).id;
    // An alias names its logical model (as completions resolve it).
    const logical = rt.models.get(id)?.model;
    if (logical === undefined) return send(reply, new GatewayError('GW_ERR_ROUTE_UNKNOWN_MODEL', [id]), gw.metrics);
    return reply.header('cache-control', 'no-store').send(model(rt, logical));
  });
}
