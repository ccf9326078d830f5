/**
 * The admin plane of a cluster, served by the primary on `admin.port`.
 *
 * - `GET /_ping`: 200 only while not draining, at least one worker is ready, and every ready
 *   worker's own health check passes (a worker that does not answer within 2 s counts as
 *   failing); the body lists each worker. This is what the load balancer checks.
 * - `GET /metrics`: every worker's registry as one (prom-client's `AggregatorRegistry`: counters
 *   and histograms summed; `ghostgate_healthy` and `ghostgate_config_version` take the lowest
 *   worker's value), plus `ghostgate_cluster_workers` and `ghostgate_cluster_worker_restarts_total`.
 * - `POST /-/reload`: validated once by the primary, then reloaded on every worker; the answer
 *   lists each worker's result and version (see primary.ts).
 * - `GET /-/config`: one worker's answer plus `workers: [{slot, pid, version, fingerprint, …}]`.
 * - `GET /-/upstreams`: `{workers: [{slot, pid, upstreams}]}`: pools are per worker.
 * - Anything else (`POST /-/token`, errors for unknown routes and methods) runs on one worker's
 *   admin app, unchanged: the answers are those of a single process.
 */
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import { GatewayError, JSON_TYPE } from '../errors.ts';
import { presented, refuseReloadBody } from '../server/admin.ts';
import { clientErrorReply, frameworkErrorReply, guardHttp1Server } from '../server/client-error.ts';
import { registerFaultMetrics } from '../process-faults.ts';
import type { Rpc } from './ipc.ts';

/** One worker, as the admin plane sees it. */
export interface AdminWorker { slot: number; worker: { process: { pid?: number } }; rpc: Rpc }

/** What the cluster's admin plane needs of the primary (core/cluster/primary.ts). */
export interface ClusterAdminState {
  readonly log: FastifyBaseLogger;
  readonly draining: boolean;
  readonly adminCredential: Buffer | undefined;
  readonly lastReload: unknown;
  readonly restarts: { readonly value: number };
  /** Workers that finished starting, in slot order. */
  ready(): AdminWorker[];
  reload(trigger: string): Promise<{ ok: boolean; error?: { code: string } }>;
}

const ADMIN_BODY_LIMIT = 64 * 1024;
const CALL_TIMEOUT_MS = 2_000;
/** Gauges whose sum over workers means nothing: the lowest value is the honest one. */
const LOWEST = new Set(['ghostgate_healthy', 'ghostgate_config_version']);
/** Hop-by-hop or recomputed headers not copied from a worker's injected answer. */
const SKIP = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive']);

function send(reply: FastifyReply, err: GatewayError): FastifyReply {
  if (err.headers) reply.headers(err.headers);
  return reply.code(err.status).header('content-type', JSON_TYPE).header('cache-control', 'no-store').send(JSON.stringify(err.toJSON()));
}

/** A worker's failed call, in its entry of an aggregated answer: the message, and its code if it has one. */
function failure(e: unknown): { error: string; code?: string } {
  return { error: e instanceof Error ? e.message : String(e), ...(e instanceof GatewayError ? { code: e.code } : {}) };
}

