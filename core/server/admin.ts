/**
 * The admin plane, on its own listener (loopback by default): health for the load balancer,
 * the effective config (secrets redacted), reload, metrics, and token minting.
 *
 * Every answer that is not a success is `{error: {code, message}}` from the catalog, as on the
 * data plane (unknown route, wrong method, bad JSON, wrong content type, too large; and what
 * Node refuses before any route: a request it cannot parse, a bad `Host`, an `Expect` other than
 * 100-continue: core/server/client-error.ts).
 *
 * The routes that change state (POST /-/reload, POST /-/token) take `Authorization: Bearer
 * <admin.credential>` when a credential is configured (compared in constant time). Minting
 * also needs one unless `auth.dev` is on: a token with any claims is a key to the data plane.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { bearerToken } from '../auth/bearer.ts';
import { parseMintRequest } from '../auth/mint-request.ts';
import { clientErrorReply, frameworkErrorReply, guardHttp1Server } from './client-error.ts';
import type { LoadedConfig } from '../config/load.ts';
import { ConfigErrors, GatewayError, JSON_TYPE } from '../errors.ts';
import { FORBIDDEN_KEYS } from '../safe-object.ts';
import { redact, secretReader } from '../secrets.ts';
import type { GatewayMetrics } from '../metrics.ts';
import type { HealthMonitor } from '../health.ts';
import type { Runtime } from '../runtime.ts';
import { deploymentSets, registerDeploymentMetrics } from '../upstream/deployment-metrics.ts';

/**
 * What the admin plane reads and drives: the narrow view of the gateway it is given (as the data
 * plane is given its own), so this module does not depend on the Gateway class.
 */
export interface AdminState {
  readonly runtime: Runtime;
  readonly metrics: GatewayMetrics;
  readonly health: HealthMonitor;
  readonly log: FastifyBaseLogger;
  /** SHA-256 of `admin.credential`, or undefined when none is set. */
  readonly adminCredential: Buffer | undefined;
  /** The last reload's result, shown by GET /-/config. */
  readonly lastReload: unknown;
  /** Load, validate and swap in the config; `ok: false` keeps the running one. */
  reload(trigger: string): Promise<{ ok: boolean }>;
}

/** Admin request bodies are small JSON objects (`POST /-/token`). */
const ADMIN_BODY_LIMIT = 64 * 1024;

/** The routes and their methods; another method on a known path is a 405. */
const ROUTES: Record<string, string> = {
  '/_ping': 'GET', '/-/config': 'GET', '/-/upstreams': 'GET', '/metrics': 'GET', '/-/reload': 'POST', '/-/token': 'POST',
};

/**
 * The SHA-256 of the configured admin credential (compared by digest, so the comparison's time
 * depends on neither secret's length), or undefined. Throws ConfigErrors when it cannot be read.
 */
export function readAdminCredential(loaded: LoadedConfig, env: NodeJS.ProcessEnv = process.env): Buffer | undefined {
  const ref = loaded.config.admin.credential;
  if (!ref) return undefined;
  try {
    const secret = secretReader(loaded.dir, env)(ref);
    return createHash('sha256').update(secret).digest();
  } catch (e) {
    const g = e instanceof GatewayError ? e : new GatewayError('GW_ERR_CONFIG_SECRET', ['admin.credential', String(e)]);
    throw new ConfigErrors([new GatewayError(g.code, [], { message: g.message, location: loaded.source.locate(['admin', 'credential']) })]);
  }
}

/** True if the request carries the admin credential. */
export function presented(req: FastifyRequest, digest: Buffer): boolean {
  const b = bearerToken(req.headers.authorization);
  const got = createHash('sha256').update(typeof b === 'string' ? b : '').digest();
  return timingSafeEqual(got, digest) && typeof b === 'string';
}

/**
 * `POST /-/reload` takes no body: it reloads the config file the gateway started with. A body
 * with fields (`{"file": …}`) is refused rather than ignored; none, or `{}`, is fine.
 */
export function refuseReloadBody(body: unknown): void {
  if (body === undefined || body === null) return;
  if (typeof body === 'object' && !Array.isArray(body) && Object.keys(body).length === 0) return;
  const what = typeof body === 'object' && !Array.isArray(body) ? `fields ${Object.keys(body).map((k) => `"${k}"`).join(', ')}` : 'a body';
  throw new GatewayError('GW_ERR_REQ_INVALID_BODY', [`POST /-/reload takes no body (it reloads the config file the gateway started with); got ${what}`]);
}

function send(reply: FastifyReply, err: GatewayError): FastifyReply {
  if (err.headers) reply.headers(err.headers);
  return reply.code(err.status).header('content-type', JSON_TYPE).header('cache-control', 'no-store').send(JSON.stringify(err.toJSON()));
}

/** Fastify's own errors (body parsing, limits) onto the catalog. */
function toGatewayError(err: unknown, gw: AdminState): GatewayError {
  if (err instanceof GatewayError) return err;
  const e = err as { code?: string; statusCode?: number; message?: string };
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new GatewayError('GW_ERR_REQ_UNSUPPORTED_MEDIA_TYPE');
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new GatewayError('GW_ERR_REQ_BODY_TOO_LARGE', [ADMIN_BODY_LIMIT]);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY': return new GatewayError('GW_ERR_REQ_INVALID_JSON');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH': return new GatewayError('GW_ERR_REQ_BAD_REQUEST', ['Content-Length does not match the body']);
    default:
      if (err instanceof SyntaxError) return new GatewayError('GW_ERR_REQ_INVALID_JSON');
      if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) return new GatewayError('GW_ERR_REQ_BAD_REQUEST', [e.message ?? 'invalid request']);
      gw.log.error({ err: e.message, code: e.code }, 'unexpected error on the admin plane');
      return new GatewayError('GW_ERR_SERVER_INTERNAL');
  }
}

