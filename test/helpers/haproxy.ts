/**
 * HAProxy in front of gateway processes, for the end-to-end tests in test/deploy/: a restartable
 * `ghostgate start` instance, HAProxy started on docs/deploy/haproxy.cfg, its servers' state over
 * the runtime API, and typing users on one HTTP/2 connection.
 */
import { execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import type { ClientHttp2Session } from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import { collect, firstData, open } from './h2.ts';
import { spawnGatewayCli } from './gateway-process.ts';
import { ROOT, spawnTracked, stopTracked } from './proc.ts';

export const HAPROXY_CFG = path.join(ROOT, 'docs/deploy/haproxy.cfg');

export function findHaproxy(): string | undefined {
  for (const p of ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy']) if (existsSync(p)) return p;
  try { return execFileSync('sh', ['-c', 'command -v haproxy'], { encoding: 'utf8' }).trim() || undefined; } catch { return undefined; }
}


export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); });
  });
}

export interface ModelStats { requests: number; aborted: number; completed: number }
export const modelStats = async (m: { url: string }): Promise<ModelStats> => (await fetch(`${m.url}/_stats`)).json() as Promise<ModelStats>;

/**
 * One gateway instance, restartable on the same ports (HAProxy's config names them): the first
 * start binds free ones (port 0), later starts bind those.
 */
export class Instance {
  child: ChildProcess | undefined;
  exited: Promise<number | string | null> = Promise.resolve(null);
  readonly configFile: string;
  readonly name: string;
  port = 0;
  adminPort = 0;
  readonly #config: (port: number, adminPort: number) => string;
  /**
   * `model`: the model server's URL (one upstream `local`), or an `upstreams:` + `models:` YAML
   * block. `health`: the `health:` YAML value (default: votes out fast, for the /_ping tests).
   */
  constructor(name: string, model: string, dir: string, health = '{ slo: 0.9, windowSeconds: 3, minRequests: 5 }') {
    this.name = name;
    const models = model.startsWith('http') ? [
      'upstreams:',
      `  local: { url: ${model}, protocol: h2c, pool: { size: 2 }, forwardHeaders: [x-ttft-ms, x-token-ms, x-tokens] }`,
      'models:',
      '  ghost-small: { upstream: local }',
    ].join('\n') : model;
    mkdirSync(path.join(dir, 'policies'), { recursive: true });
    this.configFile = path.join(dir, 'gateway.config.yaml');
    this.#config = (port, adminPort) => [
      `listen: { host: 127.0.0.1, port: ${port} }`,
      `admin: { host: 127.0.0.1, port: ${adminPort} }`,
      models,
      'defaultModel: ghost-small',
      'policies: [policies/*.yaml]',
      'reload: { watch: false }',
      'logging: { level: warn }',
      // Behind HAProxy every client is HAProxy's one address.
      'limits: { maxInflightPerClientIp: 0, maxConnectionsPerIp: 0 }',
      // By default, vote out fast: over 3 s, below 90% success with at least 5 requests.
      `health: ${health}`,
      // Fail /_ping for 3 s before closing: HAProxy's check (0.5 s x 2) takes it out first.
      'shutdown: { drainDelayMs: 3000, graceMs: 20000 }',
    ].join('\n') + '\n';
  }

  async start(t: { teardown(fn: () => unknown): void }): Promise<void> {
    writeFileSync(this.configFile, this.#config(this.port, this.adminPort));
    const g = await spawnGatewayCli(t, ['--config', this.configFile], { name: this.name });
    this.child = g.child;
    this.exited = g.exited;
    this.port = Number(/data plane\s+http:\/\/127\.0\.0\.1:(\d+)/.exec(g.banner)![1]);
    this.adminPort = Number(/^\s+admin\s+http:\/\/127\.0\.0\.1:(\d+)/m.exec(g.banner)![1]);
  }

  /** SIGTERM: the gateway drains (fails /_ping, then finishes its streams) and exits. */
  stop(): Promise<number | string | null> {
    this.child?.kill('SIGTERM');
    return this.exited;
  }

  async requestsServed(): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${this.adminPort}/metrics`)).text();
    return text.split('\n').filter((l) => l.startsWith('ghostgate_requests_total{')).reduce((n, l) => n + Number(l.split(' ').pop()), 0);
  }
}

/** `show servers state` over HAProxy's runtime API: server name → operational state (2 = up). */
export async function serverStates(socket: string): Promise<Record<string, number>> {
  const text = await new Promise<string>((resolve, reject) => {
    const c = net.connect(socket);
    let buf = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => { buf += d; });
    c.on('end', () => resolve(buf));
    c.on('error', reject);
    c.end('show servers state gateways\n');
  });
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    // be_id be_name srv_id srv_name srv_addr srv_op_state ...
    if (f.length > 6 && f[1] === 'gateways') out[f[3]!] = Number(f[5]);
  }
  return out;
}
export const UP = 2;

export interface LoadResult {
  ok: number; cancelled: number; errors: string[];
  /**
   * Each error with the model server its response came from (its `x-model-server`, '' if none),
   * and whether the body carried the gateway's SSE `event: error`.
   */
  failures: Array<{ from: string; what: string; errorEvent: boolean }>;
}

/**
 * Typing users on one HTTP/2 session: each sends completion after completion; 9 of every 20 are
 * cancelled (RST_STREAM CANCEL) once their first token arrives, the rest are read to [DONE].
 */
export function typingLoad(session: ClientHttp2Session, users: number): { stop(): Promise<LoadResult> } {
  const r: LoadResult = { ok: 0, cancelled: 0, errors: [], failures: [] };
  const fail = (what: string, from = '', text = ''): void => { r.errors.push(what); r.failures.push({ from, what, errorEvent: text.includes('event: error') }); };
  let running = true;
  const user = async (u: number): Promise<void> => {
    for (let i = 0; running; i++) {
      const cancel = (i + u) % 20 < 9;
      let st: http2.ClientHttp2Stream;
      try {
        st = open(session, '/v1/completions', { prompt: `def f${u}_${i}(`, stream: true }, { 'x-tokens': '12', 'x-token-ms': '5', 'x-ttft-ms': '20' });
      } catch (e) { fail(`user ${u} #${i}: could not open a stream: ${String(e)}`); return; }
      const res = collect(st);
      if (cancel) {
        await firstData(st);
        st.close(http2.constants.NGHTTP2_CANCEL);
        const d = await res;
        if (d.status !== 200) fail(`user ${u} #${i} (cancelled): status ${d.status} ${d.text.slice(0, 200)} ${d.error ?? ''}`, String(d.headers['x-model-server'] ?? ''), d.text);
        else r.cancelled++;
      } else {
        const d = await res;
        if (d.status !== 200 || !d.complete || d.events.at(-1) !== '[DONE]') fail(`user ${u} #${i}: status ${d.status} complete ${d.complete} ${d.text.slice(0, 200)} ${d.error ?? ''}`, String(d.headers['x-model-server'] ?? ''), d.text);
        else r.ok++;
      }
    }
  };
  const all = Array.from({ length: users }, (_, u) => user(u));
  return { async stop() { running = false; await Promise.all(all); return r; } };
}


