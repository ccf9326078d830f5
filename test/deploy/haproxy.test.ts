/**
 * HAProxy in front of two gateways, end to end, with the shipped docs/deploy/haproxy.cfg (its
 * addresses from the environment): real HAProxy 2.6 (Debian's), two `ghostgate start` processes,
 * each with its own real model server, one HTTP/2 client connection to HAProxy.
 *
 * - cancels from the client reach the model through HAProxy (counted on the model servers);
 * - a gateway whose model fails votes itself out on /_ping, HAProxy stops sending to it, and it
 *   comes back after the model recovers;
 * - a rolling restart of both gateways under typing load with cancels: zero client errors, and
 *   the client's one connection to HAProxy stays up throughout;
 * - the region's own /_ping (for geo-DNS) fails once no gateway is up.
 *
 * Not here yet: "one of two deployments killed: zero client-visible errors" (#9 §4, third
 * bullet) needs deployments (upstream failover, #9 §1). TODO: once a model lists two
 * deployments, give each gateway two model servers and kill one mid-load inside `typingLoad`.
 *
 * Skipped, with a message, where haproxy is not installed (`.ci/run` installs Debian's).
 */
import { execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import type { ClientHttp2Session } from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { spawnModelServer } from '../model-server/fixtures/spawn.ts';
import type { SpawnedModelServer } from '../model-server/fixtures/spawn.ts';
import { collect, connect, firstData, open, until } from '../helpers/h2.ts';
import { NODE_BIN, ROOT, spawnTracked, stopTracked } from '../helpers/proc.ts';

const HAPROXY_CFG = path.join(ROOT, 'docs/deploy/haproxy.cfg');
const CLI = path.join(ROOT, 'bin/ghostgate.ts');

function findHaproxy(): string | undefined {
  for (const p of ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy']) if (existsSync(p)) return p;
  try { return execFileSync('sh', ['-c', 'command -v haproxy'], { encoding: 'utf8' }).trim() || undefined; } catch { return undefined; }
}


async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); });
  });
}

interface ModelStats { requests: number; aborted: number; completed: number }
const modelStats = async (m: { url: string }): Promise<ModelStats> => (await fetch(`${m.url}/_stats`)).json() as Promise<ModelStats>;

/**
 * One gateway instance, restartable on the same ports (HAProxy's config names them): the first
 * start binds free ones (port 0), later starts bind those.
 */
