/**
 * Talking to a `ghostgate start --workers N` process (test/helpers/gateway-process.ts) through its
 * admin plane and data plane: the calls every cluster test makes.
 *
 *   const c = clusterClient(g);
 *   const { body } = await c.admin<{ ok: boolean }>('/-/reload', { method: 'POST' });
 *   const pids = (await c.ping()).workers.map((w) => w.pid);
 */
import type { IncomingHttpHeaders } from 'node:http2';
import type { GatewayProcess } from './gateway-process.ts';
import { connect, post } from './h2.ts';

export interface PingWorker { slot: number; pid: number; healthy: boolean; requests: number; failures: number; configVersion: number }
export interface Ping { status: string; healthy: boolean; workers: PingWorker[] }

export interface ClusterClient {
  /** GET /_ping: each worker's health and request counts. */
  ping(): Promise<Ping>;
  /** One admin-plane request; the body parsed as JSON. */
  admin<T>(path: string, init?: RequestInit): Promise<{ status: number; body: T }>;
  /** The sum of the /metrics lines matching `re`. */
  metricValue(re: RegExp): Promise<number>;
  /**
   * One completion on a connection of its own (the kernel spreads connections over the workers
   * by a hash of the addresses, so many of these reach every worker).
   */
  oneShot(body?: object, headers?: Record<string, string>): Promise<{ status: number; headers: IncomingHttpHeaders }>;
}

export function clusterClient(g: Pick<GatewayProcess, 'adminUrl' | 'url'>): ClusterClient {
  return {
    ping: async () => (await fetch(`${g.adminUrl}/_ping`)).json() as Promise<Ping>,
    async admin<T>(p: string, init?: RequestInit) {
      const r = await fetch(`${g.adminUrl}${p}`, init);
      return { status: r.status, body: await r.json() as T };
    },
    async metricValue(re) {
      const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
      return text.split('\n').filter((l) => re.test(l)).reduce((n, l) => n + Number(l.split(' ').pop()), 0);
    },
    async oneShot(body = { prompt: 'x' }, headers = {}) {
      const s = await connect(g.url);
      try {
        const r = await post(s, '/v1/completions', body, headers);
        return { status: r.status, headers: r.headers };
      } finally { s.close(); }
    },
  };
}
