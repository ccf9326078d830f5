/**
 * The data plane as a Fastify plugin: the completion routes (a thin adapter onto the one request
 * path in core/request/), the token exchange routes, 405 for known paths with another method,
 * and the error mapping. JSON bodies of every route are read and parsed by the one body reader
 * (core/request/body.ts) from the content-type parser; errors are answered by the one error
 * reply (core/request/error-reply.ts).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { GatewayError } from '../errors.ts';
import { readJsonBody } from '../request/body.ts';
import { errorHeaders, toGatewayError } from '../request/error-reply.ts';
import type { ClientResponse } from '../request/response.ts';
import { ROUTES } from '../request/routes.ts';
import type { RoutePath } from '../request/routes.ts';
import { serveCompletion } from '../request/serve.ts';
import type { GatewayState } from '../request/state.ts';
import { drainThen } from './fast-lane.ts';

export type { GatewayState } from '../request/state.ts';

type RawBodyRequest = FastifyRequest & { rawBody?: Buffer };

/**
 * Wrapped with fastify-plugin so its content-type parser, not-found and error handlers apply to
 * the whole instance (not an encapsulated child).
 */
export const dataPlanePlugin = fp<{ gw: GatewayState }>(async (app, opts) => { registerDataPlane(app, opts.gw); }, {
  name: 'ghostgate-data-plane',
  fastify: '5.x',
});

/**
 * Register the completion routes, the token exchange routes and the error mapping on `app`.
 * `notFound: false` leaves unknown paths to the application (ghostgate embedded in someone else's
 * Fastify app: a not-found handler set in a child context would answer for the whole app).
 */
export function registerDataPlane(app: FastifyInstance, gw: GatewayState, opts: { notFound?: boolean } = {}): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', (req, payload, done) => {
    const limits = gw.runtime.config.limits;
    readJsonBody(payload, req.headers, limits.bodyBytes, limits.jsonDepth, (err, raw, body) => {
      if (err !== undefined) return done(err, undefined);
      (req as RawBodyRequest).rawBody = raw;
      done(null, body);
    }, { budget: gw.bodyBudget, ip: req.socket?.remoteAddress ?? '', caps: limits });
  });

  for (const path of ROUTES) {
    app.post(path, (request, reply) => { completion(gw, path, request as RawBodyRequest, reply); });
  }
  registerAuthRoutes(app, gw);
  // Known paths with another method: 405, not 404.
  for (const path of [...ROUTES, '/v1/token']) {
    app.route({
      method: ['GET', 'PUT', 'DELETE', 'PATCH'], url: path,
      handler: (req, reply) => { sendError(reply, new GatewayError('GW_ERR_REQ_METHOD_NOT_ALLOWED', [req.method, path]), gw); },
    });
  }
  if (opts.notFound !== false) app.setNotFoundHandler((req, reply) => sendError(reply, new GatewayError('GW_ERR_REQ_NOT_FOUND', [req.method, req.url.split('?')[0]!]), gw));
  app.setErrorHandler((err, _req, reply) => sendError(reply, toGatewayError(err, gw), gw));
}

/** The Fastify adapter of the completion path: hand the raw response to the one request path. */
function completion(gw: GatewayState, route: RoutePath, request: RawBodyRequest, reply: FastifyReply): void {
  gw.lanes.fastify++;
  reply.hijack();
  serveCompletion(gw, {
    route, pathModel: route === '/v1/engines/:model/completions' ? (request.params as { model: string }).model : undefined,
    headers: request.headers, ip: request.ip, protocol: request.raw.httpVersionMajor === 2 ? 'h2' : 'h1',
    raw: request.rawBody, body: request.body, res: reply.raw as unknown as ClientResponse,
  });
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

/**
 * The one error reply, through Fastify's reply (routes that are not hijacked). On an HTTP/1.1
 * connection that closes after it, with the request body not all read (a 413 before the body),
 * the rest of the body is read first, as the fast lane does (`drainThen`): else the client gets
 * a TCP reset instead of the reply.
 */
function sendError(reply: FastifyReply, err: GatewayError, gw: GatewayState): void {
  gw.metrics.errors.labels(err.code).inc();
  const github = reply.getHeader('x-github-request-id');
  const send = (): void => { reply.code(err.status).headers(errorHeaders(err, gw, reply.request.headers, { github: typeof github === 'string' ? github : undefined })).send(JSON.stringify(err.toJSON())); };
  const req = reply.request.raw;
  if (req.httpVersionMajor === 1 && !req.complete && !reply.raw.shouldKeepAlive) return drainThen(req, send);
  send();
}