class Instance {
  child: ChildProcess | undefined;
  exited: Promise<number | string | null> = Promise.resolve(null);
  readonly configFile: string;
  readonly name: string;
  port = 0;
  adminPort = 0;
  readonly #config: (port: number, adminPort: number) => string;
  constructor(name: string, modelUrl: string, dir: string) {
    this.name = name;
    mkdirSync(path.join(dir, 'policies'), { recursive: true });
    this.configFile = path.join(dir, 'gateway.config.yaml');
    this.#config = (port, adminPort) => [
      `listen: { host: 127.0.0.1, port: ${port} }`,
      `admin: { host: 127.0.0.1, port: ${adminPort} }`,
      'upstreams:',
      `  local: { url: ${modelUrl}, protocol: h2c, pool: { size: 2 }, forwardHeaders: [x-ttft-ms, x-token-ms, x-tokens] }`,
      'models:',
      '  ghost-small: { upstream: local }',
      'defaultModel: ghost-small',
      'policies: [policies/*.yaml]',
      'reload: { watch: false }',
      'logging: { level: warn }',
      // Behind HAProxy every client is HAProxy's one address.
      'limits: { maxInflightPerClientIp: 0, maxConnectionsPerIp: 0 }',
      // Vote out fast: over 3 s, below 90% success with at least 5 requests.
      'health: { slo: 0.9, windowSeconds: 3, minRequests: 5 }',
      // Fail /_ping for 3 s before closing: HAProxy's check (0.5 s x 2) takes it out first.
      'shutdown: { drainDelayMs: 3000, graceMs: 20000 }',
    ].join('\n') + '\n';
  }

  async start(t: { teardown(fn: () => unknown): void }): Promise<void> {
    writeFileSync(this.configFile, this.#config(this.port, this.adminPort));
    const child = spawnTracked(NODE_BIN, [CLI, 'start', '--config', this.configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', (code, sig) => resolve(code ?? sig)));
    t.teardown(() => stopTracked(child, 0, 'SIGKILL'));
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => { err += d; });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name} did not start: ${err}`)), 60_000);
      child.stdout!.on('data', (d: string) => {
        out += d;
        const admin = /^\s+admin\s+http:\/\/127\.0\.0\.1:(\d+)/m.exec(out);
        const data = /data plane\s+http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
        if (admin && data) { this.port = Number(data[1]); this.adminPort = Number(admin[1]); clearTimeout(timer); resolve(); }
      });
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${this.name} exited (${code}): ${err}`)); });
    });
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
async function serverStates(socket: string): Promise<Record<string, number>> {
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
const UP = 2;

interface LoadResult { ok: number; cancelled: number; errors: string[] }

/**
 * Typing users on one HTTP/2 session: each sends completion after completion; 9 of every 20 are
 * cancelled (RST_STREAM CANCEL) once their first token arrives, the rest are read to [DONE].
 */
function typingLoad(session: ClientHttp2Session, users: number): { stop(): Promise<LoadResult> } {
  const r: LoadResult = { ok: 0, cancelled: 0, errors: [] };
  let running = true;
  const user = async (u: number): Promise<void> => {
    for (let i = 0; running; i++) {
      const cancel = (i + u) % 20 < 9;
      let st: http2.ClientHttp2Stream;
      try {
        st = open(session, '/v1/completions', { prompt: `def f${u}_${i}(`, stream: true }, { 'x-tokens': '12', 'x-token-ms': '5', 'x-ttft-ms': '20' });
      } catch (e) { r.errors.push(`user ${u} #${i}: could not open a stream: ${String(e)}`); return; }
      const res = collect(st);
      if (cancel) {
        await firstData(st);
        st.close(http2.constants.NGHTTP2_CANCEL);
        const d = await res;
        if (d.status !== 200) r.errors.push(`user ${u} #${i} (cancelled): status ${d.status} ${d.text.slice(0, 200)} ${d.error ?? ''}`);
        else r.cancelled++;
      } else {
        const d = await res;
        if (d.status !== 200 || !d.complete || d.events.at(-1) !== '[DONE]') r.errors.push(`user ${u} #${i}: status ${d.status} complete ${d.complete} ${d.text.slice(0, 200)} ${d.error ?? ''}`);
        else r.ok++;
      }
    }
  };
  const all = Array.from({ length: users }, (_, u) => user(u));
  return { async stop() { running = false; await Promise.all(all); return r; } };
}

async function main(haproxy: string): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-haproxy-'));
  const modelArgs = ['--ttft-ms', '20', '--token-ms', '5', '--tokens', '12'];
  let modelA: SpawnedModelServer = await spawnModelServer(modelArgs);
  const modelB = await spawnModelServer(modelArgs);
  const modelAPort = modelA.port;
  t.teardown(() => modelA.stop());
  t.teardown(() => modelB.stop());
  const a = new Instance('gateway A', modelA.url, path.join(dir, 'a'));
  const b = new Instance('gateway B', modelB.url, path.join(dir, 'b'));
  await Promise.all([a.start(t), b.start(t)]);
  const lbPort = await freePort();

  const socket = path.join(dir, 'haproxy.sock');
  const hp = spawnTracked(haproxy, ['-db', '-f', HAPROXY_CFG], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: {
      ...process.env, HAPROXY_STATS_SOCKET: socket, HAPROXY_BIND: `127.0.0.1:${lbPort}`,
      GW1_ADDR: `127.0.0.1:${a.port}`, GW1_ADMIN_PORT: String(a.adminPort), GW2_ADDR: `127.0.0.1:${b.port}`, GW2_ADMIN_PORT: String(b.adminPort),
    },
  }, { parentWatch: false });
  let hpErr = '';
  hp.stderr!.setEncoding('utf8');
  hp.stderr!.on('data', (d: string) => { hpErr = (hpErr + d).slice(-20_000); });
  t.teardown(() => stopTracked(hp, 2000));
  const states = (): Promise<Record<string, number>> => serverStates(socket).catch(() => ({}));
  await until(async () => { const s = await states(); return s.gw1 === UP && s.gw2 === UP; }, 60_000).catch((e: unknown) => { throw new Error(`HAProxy did not mark both gateways up: ${String(e)}\n${hpErr}`); });

  const lb = `http://127.0.0.1:${lbPort}`;
  const session = await connect(lb);
  let sessionEnded = '';
  session.on('goaway', (code: number) => { sessionEnded ||= `GOAWAY ${code}`; });
  session.on('close', () => { sessionEnded ||= 'closed'; });
  session.on('error', (e: Error) => { sessionEnded ||= `error ${e.message}`; });
  t.teardown(() => session.destroy());

  await t.test('cancels from the client reach the model through HAProxy', async (t) => {
    const before = [await modelStats(modelA), await modelStats(modelB)];
    const n = 20;
    await Promise.all(Array.from({ length: n }, async (_, i) => {
      const st = open(session, '/v1/completions', { prompt: `c${i}`, stream: true }, { 'x-tokens': '200', 'x-token-ms': '10' });
      const res = collect(st);
      await firstData(st);
      st.close(http2.constants.NGHTTP2_CANCEL);
      await res;
    }));
    const aborted = async (): Promise<number> => {
      const [sa, sb] = [await modelStats(modelA), await modelStats(modelB)];
      return sa.aborted - before[0]!.aborted + sb.aborted - before[1]!.aborted;
    };
    await until(async () => (await aborted()) >= n, 30_000).catch(() => undefined);
    t.equal(await aborted(), n, `all ${n} client cancels reached a model as a reset stream`);
    t.equal(sessionEnded, '', 'the client connection stays up');
  });

  await t.test('a gateway whose model fails votes itself out; HAProxy stops sending to it; back after recovery', async (t) => {
    await modelA.stop();
    // Traffic until gateway A's /_ping fails and HAProxy marks it down (A answers 502 meanwhile).
    const drive = async (): Promise<number> => { const d = await collect(open(session, '/v1/completions', { prompt: 'x' })); return d.status; };
    await until(async () => { await drive(); return (await states()).gw1 !== UP; }, 60_000);
    t.equal((await fetch(`http://127.0.0.1:${a.adminPort}/_ping`)).status, 503, 'gateway A votes itself out on /_ping');
    const bBefore = (await modelStats(modelB)).requests;
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push(await drive());
    t.same(statuses, Array(20).fill(200), 'with A out, every request succeeds');
    t.equal((await modelStats(modelB)).requests - bBefore, 20, 'all of them went to gateway B');

    // The model comes back on the same port; A's window empties, /_ping passes, HAProxy takes it back.
    modelA = await spawnModelServer([...modelArgs, '--port', String(modelAPort)]);
    await until(async () => (await states()).gw1 === UP, 60_000);
    t.pass('HAProxy marks gateway A up again');
    await until(async () => { await drive(); return (await modelStats(modelA)).requests >= 5; }, 60_000);
    const tail: number[] = [];
    for (let i = 0; i < 20; i++) tail.push(await drive());
    t.same(tail, Array(20).fill(200), 'both gateways serve again');
    t.equal(sessionEnded, '', 'the client connection stays up');
  });

  await t.test('rolling restart of both gateways under typing load with cancels: no client error, one connection', async (t) => {
    const load = typingLoad(session, 6);
    const servedAtLeast = async (x: Instance, n: number): Promise<boolean> => (await x.requestsServed().catch(() => 0)) >= n;
    await until(() => servedAtLeast(a, 5), 60_000);
    for (const [x, name] of [[a, 'gw1'], [b, 'gw2']] as const) {
      const stopped = x.stop();
      await until(async () => (await states())[name] !== UP, 60_000);
      t.pass(`HAProxy took ${x.name} out while it drained`);
      t.equal(await stopped, 0, `${x.name} drained and exited 0`);
      await x.start(t);
      await until(async () => (await states())[name] === UP, 60_000);
      await until(() => servedAtLeast(x, 5), 60_000);
      t.pass(`${x.name} restarted and serves again`);
    }
    const r = await load.stop();
    t.same(r.errors, [], 'zero client errors');
    t.ok(r.ok > 20 && r.cancelled > 20, `completed ${r.ok}, cancelled ${r.cancelled}`);
    t.equal(sessionEnded, '', 'zero reconnects: the client kept its one connection to HAProxy');
  });

  await t.test('the region\'s /_ping (HAProxy monitor-uri) fails once no gateway is up', async (t) => {
    // The editors' port speaks HTTP/2 only: ask on the client's own connection.
    const lbPing = async (): Promise<number> => (await collect(session.request({ ':method': 'GET', ':path': '/_ping' }))).status;
    t.equal(await lbPing(), 200, 'gateways up: the region answers 200');
    await a.stop();
    t.equal(await lbPing(), 200, 'one gateway left: still 200');
    const bStopped = b.stop();
    await until(async () => (await lbPing()) === 503, 60_000);
    t.pass('no gateway up: the region answers 503, so geo-DNS takes it out');
    await bStopped;
  });
}

const HAPROXY = findHaproxy();
if (!HAPROXY) {
  t.plan(0, 'haproxy is not installed (Debian: apt-get install haproxy; .ci/run does): the HAProxy end-to-end tests are skipped');
} else {
  t.setTimeout(400_000);
  await main(HAPROXY);
}