/**
 * HAProxy on docs/deploy/haproxy.cfg in front of two gateway instances (started), on a free port;
 * resolves once it marks both up. Stopped by `t.teardown`. `cfg`: another config file (a test's
 * variant of the shipped one).
 */
type Gw = Pick<Instance, 'port' | 'adminPort'>;
export async function startHaproxy(t: { teardown(fn: () => unknown): void }, haproxy: string, dir: string, a: Gw, b: Gw, cfg = HAPROXY_CFG): Promise<{ url: string; states(): Promise<Record<string, number>> }> {
  const lbPort = await freePort();
  const socket = path.join(dir, 'haproxy.sock');
  const hp = spawnTracked(haproxy, ['-db', '-f', cfg], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: {
      ...process.env, HAPROXY_STATS_SOCKET: socket, HAPROXY_BIND: `127.0.0.1:${lbPort}`,
      GW1_ADDR: `127.0.0.1:${a.port}`, GW1_ADMIN_PORT: String(a.adminPort), GW2_ADDR: `127.0.0.1:${b.port}`, GW2_ADMIN_PORT: String(b.adminPort),
    },
  }, { node: false });
  let hpErr = '';
  hp.stderr!.setEncoding('utf8');
  hp.stderr!.on('data', (d: string) => { hpErr = (hpErr + d).slice(-20_000); });
  t.teardown(() => stopTracked(hp, 2000));
  const states = (): Promise<Record<string, number>> => serverStates(socket).catch(() => ({}));
  const until = Date.now() + 60_000;
  for (;;) {
    const s = await states();
    if (s.gw1 === UP && s.gw2 === UP) break;
    if (Date.now() > until) throw new Error(`HAProxy did not mark both gateways up\n${hpErr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `http://127.0.0.1:${lbPort}`, states };
}
