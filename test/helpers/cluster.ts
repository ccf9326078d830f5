/**
 * Talking to a `ghostgate start --workers N` process (test/helpers/gateway-process.ts) through its
 * admin plane and data plane: the calls every cluster test makes.
 *
 *   const c = clusterClient(g);
 *   const { body } = await c.admin<{ ok: boolean }>('/-/reload', { method: 'POST' });
 *   const pids = (await c.ping()).workers.map((w) => w.pid);
 */
import { readFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http2';
import path from 'node:path';
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

/** A default policy of `steps` (YAML lines), then the step of test/cluster/fixtures/slot-2-faults.mjs. */
export function slot2Policy(steps: string[]): string {
  return ['name: default', 'match: { paths: [/v1/completions] }', 'steps:', ...steps, '  - use: slot-2-faults', ''].join('\n');
}

/**
 * Options for startGatewayProcess: a cluster whose worker 2 can be made to fail or to hold its
 * start (test/cluster/fixtures/slot-2-faults.mjs) by flag files in the gateway's folder.
 */
export function slot2Faults(steps: string[]): { files: Record<string, string>; extraConfig: string } {
  return {
    extraConfig: 'plugins: [./slot-2-faults.mjs]',
    files: {
      'slot-2-faults.mjs': readFileSync(path.join(import.meta.dirname, '../cluster/fixtures/slot-2-faults.mjs'), 'utf8'),
      'policies/default.yaml': slot2Policy(steps),
    },
  };
}