export function createClusterAdmin(p: ClusterAdminState): FastifyInstance {
  const app = Fastify({
    loggerInstance: p.log, logController: new LogController({ disableRequestLogging: true }), bodyLimit: ADMIN_BODY_LIMIT,
    // What Node refuses before any route gets the catalog's JSON, as on one process's admin plane.
    clientErrorHandler: clientErrorReply(), frameworkErrors: frameworkErrorReply(), http: { requireHostHeader: false },
  }) as unknown as FastifyInstance;
  guardHttp1Server(app.server);
  // Bodies go to a worker as they came: its admin app parses and answers (bad JSON included).
  app.removeAllContentTypeParsers();
  // An 'error' on the listening server with no listener is an uncaught exception: it would end
  // the primary, and with it every worker. Logged instead (a bind failure at start is listen's
  // to report); the workers go on serving (test/cluster/admin-error.test.ts).
  app.server.on('error', (e: NodeJS.ErrnoException) => { if (app.server.listening) p.log.error({ err: e.message, code: e.code }, 'admin plane server error'); });
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => { done(null, body); });

  const own = new Registry();
  new Gauge({ name: 'ghostgate_cluster_workers', help: 'Worker processes ready to serve', registers: [own], collect() { this.set(p.ready().length); } });
  registerFaultMetrics(own);
  new Counter({ name: 'ghostgate_cluster_worker_restarts_total', help: 'Workers that exited unasked and were replaced', registers: [own], collect() { this.reset(); this.inc(p.restarts.value); } });

  const someWorker = (what: string): AdminWorker => {
    const w = p.ready()[0];
    if (!w) throw new GatewayError('GW_ERR_CLUSTER_NO_WORKER', [what]);
    return w;
  };

  const ping = async (reply: FastifyReply): Promise<unknown> => {
    const slots = p.ready();
    const workers = await Promise.all(slots.map(async (s) => {
      try { return { slot: s.slot, pid: s.worker.process.pid, ...(await s.rpc.call('health', undefined, CALL_TIMEOUT_MS)) }; } catch (e) {
        return { slot: s.slot, pid: s.worker.process.pid, healthy: false, ...failure(e) };
      }
    }));
    const healthy = !p.draining && workers.length > 0 && workers.every((w) => w.healthy);
    reply.code(healthy ? 200 : 503).header('cache-control', 'no-store');
    return { status: healthy ? 'ok' : 'unhealthy', healthy, draining: p.draining, workers };
  };

  const metrics = async (reply: FastifyReply): Promise<string> => {
    const all = await Promise.all(p.ready().map((s) => s.rpc.call('metrics', undefined, CALL_TIMEOUT_MS).catch(() => [])));
    for (const list of all) for (const m of list as Array<{ name: string; aggregator: string }>) if (LOWEST.has(m.name)) m.aggregator = 'min';
    const merged = AggregatorRegistry.aggregate([...all as never[], await own.getMetricsAsJSON()]);
    reply.header('content-type', merged.contentType);
    return merged.metrics();
  };

  const config = async (): Promise<unknown> => {
    const w = someWorker('GET /-/config');
    const one = JSON.parse((await w.rpc.call('inject', { method: 'GET', url: '/-/config', headers: {} }, CALL_TIMEOUT_MS)).body) as Record<string, unknown>;
    const workers = await Promise.all(p.ready().map(async (s) => {
      try { return { slot: s.slot, pid: s.worker.process.pid, ...(await s.rpc.call('info', undefined, CALL_TIMEOUT_MS)) }; } catch (e) {
        return { slot: s.slot, pid: s.worker.process.pid, ...failure(e) };
      }
    }));
    return { ...one, lastReload: p.lastReload ?? one.lastReload, workers };
  };

  const upstreams = async (): Promise<unknown> => ({
    workers: await Promise.all(p.ready().map(async (s) => ({
      slot: s.slot, pid: s.worker.process.pid,
      upstreams: JSON.parse((await s.rpc.call('inject', { method: 'GET', url: '/-/upstreams', headers: {} }, CALL_TIMEOUT_MS)).body) as unknown,
    }))),
  });

  const reload = async (req: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    const digest = p.adminCredential;
    if (digest && !presented(req, digest)) throw new GatewayError('GW_ERR_ADMIN_UNAUTHORIZED', [], { headers: { 'www-authenticate': 'Bearer realm="ghostgate-admin"' } });
    // Bodies arrive unparsed here (see the content-type parser): the same check as one process's.
    const text = typeof req.body === 'string' ? req.body.trim() : '';
    if (text !== '') {
      let body: unknown;
      try { body = JSON.parse(text); } catch { throw new GatewayError('GW_ERR_REQ_INVALID_JSON'); }
      refuseReloadBody(body);
    }
    const r = await p.reload('admin');
    reply.code(r.ok ? 200 : r.error?.code === 'GW_ERR_CLUSTER_NO_WORKER' ? 503 : 400).header('cache-control', 'no-store');
    return r;
  };

  const forward = async (req: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    const w = someWorker(`${req.method} ${req.url.split('?')[0]}`);
    const headers: Record<string, string | string[] | undefined> = { ...req.headers };
    delete headers['content-length'];
    const r = await w.rpc.call('inject', { method: req.method, url: req.url, headers, ...(typeof req.body === 'string' ? { payload: req.body } : {}) }, 10_000);
    reply.code(r.statusCode);
    for (const [k, v] of Object.entries(r.headers)) if (v !== undefined && !SKIP.has(k)) reply.header(k, v);
    return reply.send(r.body);
  };

  app.route({
    method: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'], url: '*', exposeHeadRoute: false,
    handler: async (req, reply) => {
      const path = req.url.split('?')[0];
      const get = req.method === 'GET' || req.method === 'HEAD';
      if (path === '/_ping' && get) return ping(reply);
      if (path === '/metrics' && get) return metrics(reply);
      if (path === '/-/config' && get) return config();
      if (path === '/-/upstreams' && get) return upstreams();
      if (path === '/-/reload' && req.method === 'POST') return reload(req, reply);
      return forward(req, reply);
    },
  });
  app.setErrorHandler((err, _req, reply) => {
    if (err instanceof GatewayError) { send(reply, err); return; }
    const e = err as { code?: string; message?: string };
    if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') { send(reply, new GatewayError('GW_ERR_REQ_BODY_TOO_LARGE', [ADMIN_BODY_LIMIT])); return; }
    p.log.error({ err: e.message, code: e.code }, 'unexpected error on the cluster admin plane');
    send(reply, new GatewayError('GW_ERR_SERVER_INTERNAL'));
  });
  return app;
}
