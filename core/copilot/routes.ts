/**
 * The Copilot front door on the data plane: what GitHub's Copilot language server calls on the
 * host it takes for the GitHub API (`GH_COPILOT_API_URL`), answered from ghostgate's own auth.
 *
 *   GET  /copilot_internal/v2/token   API key or IdP token → ghostgate token, Copilot's envelope
 *   GET  /copilot_internal/user       404 (the client carries on without a user record)
 *   GET  /models                      200, empty lists (the client's model pickers stay on defaults)
 *   GET  /telemetry                   200, an empty experiments config (or 404 with experiments: false)
 *   POST /telemetry                   204, dropped (the client posts some events even with telemetry off)
 *
 * The client refuses any reply from that host without an `x-github-request-id` header, or with a
 * 5xx ("does not appear to originate from GitHub"): while the front door is enabled, every reply
 * Fastify sends carries one (this plugin's onRequest hook), and the completion route adds its own
 * (data plane). Routes are registered once; whether they answer follows the running config, so
 * enabling or disabling the front door is a reload.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { Counter } from 'prom-client';
import { GatewayError } from '../errors.ts';
import type { GatewayState } from '../request/state.ts';
import { ENDPOINT_NAMES } from './config.ts';
import type { CompiledCopilot, EndpointName } from './config.ts';

/** The header the Copilot client requires on every reply of its API host. */
export const GITHUB_REQUEST_ID = 'x-github-request-id';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** A Host / :authority we are willing to echo back in `endpoints` (name or IP, optional port). */
const AUTHORITY = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;

const EXPERIMENTS = '{"Configs":[{"Id":"vscode","Parameters":{}}],"AssignmentContext":""}';
const MODELS = '{"object":"list","data":[],"models":[]}';

/** The id for `x-github-request-id`: the client's `x-request-id` when it is sane, else a new one. */
export function githubRequestId(h: FastifyRequest['headers']): string {
  const rid = h['x-request-id'];
  return typeof rid === 'string' && REQUEST_ID.test(rid) ? rid : randomUUID();
}

/** State the front door reads: the data plane's, plus the listener addresses (for default endpoints). */
export type CopilotGatewayState = GatewayState & { readonly addresses?: { readonly cleartext: string; readonly tls?: string } };

type Route = 'token' | 'user' | 'models' | 'telemetry';

/**
 * Register the front door. Wrapped with fastify-plugin: its onRequest hook must see every
 * request of the instance (unknown paths too), since the client checks the header on all of them.
 */
export const copilotPlugin = fp<{ gw: CopilotGatewayState }>(async (app, opts) => { registerCopilot(app, opts.gw); }, {
  name: 'ghostgate-copilot',
  fastify: '5.x',
});

export function registerCopilot(app: FastifyInstance, gw: CopilotGatewayState): void {
  const metric = (gw.metrics.registry.getSingleMetric('ghostgate_copilot_front_door_total') as Counter<'route' | 'status'> | undefined)
    ?? new Counter({ name: 'ghostgate_copilot_front_door_total', help: 'Replies of the Copilot front door by route and status', labelNames: ['route', 'status'], registers: [gw.metrics.registry] });

  // Cost while disabled: one property read per request Fastify handles (the HTTP/2 fast lane
  // never gets here). Enabled: one regex test on x-request-id (or a UUID) and one header.
  app.addHook('onRequest', (req, reply, done) => {
    if (gw.runtime.copilot !== undefined) reply.header(GITHUB_REQUEST_ID, githubRequestId(req.headers));
    done();
  });

  const on = (route: Route, fn: (cp: CompiledCopilot, req: FastifyRequest, reply: FastifyReply) => unknown) =>
    async (req: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
      const cp = gw.runtime.copilot;
      // Disabled: exactly what the gateway answers for any unknown path.
      if (cp === undefined) throw new GatewayError('GW_ERR_REQ_NOT_FOUND', [req.method, req.url.split('?')[0]!]);
      reply.header('cache-control', 'no-store');
      try {
        return await fn(cp, req, reply);
      } finally {
        // Counted here (errors included: the data plane's error handler answers thrown ones).
        reply.raw.once('finish', () => metric.labels(route, String(reply.statusCode)).inc());
      }
    };

  app.get('/copilot_internal/v2/token', on('token', async (cp, req) => {
    const auth = gw.runtime.auth;
    // compileCopilot refuses a config without auth; a reload cannot leave one half-built.
    if (auth === undefined) throw new GatewayError('GW_ERR_AUTH_NOT_CONFIGURED');
    const out = await auth.exchange({ headers: { authorization: asBearer(req.headers.authorization) }, body: undefined, ip: req.ip });
    return {
      token: out.token,
      expires_at: out.expires_at,
      refresh_in: out.refresh_in,
      endpoints: cp.endpoints ?? derive(cp, req, gw),
      // Copilot's envelope: no usage telemetry asked of the client.
      telemetry: 'disabled',
      sku: 'ghostgate',
    };
  }));

  app.get('/copilot_internal/user', on('user', (_cp, req) => {
    throw new GatewayError('GW_ERR_REQ_NOT_FOUND', [req.method, '/copilot_internal/user']);
  }));

  app.get('/models', on('models', (_cp, _req, reply) => {
    reply.type('application/json');
    return MODELS;
  }));

  app.get('/telemetry', on('telemetry', (cp, req, reply) => {
    if (!cp.experiments) throw new GatewayError('GW_ERR_REQ_NOT_FOUND', [req.method, '/telemetry']);
    reply.type('application/json');
    return EXPERIMENTS;
  }));

  // Telemetry events (the client posts some even with telemetry off): accepted and dropped, never parsed.
  app.post('/telemetry', on('telemetry', (_cp, _req, reply) => { reply.code(204); return ''; }));
}

/**
 * GitHub's API takes `Authorization: token <credential>`; the language server sends `Bearer`.
 * Both reach the exchange as Bearer; anything else is passed on for it to refuse.
 */
function asBearer(h: string | string[] | undefined): string | string[] | undefined {
  if (typeof h === 'string' && h.length > 6 && h.slice(0, 6).toLowerCase() === 'token ') return `Bearer ${h.slice(6)}`;
  return h;
}

/** Endpoints from the origin the request arrived on (its scheme and Host), for those not in config. */
function derive(cp: CompiledCopilot, req: FastifyRequest, gw: CopilotGatewayState): Record<EndpointName, string> {
  const tls = (req.raw.socket as { encrypted?: boolean } | null)?.encrypted === true;
  const host = req.headers[':authority'] ?? req.headers.host;
  let origin: string;
  if (typeof host === 'string' && AUTHORITY.test(host)) origin = `${tls ? 'https' : 'http'}://${host}`;
  else origin = (tls ? gw.addresses?.tls : gw.addresses?.cleartext) ?? gw.addresses?.cleartext ?? '';
  const out = {} as Record<EndpointName, string>;
  for (const n of ENDPOINT_NAMES) out[n] = cp.partial[n] ?? origin;
  return out;
}