export function createAdminServer(gw: AdminState, logger: FastifyBaseLogger): FastifyInstance {
  const app = Fastify({
    loggerInstance: logger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: ADMIN_BODY_LIMIT,
    frameworkErrors: frameworkErrorReply(), clientErrorHandler: clientErrorReply(),
    // Node's bare 400 for a missing Host is replaced by guardHttp1Server's coded one.
    http: { requireHostHeader: false },
  }) as unknown as FastifyInstance;
  guardHttp1Server(app.server);
  // An 'error' on the listening server with no listener would be an uncaught exception ending
  // the gateway (test/cluster/admin-error.test.ts); logged instead (a bind failure: listen reports it).
  app.server.on('error', (e: NodeJS.ErrnoException) => { if (app.server.listening) gw.log.error({ err: e.message, code: e.code }, 'admin plane server error'); });
  // JSON only; prototype keys (FORBIDDEN_KEYS: `__proto__`, `constructor`, `prototype`) refused.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = body as string;
    if (text.trim() === '') { done(null, undefined); return; }
    try {
      const v = JSON.parse(text, (k, val: unknown) => {
        if (FORBIDDEN_KEYS.has(k)) throw new SyntaxError('forbidden key');
        return val;
      }) as unknown;
      done(null, v);
    } catch {
      done(new GatewayError('GW_ERR_REQ_INVALID_JSON'), undefined);
    }
  });

  /** Guard for the routes that change state: the credential when one is configured. */
  const needsCredential = async (req: FastifyRequest): Promise<void> => {
    const digest = gw.adminCredential;
    if (digest && !presented(req, digest)) throw new GatewayError('GW_ERR_ADMIN_UNAUTHORIZED', [], { headers: { 'www-authenticate': 'Bearer realm="ghostgate-admin"' } });
  };

  app.get('/_ping', async (_req, reply) => {
    const s = gw.health.status();
    gw.metrics.healthy.set(s.healthy ? 1 : 0);
    reply.code(s.healthy ? 200 : 503).header('cache-control', 'no-store');
    return { status: s.healthy ? 'ok' : 'unhealthy', ...s, configVersion: gw.runtime.version };
  });

  app.get('/-/config', async () => {
    const rt = gw.runtime;
    return {
      version: rt.version,
      loadedAt: rt.loadedAt.toISOString(),
      file: rt.loaded.file,
      fingerprint: rt.loaded.fingerprint,
      lastReload: gw.lastReload,
      config: redact(rt.config),
      policies: rt.loaded.policies.map((p) => ({ name: p.policy.name, file: p.file, enabled: p.policy.enabled, match: p.policy.match, steps: p.policy.steps.map((s) => ({ use: s.use, name: s.name, when: s.when, params: redact(s.params) })) })),
    };
  });

  app.post('/-/reload', { preHandler: needsCredential }, async (req, reply) => {
    refuseReloadBody(req.body);
    const r = await gw.reload('admin');
    reply.code(r.ok ? 200 : 400);
    return r;
  });

  // Mint a token from the running gateway (its signing key, even an ephemeral dev key).
  app.post('/-/token', { preHandler: needsCredential }, async (req, reply) => {
    const auth = gw.runtime.auth;
    if (!auth) throw new GatewayError('GW_ERR_AUTH_NOT_CONFIGURED');
    const dev = (gw.runtime.config.auth as { dev?: boolean } | undefined)?.dev === true;
    if (!dev && !gw.adminCredential) throw new GatewayError('GW_ERR_ADMIN_MINT_FORBIDDEN');
    const { sub, ttlSeconds, claims } = parseMintRequest(req.body);
    reply.header('cache-control', 'no-store');
    return auth.mint({ ...claims, sub }, ttlSeconds);
  });

  registerDeploymentMetrics(gw.metrics.registry, () => deploymentSets(gw.runtime.models));
  app.get('/-/upstreams', async () => {
    const out: Record<string, Record<string, unknown>> = {};
    for (const [name, u] of gw.runtime.upstreams) out[name] = { url: u.config.url, protocol: u.config.protocol, ...u.stats() };
    // Each deployment (of a model with `deployments`) under the upstream it runs on.
    const now = Date.now();
    for (const set of deploymentSets(gw.runtime.models)) {
      for (const d of set.list) ((out[d.config.upstream]!.deployments ??= []) as unknown[]).push({ logicalModel: set.model, ...d.state(now) });
    }
    return out;
  });

  app.get('/metrics', async (_req, reply) => {
    gw.metrics.healthy.set(gw.health.status().healthy ? 1 : 0);
    reply.header('content-type', gw.metrics.registry.contentType);
    return gw.metrics.registry.metrics();
  });

  for (const [url, method] of Object.entries(ROUTES)) {
    app.route({
      method: ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'].filter((m) => m !== method), url,
      // A GET route also answers HEAD (Fastify adds it).
      handler: (req, reply) => { send(reply, new GatewayError('GW_ERR_REQ_METHOD_NOT_ALLOWED', [req.method, url])); },
    });
  }
  app.setNotFoundHandler((req, reply) => { send(reply, new GatewayError('GW_ERR_REQ_NOT_FOUND', [req.method, req.url.split('?')[0]!])); });
  app.setErrorHandler((err, _req, reply) => { send(reply, toGatewayError(err, gw)); });
  return app;
}
