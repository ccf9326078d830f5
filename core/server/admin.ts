/**
 * The admin plane, on its own listener (loopback by default): health for the load balancer,
 * the effective config (secrets redacted), reload, metrics.
 */
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { redact } from '../secrets.ts';
import type { Gateway } from '../gateway.ts';

export function createAdminServer(gw: Gateway, logger: FastifyBaseLogger): FastifyInstance {
  const app = Fastify({ loggerInstance: logger, logController: new LogController({ disableRequestLogging: true }) }) as unknown as FastifyInstance;

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

  app.post('/-/reload', async (_req, reply) => {
    const r = await gw.reload('admin');
    reply.code(r.ok ? 200 : 400);
    return r;
  });

  // Mint a token from the running gateway (its signing key, even an ephemeral dev key).
  // Admin plane only: it is loopback by default, and minting is an operator's act.
  app.post('/-/token', async (req, reply) => {
    const auth = gw.runtime.auth;
    const b = (req.body ?? {}) as { sub?: unknown; ttlSeconds?: unknown; claims?: unknown };
    if (!auth) { reply.code(404); return { error: { code: 'GW_ERR_AUTH_NOT_CONFIGURED', message: 'Token exchange is not configured' } }; }
    if (typeof b.sub !== 'string' || b.sub === '') { reply.code(400); return { error: { code: 'GW_ERR_REQ_INVALID_BODY', message: 'Invalid request body: "sub" must be a non-empty string' } }; }
    const claims = b.claims !== null && typeof b.claims === 'object' ? b.claims as Record<string, unknown> : {};
    return auth.mint({ ...claims, sub: b.sub }, typeof b.ttlSeconds === 'number' ? b.ttlSeconds : undefined);
  });

  app.get('/-/upstreams', async () => {
    const out: Record<string, unknown> = {};
    for (const [name, u] of gw.runtime.upstreams) out[name] = { url: u.config.url, protocol: u.config.protocol, ...u.stats() };
    return out;
  });

  app.get('/metrics', async (_req, reply) => {
    gw.metrics.healthy.set(gw.health.status().healthy ? 1 : 0);
    reply.header('content-type', gw.metrics.registry.contentType);
    return gw.metrics.registry.metrics();
  });

  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({ error: { code: 'GW_ERR_REQ_NOT_FOUND', message: `No route for ${req.method} ${req.url}` } });
  });
  return app;
}
