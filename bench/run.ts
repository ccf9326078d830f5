/**
 * `npm run bench`: ghostgate against a direct connection to the model server, in the same run.
 *
 *   node bench/run.ts [--users 50] [--rounds 3] [--seconds 8] [--quick] [--only h1,goaway,...]
 *                     [--tput-seconds 5] [--concurrency 64] [--sessions 4] [--goaway-seconds 10]
 *
 * Three processes, each on its own event loop: the model server (bench/model-proc.ts, i.e.
 * model-server/server.ts with its CLI flags), the gateway (`bin/ghostgate.ts start --config
 * bench/gateway.bench.yaml`) and the load generator (bench/loadgen.ts). This file only
 * orchestrates, snapshots counters between phases and does the arithmetic.
 *
 * Sections (each starts a fresh model server and gateway):
 *   1. latency    typing users, phases alternate direct, gateway, direct, gateway, … (--rounds each)
 *   1b. floor     the same typing users through bench/null-proxy.ts (Node HTTP/2 relaying and nothing
 *                 else) and HAProxy beside the gateway: what any proxy hop costs on this machine
 *   2. throughput closed loop, no think time, same concurrency on both sides, alternating rounds
 *   3. goaway     model server GOAWAYs every 100 streams per session; typing users via the gateway
 *   4. h1-latency    as 1 with HTTP/1.1 keep-alive clients (a cancel closes the socket)
 *   5. h1-throughput as 2 with HTTP/1.1 keep-alive sockets
 *   6. store      typing users through two gateways with rate-limit + supersede, one keeping their
 *                 state in process, one on a real redis-server (store.redis), alternating rounds
 *   7. fastlane-off  as 2 with `server.fastLane: false` (HTTP/2 completions through Fastify's route);
 *                 compare with 2 (`--only throughput,fastlane-off`)
 * (`--only` picks some of them.)
 *
 * Prints a table (medians across rounds) and writes everything to bench/results/<timestamp>.json.
 * BENCH_CHILD_LOG=<prefix> also appends each child's stdout to <prefix>.<name>.<pid> (e.g. the
 * gateway's GC trace with --gateway-node-args=--trace-gc-nvp).
 */
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { mean, median, pct } from './types.ts';
import type { ClientProtocol, ClosedJob, ClosedResult, LoadJob, LoadResult, ReqRecord, TypingJob, TypingResult } from './types.ts';
import type { AbortRecord, ModelServerStats } from '../model-server/server.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const NODE = process.execPath;

// ---------------------------------------------------------------------------------------------
// Options

const { values: argv } = parseArgs({
  args: process.argv.slice(2),
  options: {
    users: { type: 'string' },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    'tput-seconds': { type: 'string' },
    concurrency: { type: 'string' },
    sessions: { type: 'string' },
    'goaway-seconds': { type: 'string' },
    'goaway-every': { type: 'string' },
    quick: { type: 'boolean' },
    only: { type: 'string' },
    'gateway-cpu-prof': { type: 'boolean' },
    'gateway-node-args': { type: 'string' },
    'floor-variant': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (argv.help) {
  process.stdout.write(`Usage: node bench/run.ts [options]   (or: npm run bench -- [options])

  --users N           typing users (default 50; quick 10)
  --rounds N          rounds per side, latency and throughput (default 3; quick 2)
  --seconds N         length of each latency phase (default 8; quick 2)
  --tput-seconds N    length of each throughput phase (default 5; quick 2)
  --concurrency N     throughput: streams in flight, both sides (default 64)
  --sessions N        throughput: client sessions, both sides (default 4)
  --goaway-seconds N  GOAWAY phase length (default 10; quick 4)
  --goaway-every N    model server GOAWAY period in streams (default 100)
  --quick             small numbers for a smoke run (< 60 s)
  --only LIST         run only these sections (comma-separated): latency, floor, throughput, goaway,
                      failover, h1-latency, h1-throughput, store, fastlane-off, workers; h2 = latency,throughput;
                      h1 = h1-latency,h1-throughput
  --gateway-cpu-prof  run the gateway with --cpu-prof; profiles go to bench/results/prof-<time>/
  --gateway-node-args 'A B'  extra Node flags for the gateway process only (e.g. '--trace-gc')
  --floor-variant 'NAME=A B'  floor: also a second gateway run with these Node flags, same rounds
                      (e.g. 'semi8=--max-semi-space-size=8'): a flag's effect measured in one run
`);
  process.exit(0);
}
const quick = argv.quick === true;
const SECTIONS = ['latency', 'floor', 'throughput', 'goaway', 'h1-latency', 'h1-throughput', 'store', 'fastlane-off', 'workers', 'failover'] as const;
type Section = typeof SECTIONS[number];
const ALIASES: Record<string, Section[]> = { h2: ['latency', 'throughput'], h1: ['h1-latency', 'h1-throughput'], all: [...SECTIONS] };
const ONLY = new Set<Section>();
for (const w of (argv.only ?? 'all').split(',').map((x) => x.trim()).filter(Boolean)) {
  const secs = ALIASES[w] ?? (SECTIONS.includes(w as Section) ? [w as Section] : null);
  if (secs === null) { process.stderr.write(`--only: unknown section "${w}" (${[...SECTIONS, ...Object.keys(ALIASES)].join(', ')})\n`); process.exit(2); }
  for (const x of secs) ONLY.add(x);
}
const int = (name: keyof typeof argv, dflt: number, quickDflt = dflt): number => {
  const v = argv[name];
  if (v === undefined) return quick ? quickDflt : dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0 || n > 100_000) { process.stderr.write(`--${name} must be a positive integer\n`); process.exit(2); }
  return n;
};
const OPT = {
  users: int('users', 50, 10),
  rounds: int('rounds', 3, 2),
  seconds: int('seconds', 8, 2),
  tputSeconds: int('tput-seconds', 5, 2),
  concurrency: int('concurrency', 64),
  sessions: int('sessions', 4),
  goawaySeconds: int('goaway-seconds', 10, 4),
  goawayEvery: int('goaway-every', 100),
  warmupSeconds: quick ? 1 : 2,
  gatewayCpuProf: argv['gateway-cpu-prof'] === true,
  gatewayNodeArgs: (argv['gateway-node-args'] ?? '').split(' ').filter(Boolean),
  floorVariant: ((v) => v === undefined ? undefined : { name: v.slice(0, Math.max(0, v.indexOf('='))) || 'variant', nodeArgs: v.slice(v.indexOf('=') + 1).split(' ').filter(Boolean) })(argv['floor-variant']),
  only: SECTIONS.filter((x) => ONLY.has(x)),
};
/** The gateway's token signing key for this run (bench/gateway.bench.yaml reads it from the env). */
const SIGNING_KEY: KeyObject = generateKeyPairSync('ed25519').privateKey;
const BENCH_ENV = { ...process.env, BENCH_SIGNING_KEY: SIGNING_KEY.export({ type: 'pkcs8', format: 'pem' }) as string };
const STARTED_AT = new Date();
const STAMP = STARTED_AT.toISOString().replace(/[:.]/g, '-');
const RESULTS_DIR = path.join(ROOT, 'bench', 'results');

/** Model server settings. Latency: a short prefill and fast tokens keep many cancels in flight
 * per second while leaving room (50 ms) to cancel before the first token. Throughput: no waiting,
 * so only the cost per request is measured. */
const LATENCY_MODEL = { ttftMs: 50, tokenMs: 5, tokens: 16 };
const TPUT_MODEL = { ttftMs: 0, tokenMs: 0, tokens: 4 };
const POOL_SIZE = 2; // bench/gateway.bench.yaml upstreams.local.pool.size

const TARGETS = {
  ttfbOverheadP50Ms: 0.5,
  ttfbOverheadP99Ms: 2,
  throughputRatio: 0.5,
  cancelReachedShare: 1,
  cancelDelayP99Ms: 2,
};

// ---------------------------------------------------------------------------------------------
// Child processes

const children = new Set<Child>();

class Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;
  stderrTail = '';
  stdoutBuf = '';
  exitCode: number | null | undefined = undefined;

  constructor(name: string, args: string[], env: NodeJS.ProcessEnv = process.env, ipc = false, cmd = NODE) {
    this.name = name;
    this.proc = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe', ...(ipc ? ['ipc' as const] : [])] });
    children.add(this);
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (d: string) => { this.stderrTail = (this.stderrTail + d).slice(-4000); });
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => { if (this.stdoutBuf.length < 100_000) this.stdoutBuf += d; });
    if (process.env.BENCH_CHILD_LOG) { const f = `${process.env.BENCH_CHILD_LOG}.${name.replace(/\W/g, '_')}.${this.proc.pid}`; this.proc.stdout!.on('data', (d: string) => appendFileSync(f, d)); }
    this.exited = new Promise((res) => this.proc.once('exit', (code) => { this.exitCode = code; children.delete(this); res(code); }));
  }

  /** Wait until stdout holds a line matching `re`. */
  async waitStdout(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      const m = this.stdoutBuf.match(re);
      if (m) return m;
      if (this.exitCode !== undefined) break;
      await sleep(20);
    }
    throw new Error(`${this.name} did not start (exit ${this.exitCode}); stderr:\n${this.stderrTail}`);
  }

  /** Send an IPC message and wait for the first reply that `accept`s. */
  ask<T>(msg: unknown, accept: (m: Record<string, unknown>) => boolean, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const onMsg = (m: Record<string, unknown>): void => {
        if (!accept(m)) return;
        done();
        resolve(m as T);
      };
      const onExit = (): void => { done(); reject(new Error(`${this.name} exited (code ${this.exitCode}); stderr:\n${this.stderrTail}`)); };
      const timer = setTimeout(() => { done(); reject(new Error(`${this.name}: no answer within ${timeoutMs} ms`)); }, timeoutMs);
      const done = (): void => { clearTimeout(timer); this.proc.off('message', onMsg); this.proc.off('exit', onExit); };
      this.proc.on('message', onMsg);
      this.proc.once('exit', onExit);
      if (msg !== undefined) this.proc.send(msg as object);
    });
  }

  async stop(): Promise<void> {
    if (this.exitCode !== undefined) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => { if (this.exitCode === undefined) this.proc.kill('SIGKILL'); }, 5000);
    await this.exited;
    clearTimeout(t);
  }
}

function killChildren(): void {
  for (const c of children) if (c.exitCode === undefined) c.proc.kill('SIGKILL');
}
process.on('exit', killChildren);
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { killChildren(); process.exit(130); });

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function getJson<T>(url: string): Promise<T> {
  const r = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  if (!r.ok) throw new Error(`GET ${url}: ${r.status}`);
  return await r.json() as T;
}

async function getText(url: string): Promise<string> {
  const r = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  if (!r.ok) throw new Error(`GET ${url}: ${r.status}`);
  return await r.text();
}

interface Ports { model: number; gateway: number; admin: number }
type Arrivals = Map<string, [number, number]>;

class ModelProc {
  child: Child;
  port: number;
  url: string;
  private constructor(child: Child, port: number) { this.child = child; this.port = port; this.url = `http://127.0.0.1:${port}`; }
  static async start(port: number, m: { ttftMs: number; tokenMs: number; tokens: number }, goawayEvery = 0, trackArrivals = true): Promise<ModelProc> {
    const args = ['bench/model-proc.ts', '--port', String(port), '--ttft-ms', String(m.ttftMs), '--token-ms', String(m.tokenMs), '--tokens', String(m.tokens), '--goaway-every', String(goawayEvery)];
    const child = new Child('model server', args, { ...process.env, BENCH_TRACK_ARRIVALS: trackArrivals ? '1' : '0' }, true);
    await child.waitStdout(/"event":"listening"/, 15_000);
    return new ModelProc(child, port);
  }
  stats(): Promise<ModelServerStats> { return getJson<ModelServerStats>(`${this.url}/_stats`); }
  /** Request ids (with `prefix`) that reached the model server: id → [arrived, completed or -1] (epoch ms). */
  async arrivals(prefix: string): Promise<Arrivals> {
    const r = await this.child.ask<{ arrivals: Array<[string, number, number]> }>({ cmd: 'arrivals', prefix }, (m) => Array.isArray(m.arrivals), 15_000);
    return new Map(r.arrivals.map(([id, at, doneAt]) => [id, [at, doneAt]]));
  }
}

class GatewayProc {
  child: Child;
  url: string;
  admin: string;
  private constructor(child: Child, ports: Ports) {
    this.child = child;
    this.url = `http://127.0.0.1:${ports.gateway}`;
    this.admin = `http://127.0.0.1:${ports.admin}`;
  }
  static async start(ports: Ports, config = 'bench/gateway.bench.yaml', extraEnv: NodeJS.ProcessEnv = {}, args: string[] = [], nodeArgs = OPT.gatewayNodeArgs): Promise<GatewayProc> {
    const env = { ...BENCH_ENV, ...extraEnv, BENCH_GATEWAY_PORT: String(ports.gateway), BENCH_ADMIN_PORT: String(ports.admin), BENCH_MODEL_PORT: String(ports.model) };
    const prof = OPT.gatewayCpuProf ? ['--cpu-prof', '--cpu-prof-dir', path.join(RESULTS_DIR, `prof-${STAMP}`)] : [];
    const child = new Child('gateway', [...nodeArgs, ...prof, 'bin/ghostgate.ts', 'start', '--config', config, ...args], env);
    const g = new GatewayProc(child, ports);
    const until = Date.now() + 20_000;
    while (Date.now() < until && child.exitCode === undefined) {
      try {
        const r = await fetch(`${g.admin}/_ping`, { signal: AbortSignal.timeout(1000) });
        if (r.ok) {
          // Wait for the upstream pool to be connected.
          // (With --workers N: every worker's pool, listed under `workers`.)
          const up = await getJson<Record<string, { live: number }> & { workers?: Array<{ upstreams: Record<string, { live: number }> }> }>(`${g.admin}/-/upstreams`);
          const pools = up.workers ? up.workers.map((w) => w.upstreams) : [up];
          if (pools.every((u) => (u.local?.live ?? 0) >= 1)) return g;
        }
      } catch { /* not listening yet */ }
      await sleep(100);
    }
    await child.stop();
    throw new Error(`gateway did not start (exit ${child.exitCode}); stderr:\n${child.stderrTail}\nstdout:\n${child.stdoutBuf.slice(-2000)}`);
  }
  async metrics(): Promise<Prom> { return parseProm(await getText(`${this.admin}/metrics`)); }
  upstreams(): Promise<Record<string, { sessionsOpened: number; live: number; draining: number }>> { return getJson(`${this.admin}/-/upstreams`); }
}

/**
 * One short-lived token per user, as editors have. The first comes from the official CLI
 * (`ghostgate token --config bench/gateway.bench.yaml`), which fixes the format (header, iss, aud,
 * exp); the others are the same token with another `sub`/`jti`, signed with the same key (minting
 * 50 through the CLI would take a process each).
 */
async function mintTokens(n: number, ports: Ports): Promise<string[]> {
  const env = { ...BENCH_ENV, BENCH_GATEWAY_PORT: String(ports.gateway), BENCH_ADMIN_PORT: String(ports.admin), BENCH_MODEL_PORT: String(ports.model) };
  const cli = new Child('ghostgate token', ['bin/ghostgate.ts', 'token', '--config', 'bench/gateway.bench.yaml', '--sub', 'bench-u0', '--ttl', '2h', '--json'], env);
  const t = setTimeout(() => cli.proc.kill('SIGKILL'), 30_000);
  const code = await cli.exited;
  clearTimeout(t);
  const m = cli.stdoutBuf.match(/\{.*"token".*\}/);
  if (code !== 0 || !m) throw new Error(`ghostgate token failed (exit ${code}):\n${cli.stderrTail}${cli.stdoutBuf}`);
  const first = (JSON.parse(m[0]) as { token: string }).token;
  const [h, p] = first.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as { alg?: string };
  if (header.alg !== 'EdDSA') return [first];
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
  const out = [first];
  for (let i = 1; i < n; i++) {
    const body = Buffer.from(JSON.stringify({ ...payload, sub: `bench-u${i}`, jti: randomBytes(16).toString('base64url') })).toString('base64url');
    const input = `${h}.${body}`;
    out.push(`${input}.${sign(null, Buffer.from(input), SIGNING_KEY).toString('base64url')}`);
  }
  return out;
}

/** One completion through the gateway with a minted token: fail early and clearly if it is refused. */
async function preflight(gw: GatewayProc, token: string): Promise<void> {
  const r = await fetch(`${gw.url}/v1/completions`, {
    method: 'POST', signal: AbortSignal.timeout(10_000),
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ model: 'ghost-small', prompt: 'def f(', stream: false, max_tokens: 2 }),
  });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`preflight through the gateway answered ${r.status}: ${text.slice(0, 500)}`);
}

class LoadGen {
  child: Child;
  private constructor(child: Child) { this.child = child; }
  static async start(): Promise<LoadGen> {
    const child = new Child('load generator', ['bench/loadgen.ts'], process.env, true);
    await child.ask(undefined, (m) => m.ready === true, 15_000).catch(async (e) => { await child.stop(); throw e; });
    return new LoadGen(child);
  }
  async run<T extends LoadResult>(job: LoadJob): Promise<T> {
    const r = await this.child.ask<{ ok: boolean; result?: T; error?: string }>(job, (m) => typeof m.ok === 'boolean', job.seconds * 1000 + 60_000);
    if (!r.ok || !r.result) throw new Error(`load generator failed: ${r.error}`);
    return r.result;
  }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text

type Prom = Array<{ name: string; labels: Record<string, string>; value: number }>;

function parseProm(text: string): Prom {
  const out: Prom = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$/);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[3]) for (const l of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}
const promSum = (p: Prom, name: string, filter: Record<string, string> = {}): number =>
  p.filter((s) => s.name === name && Object.entries(filter).every(([k, v]) => s.labels[k] === v)).reduce((n, s) => n + s.value, 0);

// ---------------------------------------------------------------------------------------------
// CPU accounting (Linux /proc; NaN elsewhere): who used the 2 cores during a phase. "others" is
// everything outside the bench's processes — on a shared machine, the noise.

const JIFFY_MS = 10; // CLK_TCK = 100 on Linux

function procCpuMs(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * JIFFY_MS; // utime + stime
  } catch { return NaN; }
}
function machineCpuMs(): { busy: number; total: number } {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
    const busy = user + nice + system + irq + softirq + (steal ?? 0);
    return { busy: busy * JIFFY_MS, total: (busy + idle + iowait) * JIFFY_MS };
  } catch { return { busy: NaN, total: NaN }; }
}
type Pids = Record<'model' | 'gateway' | 'loadgen', number | undefined>;
interface CpuSample { wall: number; procs: Record<string, number>; machine: { busy: number; total: number }; gwIo: { r: number; w: number } }
/** A redis-server the bench started (the store section): part of the system under test, not noise. */
let benchRedisPid: number | undefined;
function cpuSample(pids: Pids): CpuSample {
  return {
    wall: performance.now(),
    procs: { model: procCpuMs(pids.model), gateway: procCpuMs(pids.gateway), loadgen: procCpuMs(pids.loadgen), bench: procCpuMs(process.pid), redis: benchRedisPid === undefined ? 0 : procCpuMs(benchRedisPid) },
    machine: machineCpuMs(),
    gwIo: procSyscalls(pids.gateway),
  };
}
/** Read and write system calls of `pid` so far (/proc/<pid>/io): they do not move with other load on the machine. */
function procSyscalls(pid: number | undefined): { r: number; w: number } {
  if (pid === undefined) return { r: 0, w: 0 };
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    return { r: Number(/syscr: (\d+)/.exec(io)?.[1] ?? NaN), w: Number(/syscw: (\d+)/.exec(io)?.[1] ?? NaN) };
  } catch { return { r: NaN, w: NaN }; }
}
/** Cores used (CPU ms / wall ms) by each of our processes, the machine, and everyone else. */
interface CpuUse { model: number; gateway: number; loadgen: number; bench: number; redis: number; machine: number; others: number; gatewayCpuMs: number; modelCpuMs: number; loadgenCpuMs: number; redisCpuMs: number; gatewayReads: number; gatewayWrites: number }
function cpuUse(a: CpuSample, b: CpuSample, side: 'direct' | 'gateway'): CpuUse {
  const wall = b.wall - a.wall;
  const d = (k: string): number => b.procs[k] - a.procs[k];
  const gw = side === 'gateway' ? d('gateway') : 0; // idle gateway in direct phases: count its (tiny) CPU as ours anyway
  const ours = d('model') + d('gateway') + d('loadgen') + d('bench') + d('redis');
  const machine = b.machine.busy - a.machine.busy;
  return {
    model: d('model') / wall, gateway: gw / wall, loadgen: d('loadgen') / wall, bench: d('bench') / wall, redis: d('redis') / wall,
    machine: machine / wall, others: Math.max(0, machine - ours) / wall,
    gatewayCpuMs: gw, modelCpuMs: d('model'), loadgenCpuMs: d('loadgen'), redisCpuMs: d('redis'),
    gatewayReads: b.gwIo.r - a.gwIo.r, gatewayWrites: b.gwIo.w - a.gwIo.w,
  };
}
const cpuStr = (c: CpuUse): string => `cpu cores: gw ${f(c.gateway)} model ${f(c.model)} loadgen ${f(c.loadgen)}${benchRedisPid === undefined ? '' : ` redis ${f(c.redis)}`} others ${f(c.others)}`;

// ---------------------------------------------------------------------------------------------
// Analysis

interface CancelStats {
  /** Client cancels in this category. */
  n: number;
  /** …seen by the upstream as a stream reset (an abort record with the same x-request-id). */
  reached: number;
  /** …whose request never reached the upstream (the gateway saw the reset before forwarding). */
  neverSent: number;
  neverSentIds: string[];
  /** …that reached the upstream, which finished the completion before the client cancelled (the end
   * was on its way) or less than the p99 target (2 ms) after it: a race no gateway can win, left out
   * of reachedShare (a reset that needed more than 2 ms is a miss, counted in notReset). */
  finishedBeforeCancel: number;
  /** …that reached the upstream, which then finished the completion: the reset came too late (or never). */
  notReset: number;
  /** For each not-reset cancel: when the client cancelled, relative to the request's arrival upstream. */
  notResetIds: string[];
  /** reached / (n − neverSent − finishedBeforeCancel) */
  reachedShare: number;
  /** Client reset → upstream noticed (ms, cross-process epoch clocks). Late resets count with a lower
   * bound (upstream completion − client cancel): they must not vanish from the p99. */
  delayP50Ms: number;
  delayP99Ms: number;
  delayMinMs: number;
  delayMaxMs: number;
  /** Tokens the model generated after the client's cancel: tokensSent at abort − tokens the client had, + tokensAfterAbort. */
  tokensAfterCancelMean: number;
  tokensAfterCancelTotal: number;
  rstCodes: Record<string, number>;
  /** The model server's phase for these aborts. */
  modelPhases: Record<string, number>;
}

interface TypingStats {
  side: 'direct' | 'gateway';
  round: number;
  tag: string;
  seconds: number;
  requests: number;
  requestsPerSecond: number;
  ok200: number;
  failed: number;
  truncated: number;
  failedIds: string[];
  truncatedIds: string[];
  cancelled: number;
  cancelledShare: number;
  ttfbN: number;
  ttfbP50Ms: number;
  ttfbP99Ms: number;
  /** TTFB p50 of requests sent on a connection an earlier request had used (HTTP/1.1 keep-alive reuse). */
  ttfbReusedP50Ms: number;
  /** Share of requests sent on a reused connection (HTTP/2: all). */
  reusedShare: number;
  completionP50Ms: number;
  completionP99Ms: number;
  cancels: { beforeFirstToken: CancelStats; midStream: CancelStats; all: CancelStats };
  /** Sessions the load generator opened (one per user unless the peer closed one). */
  clientSessionsOpened: number;
  /** The gateway's ghostgate_client_connections_total over the phase (gateway side only). */
  gatewayClientConnections: number | null;
  /** The gateway's ghostgate_cancelled_before_forward_total over the phase. */
  gatewayCancelledBeforeForward: number | null;
  gatewayUpstreamRetries: number | null;
  /** ghostgate_requests_total by outcome over the phase (ok, client_cancelled, cancelled_before_forward, …). */
  gatewayOutcomes: Record<string, number> | null;
  /**
   * Client-cancelled requests the gateway nevertheless counted as `ok`: the upstream had finished
   * before the client's reset reached the gateway (a race on a busy machine, not a lost reset).
   * gateway ok − client-side complete responses.
   */
  gatewaySawCancelAfterUpstreamEnd: number | null;
  gatewayGoaways: number | null;
  /** Model server counters over the phase. */
  model: { requests: number; completed: number; aborted: number; sessionsOpened: number; goawaysSent: number; refusedStreams: number };
  loadgenLoopDelayP99Ms: number;
  loadgenLoopDelayMaxMs: number;
  /** The gateway's own event-loop delay over the phase, beyond prom-client's 10 ms sampling (reset at each scrape). */
  gatewayLoopLagP99Ms: number | null;
  gatewayLoopLagMaxMs: number | null;
  cpu: CpuUse;
}

function cancelStats(recs: ReqRecord[], aborts: Map<string, AbortRecord>, arrivals: Arrivals): CancelStats {
  const delays: number[] = [];
  const after: number[] = [];
  const rstCodes: Record<string, number> = {};
  const modelPhases: Record<string, number> = {};
  let reached = 0;
  let neverSent = 0;
  let notReset = 0;
  let finishedBeforeCancel = 0;
  const notResetIds: string[] = [];
  const neverSentIds: string[] = [];
  for (const r of recs) {
    const a = aborts.get(r.id);
    if (a) {
      reached++;
      delays.push(a.abortedAtEpochMs - r.cancelAtEpoch);
      after.push(Math.max(0, a.tokensSent - r.tokensAtCancel) + a.tokensAfterAbort);
      rstCodes[String(a.rstCode)] = (rstCodes[String(a.rstCode)] ?? 0) + 1;
      modelPhases[a.phase] = (modelPhases[a.phase] ?? 0) + 1;
    } else if (arrivals.has(r.id)) {
      const [at, doneAt] = arrivals.get(r.id)!;
      if (doneAt > 0) delays.push(Math.max(0, doneAt - r.cancelAtEpoch)); // a lower bound of the reset's delay
      if (doneAt > 0 && doneAt - r.cancelAtEpoch < TARGETS.cancelDelayP99Ms) { finishedBeforeCancel++; continue; }
      notReset++;
      if (notResetIds.length < 20) {
        notResetIds.push(`${r.id}: client cancelled ${f(r.cancelAtEpoch - at, 1)} ms after the upstream got it, holding ${r.tokensAtCancel} tokens; `
          + (doneAt > 0 ? `the upstream finished ${f(doneAt - r.cancelAtEpoch, 2)} ms after the cancel without seeing a reset` : 'the upstream never finished nor saw a reset'));
      }
    } else {
      neverSent++;
      if (neverSentIds.length < 20) neverSentIds.push(`${r.id}: cancelled ${f(r.cancelAtEpoch - r.startEpoch, 2)} ms after sending`);
    }
  }
  const sent = recs.length - neverSent - finishedBeforeCancel;
  return {
    n: recs.length, reached, neverSent, neverSentIds, finishedBeforeCancel, notReset, notResetIds,
    reachedShare: sent > 0 ? reached / sent : NaN,
    delayP50Ms: pct(delays, 50), delayP99Ms: pct(delays, 99),
    delayMinMs: delays.length ? Math.min(...delays) : NaN, delayMaxMs: delays.length ? Math.max(...delays) : NaN,
    tokensAfterCancelMean: mean(after), tokensAfterCancelTotal: after.reduce((n, v) => n + v, 0),
    rstCodes, modelPhases,
  };
}

function isFailed(r: ReqRecord): boolean {
  if (r.cancelled) return r.status !== 0 && r.status !== 200;
  return r.status !== 200;
}
function isTruncated(r: ReqRecord): boolean {
  return !r.cancelled && r.status === 200 && (!r.done || r.errorEvent || r.rstCode !== 0 || r.error !== '');
}

interface Snapshot { model: ModelServerStats; prom: Prom | null }

/**
 * What typing users go through besides the model: the gateway, or another proxy (the floor
 * section's), which has no metrics to read and a name of its own in the log.
 */
interface Hop { readonly url: string; readonly child: Child; metrics?(): Promise<Prom>; readonly label?: string }

async function snapshot(model: ModelProc, gw: Hop | null): Promise<Snapshot> {
  return { model: await model.stats(), prom: gw?.metrics ? await gw.metrics() : null };
}

function analyseTyping(side: 'direct' | 'gateway', round: number, job: TypingJob, res: TypingResult, s0: Snapshot, s1: Snapshot, arrivals: Arrivals, cpu: CpuUse): TypingStats {
  const prefix = `${job.tag}-`;
  const aborts = new Map<string, AbortRecord>();
  for (const a of s1.model.aborts) if (a.id.startsWith(prefix)) aborts.set(a.id, a);
  const recs = res.records;
  const cancelled = recs.filter((r) => r.cancelled && r.error !== 'timeout');
  const before = cancelled.filter((r) => r.tokensAtCancel === 0);
  const mid = cancelled.filter((r) => r.tokensAtCancel > 0);
  const ttfb = recs.filter((r) => r.status === 200 && r.ttfbMs >= 0).map((r) => r.ttfbMs);
  const ttfbReused = recs.filter((r) => r.reused && r.status === 200 && r.ttfbMs >= 0).map((r) => r.ttfbMs);
  const complete = recs.filter((r) => !r.cancelled && r.status === 200 && r.done).map((r) => r.durationMs);
  const failed = recs.filter(isFailed);
  const truncated = recs.filter(isTruncated);
  const m0 = s0.model;
  const m1 = s1.model;
  const pd = (name: string): number | null => (s0.prom && s1.prom ? promSum(s1.prom, name) - promSum(s0.prom, name) : null);
  let outcomes: Record<string, number> | null = null;
  if (s0.prom && s1.prom) {
    outcomes = {};
    for (const smp of s1.prom) {
      if (smp.name !== 'ghostgate_requests_total') continue;
      const o = smp.labels.outcome ?? '';
      outcomes[o] = (outcomes[o] ?? 0) + smp.value - promSum(s0.prom, 'ghostgate_requests_total', smp.labels);
    }
    for (const k of Object.keys(outcomes)) if (outcomes[k] === 0) delete outcomes[k];
  }
  const clientComplete = recs.filter((r) => !r.cancelled && r.status === 200 && r.done).length;
  return {
    side, round, tag: job.tag, seconds: res.wallMs / 1000,
    requests: recs.length, requestsPerSecond: recs.length / (res.wallMs / 1000),
    ok200: recs.filter((r) => r.status === 200).length,
    failed: failed.length, truncated: truncated.length,
    failedIds: failed.slice(0, 20).map((r) => `${r.id} status=${r.status} err=${r.error}`),
    truncatedIds: truncated.slice(0, 20).map((r) => `${r.id} tokens=${r.tokens} rst=${r.rstCode} err=${r.error} errorEvent=${r.errorEvent}`),
    cancelled: cancelled.length, cancelledShare: cancelled.length / Math.max(1, recs.length),
    ttfbN: ttfb.length, ttfbP50Ms: pct(ttfb, 50), ttfbP99Ms: pct(ttfb, 99),
    ttfbReusedP50Ms: pct(ttfbReused, 50), reusedShare: recs.filter((r) => r.reused).length / Math.max(1, recs.length),
    completionP50Ms: pct(complete, 50), completionP99Ms: pct(complete, 99),
    cancels: {
      beforeFirstToken: cancelStats(before, aborts, arrivals),
      midStream: cancelStats(mid, aborts, arrivals),
      all: cancelStats(cancelled, aborts, arrivals),
    },
    clientSessionsOpened: res.sessionsOpened,
    gatewayClientConnections: pd('ghostgate_client_connections_total'),
    gatewayCancelledBeforeForward: pd('ghostgate_cancelled_before_forward_total'),
    gatewayUpstreamRetries: pd('ghostgate_upstream_retries_total'),
    gatewayOutcomes: outcomes,
    gatewaySawCancelAfterUpstreamEnd: outcomes ? Math.max(0, (outcomes.ok ?? 0) - clientComplete) : null,
    gatewayGoaways: pd('ghostgate_upstream_goaways_total'),
    model: {
      requests: m1.requests - m0.requests, completed: m1.completed - m0.completed, aborted: m1.aborted - m0.aborted,
      sessionsOpened: m1.sessions.opened - m0.sessions.opened, goawaysSent: m1.sessions.goawaysSent - m0.sessions.goawaysSent,
      refusedStreams: m1.sessions.refusedStreams - m0.sessions.refusedStreams,
    },
    loadgenLoopDelayP99Ms: res.loopDelayP99Ms, loadgenLoopDelayMaxMs: res.loopDelayMaxMs,
    // prom-client samples every 10 ms and records whole intervals: keep the delay beyond them.
    gatewayLoopLagP99Ms: s1.prom ? Math.max(0, promSum(s1.prom, 'ghostgate_process_nodejs_eventloop_lag_p99_seconds') * 1000 - 10) : null,
    gatewayLoopLagMaxMs: s1.prom ? Math.max(0, promSum(s1.prom, 'ghostgate_process_nodejs_eventloop_lag_max_seconds') * 1000 - 10) : null,
    cpu,
  };
}

// ---------------------------------------------------------------------------------------------
// Phases

const log = (s: string): void => { process.stderr.write(s + '\n'); };
const f = (v: number, d = 2): string => (Number.isFinite(v) ? v.toFixed(d) : '—');
const pctStr = (v: number): string => (Number.isFinite(v) ? `${(v * 100).toFixed(v === 1 ? 0 : 1)}%` : '—');

let AUTH_TOKENS: string[] = [];

function typingJob(url: string, tag: string, users: number, seconds: number, protocol: ClientProtocol = 'h2', m = LATENCY_MODEL): TypingJob {
  return {
    cmd: 'typing', url, protocol, tag, users, seconds, thinkMinMs: 20, thinkMaxMs: 200, cancelShare: 0.45, beforeFirstShare: 1 / 3,
    ttftMs: m.ttftMs, tokenMs: m.tokenMs, maxTokens: m.tokens, requestTimeoutMs: 10_000, authTokens: AUTH_TOKENS,
  };
}

const pidsOf = (lg: LoadGen, model: ModelProc, gw: Hop): Pids => ({ model: model.child.proc.pid, gateway: gw.child.proc.pid, loadgen: lg.child.proc.pid });

async function typingPhase(lg: LoadGen, model: ModelProc, gw: Hop, side: 'direct' | 'gateway', round: number, tag: string, seconds: number, protocol: ClientProtocol = 'h2'): Promise<TypingStats> {
  const job = typingJob(side === 'direct' ? model.url : gw.url, tag, OPT.users, seconds, protocol);
  // Scraping the gateway also resets its event-loop lag histogram (prom-client), so s1 covers the phase.
  const s0 = await snapshot(model, gw);
  const c0 = cpuSample(pidsOf(lg, model, gw));
  const res = await lg.run<TypingResult>(job);
  const c1 = cpuSample(pidsOf(lg, model, gw));
  await sleep(250); // the last resets are recorded on the servers' next turns
  const s1 = await snapshot(model, gw);
  const arrivals = await model.arrivals(`${tag}-`);
  if (s1.model.aborts.length >= 10_000 && s1.model.aborts[0].id.startsWith(`${tag}-`)) log(`  warning: the model server's abort ring (10 000) overflowed in phase ${tag}; cancel shares are understated`);
  const st = analyseTyping(side, round, job, res, s0, side === 'gateway' ? s1 : { ...s1, prom: null }, arrivals, cpuUse(c0, c1, side));
  if (side === 'direct') { st.gatewayLoopLagMaxMs = null; st.gatewayLoopLagP99Ms = null; }
  const c = st.cancels;
  log(`  ${(side === 'gateway' ? gw.label ?? side : side).padEnd(7)} round ${round}: ${st.requests} req (${f(st.requestsPerSecond, 0)}/s), ttfb p50 ${f(st.ttfbP50Ms)} p99 ${f(st.ttfbP99Ms)} ms`
    + `${protocol === 'h1' ? ` (reused sockets: p50 ${f(st.ttfbReusedP50Ms)} ms, ${pctStr(st.reusedShare)} of requests; ${st.clientSessionsOpened} sockets opened)` : ''}, `
    + `cancels ${st.cancelled} (reached ${pctStr(c.all.reachedShare)}, never sent ${c.all.neverSent}, p99 ${f(c.beforeFirstToken.delayP99Ms)}/${f(c.midStream.delayP99Ms)} ms), `
    + `failed ${st.failed}, truncated ${st.truncated}; loop p99/max loadgen ${f(st.loadgenLoopDelayP99Ms, 1)}/${f(st.loadgenLoopDelayMaxMs, 1)}`
    + `${st.gatewayLoopLagMaxMs !== null ? ` gateway ${f(st.gatewayLoopLagP99Ms ?? NaN, 1)}/${f(st.gatewayLoopLagMaxMs, 1)}` : ''} ms; ${cpuStr(st.cpu)}`);
  for (const id of st.cancels.all.notResetIds) log(`    reset too late: ${id}`);
  if (st.cancels.all.finishedBeforeCancel) log(`    ${st.cancels.all.finishedBeforeCancel} cancel(s) came less than ${TARGETS.cancelDelayP99Ms} ms before the upstream finished, or after (a race; not in the share)`);
  for (const id of st.cancels.all.neverSentIds) log(`    never sent upstream: ${id}`);
  if (st.gatewayOutcomes) log(`    gateway outcomes: ${JSON.stringify(st.gatewayOutcomes)}; cancels the gateway saw only after the upstream finished: ${st.gatewaySawCancelAfterUpstreamEnd}`);
  return st;
}

interface TputStats {
  side: 'direct' | 'gateway';
  round: number;
  result: ClosedResult;
  modelRequests: number;
  cpu: CpuUse;
  /** CPU ms per 1000 completed requests, per process: noise-robust cost per request. */
  cpuMsPer1000: { gateway: number; model: number; loadgen: number };
}

async function tputPhase(lg: LoadGen, model: ModelProc, gw: Hop, side: 'direct' | 'gateway', round: number, tag: string, seconds: number, protocol: ClientProtocol = 'h2', sessions = OPT.sessions): Promise<TputStats> {
  const job: ClosedJob = { cmd: 'closed', url: side === 'direct' ? model.url : gw.url, protocol, tag, sessions, concurrency: OPT.concurrency, seconds, maxTokens: TPUT_MODEL.tokens, requestTimeoutMs: 10_000, authTokens: AUTH_TOKENS };
  const m0 = await model.stats();
  const c0 = cpuSample(pidsOf(lg, model, gw));
  const result = await lg.run<ClosedResult>(job);
  const c1 = cpuSample(pidsOf(lg, model, gw));
  const m1 = await model.stats();
  const cpu = cpuUse(c0, c1, side);
  const modelRequests = m1.requests - m0.requests;
  const per = (ms: number): number => (ms * 1000) / Math.max(1, modelRequests);
  const cpuMsPer1000 = { gateway: per(cpu.gatewayCpuMs), model: per(cpu.modelCpuMs), loadgen: per(cpu.loadgenCpuMs) };
  log(`  ${side.padEnd(7)} round ${round}: ${f(result.rps, 0)} req/s (${result.completed} in ${seconds} s; latency p50 ${f(result.latencyP50Ms)} p99 ${f(result.latencyP99Ms)} ms), failed ${result.failed}, truncated ${result.truncated}; `
    + `${cpuStr(cpu)}; cpu ms per 1000 req: gw ${f(cpuMsPer1000.gateway, 0)} model ${f(cpuMsPer1000.model, 0)} loadgen ${f(cpuMsPer1000.loadgen, 0)}`);
  return { side, round, result, modelRequests, cpu, cpuMsPer1000 };
}

// ---------------------------------------------------------------------------------------------
// Main

interface Check { name: string; value: string; target: string; pass: boolean }

const med = <T>(xs: T[], fn: (x: T) => number): number => median(xs.map(fn));
const sumOf = <T>(xs: T[], fn: (x: T) => number): number => xs.reduce((n, x) => n + fn(x), 0);

interface Env { lg: LoadGen; ports: Ports; servers: { model?: ModelProc; gw?: GatewayProc } }

async function stopServers(env: Env): Promise<void> {
  await env.servers.gw?.child.stop();
  await env.servers.model?.child.stop();
  env.servers = {};
}

async function startServers(env: Env, m: { ttftMs: number; tokenMs: number; tokens: number }, goawayEvery = 0, trackArrivals = true, config?: string, gwArgs: string[] = []): Promise<{ model: ModelProc; gw: GatewayProc }> {
  const model = await ModelProc.start(env.ports.model, m, goawayEvery, trackArrivals);
  env.servers.model = model;
  const gw = await GatewayProc.start(env.ports, config, {}, gwArgs);
  env.servers.gw = gw;
  return { model, gw };
}

type LatencyRounds = Array<{ direct: TypingStats; gateway: TypingStats }>;
interface LatencyRun { rounds: LatencyRounds; upstreamSessionsOpened: number; modelSessionsOpened: number }

/** Typing users, alternating direct / gateway phases, over one protocol. */
async function latencySection(env: Env, protocol: ClientProtocol, tagPrefix: string, gwArgs: string[] = []): Promise<LatencyRun> {
  const { lg } = env;
  const { model, gw } = await startServers(env, LATENCY_MODEL, 0, true, undefined, gwArgs);
  await preflight(gw, AUTH_TOKENS[0]);
  await lg.run(typingJob(model.url, 'Wd', OPT.users, OPT.warmupSeconds, protocol));
  await lg.run(typingJob(gw.url, 'Wg', OPT.users, OPT.warmupSeconds, protocol));
  await model.arrivals('W');
  const rounds: LatencyRounds = [];
  for (let r = 1; r <= OPT.rounds; r++) {
    const direct = await typingPhase(lg, model, gw, 'direct', r, `${tagPrefix}${r}d`, OPT.seconds, protocol);
    const gateway = await typingPhase(lg, model, gw, 'gateway', r, `${tagPrefix}${r}g`, OPT.seconds, protocol);
    rounds.push({ direct, gateway });
  }
  const upstreamSessionsOpened = (await gw.upstreams()).local?.sessionsOpened ?? NaN;
  const modelSessionsOpened = (await model.stats()).sessions.opened;
  await stopServers(env);
  return { rounds, upstreamSessionsOpened, modelSessionsOpened };
}

type FloorRound<T> = { direct: T; gateway: T; node: T; haproxy?: T; variant?: T };
interface FloorRun { typing: Array<FloorRound<TypingStats>>; closed: Array<FloorRound<TputStats>>; haproxySkipped?: string }

/** HAProxy relaying h2c to the model: one thread (the gateway is one process), upstream connections reused. */
function haproxyConfig(port: number, modelPort: number): string {
  return [
    'global', '  nbthread 1', '  maxconn 4000',
    'defaults', '  mode http', '  timeout connect 5s', '  timeout client 60s', '  timeout server 60s',
    'frontend floor', `  bind 127.0.0.1:${port} proto h2`, '  default_backend model',
    'backend model', '  http-reuse always', `  server m 127.0.0.1:${modelPort} proto h2 maxconn 4000`,
  ].join('\n') + '\n';
}

/** Start HAProxy (Debian's package) in the foreground on `port`, or say why not. */
async function startHaproxy(dir: string, port: number, modelPort: number): Promise<Child | string> {
  const v = spawnSync('haproxy', ['-v'], { encoding: 'utf8' });
  if (v.error || v.status !== 0) return `haproxy is not installed (${v.error?.message ?? `exit ${v.status}`}); apt-get install haproxy`;
  const cfg = path.join(dir, 'haproxy.cfg');
  writeFileSync(cfg, haproxyConfig(port, modelPort));
  const child = new Child('haproxy', ['-db', '-f', cfg], process.env, false, 'haproxy');
  for (let i = 0; i < 150 && child.exitCode === undefined; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      c.once('connect', () => { c.destroy(); resolve(true); });
      c.once('error', () => resolve(false));
    });
    if (up) return child;
    await sleep(100);
  }
  await child.stop();
  return `haproxy did not listen (exit ${child.exitCode}): ${child.stderrTail.trim().slice(-300)}`;
}

/**
 * What any proxy hop costs on this machine: the same clients direct, through the gateway, through
 * bench/null-proxy.ts (Node's HTTP/2 relaying streams and nothing else) and through HAProxy (h2c
 * both sides), alternating, same model, same load: typing users (latency settings), then the
 * closed loop (throughput settings). The two floors do no work of the gateway's (auth, policies,
 * metrics, SSE checks): the gateway's overhead less theirs is what its own work costs; theirs is
 * the two more loopback hops and one more process to wake on this machine.
 */
async function floorSection(env: Env): Promise<FloorRun> {
  let haproxySkipped: string | undefined;
  /** Start the model (`m`), the gateway and both floors in front of it, run `rounds`, stop them all. */
  const withHops = async <T>(m: typeof LATENCY_MODEL, trackArrivals: boolean, warm: (url: string, tag: string) => Promise<unknown>,
    phase: (model: ModelProc, hop: Hop, side: 'direct' | 'gateway', r: number, tag: string) => Promise<T>, tagPrefix: string): Promise<Array<FloorRound<T>>> => {
    const { model, gw } = await startServers(env, m, 0, trackArrivals);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-bench-floor-'));
    const nodePort = await freePort();
    const nodeChild = new Child('null proxy', ['bench/null-proxy.ts', '--port', String(nodePort), '--upstream', model.url]);
    const haproxyPort = await freePort();
    let haproxy: Child | string = 'not started';
    let variant: GatewayProc | undefined;
    try {
      await nodeChild.waitStdout(/"event":"listening"/, 15_000);
      const node: Hop = { url: `http://127.0.0.1:${nodePort}`, child: nodeChild, label: 'node h2' };
      haproxy = await startHaproxy(dir, haproxyPort, model.port);
      if (typeof haproxy === 'string') { haproxySkipped = haproxy; log(`  haproxy skipped: ${haproxy}`); }
      const hap: Hop | undefined = typeof haproxy === 'string' ? undefined : { url: `http://127.0.0.1:${haproxyPort}`, child: haproxy, label: 'haproxy' };
      await preflight(gw, AUTH_TOKENS[0]);
      if (OPT.floorVariant) {
        variant = await GatewayProc.start({ model: env.ports.model, gateway: await freePort(), admin: await freePort() }, undefined, {}, [], [...OPT.gatewayNodeArgs, ...OPT.floorVariant.nodeArgs]);
        await preflight(variant, AUTH_TOKENS[0]);
      }
      for (const [url, tag] of [[model.url, 'd'], [gw.url, 'g'], [node.url, 'n'], ...(hap ? [[hap.url, 'h']] : []), ...(variant ? [[variant.url, 'v']] : [])] as Array<[string, string]>) await warm(url, `W${tagPrefix}${tag}`);
      if (trackArrivals) await model.arrivals('W');
      const rounds: Array<FloorRound<T>> = [];
      for (let r = 1; r <= OPT.rounds; r++) {
        const direct = await phase(model, gw, 'direct', r, `${tagPrefix}${r}d`);
        const gateway = await phase(model, gw, 'gateway', r, `${tagPrefix}${r}g`);
        const nodeSt = await phase(model, node, 'gateway', r, `${tagPrefix}${r}n`);
        const hapSt = hap ? await phase(model, hap, 'gateway', r, `${tagPrefix}${r}h`) : undefined;
        const variantSt = variant ? await phase(model, variant, 'gateway', r, `${tagPrefix}${r}v`) : undefined;
        rounds.push({ direct, gateway, node: nodeSt, haproxy: hapSt, variant: variantSt });
      }
      return rounds;
    } finally {
      if (typeof haproxy !== 'string') await haproxy.stop();
      await variant?.child.stop();
      await nodeChild.stop();
      await stopServers(env);
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const { lg } = env;
  log('  typing users:');
  const typing = await withHops(LATENCY_MODEL, true, (url, tag) => lg.run(typingJob(url, tag, OPT.users, OPT.warmupSeconds)),
    (model, hop, side, r, tag) => typingPhase(lg, model, hop, side, r, tag, OPT.seconds), 'P');
  log(`  closed loop (${OPT.concurrency} streams over ${OPT.sessions} sessions):`);
  const warmJob = (url: string, tag: string): ClosedJob => ({ cmd: 'closed', url, protocol: 'h2', tag, sessions: OPT.sessions, concurrency: OPT.concurrency, seconds: OPT.warmupSeconds, maxTokens: TPUT_MODEL.tokens, requestTimeoutMs: 10_000, authTokens: AUTH_TOKENS });
  const closed = await withHops(TPUT_MODEL, false, (url, tag) => lg.run(warmJob(url, tag)),
    (model, hop, side, r, tag) => tputPhase(lg, model, hop, side, r, tag, OPT.tputSeconds), 'Q');
  return { typing, closed, haproxySkipped };
}

type TputRounds = Array<{ direct: TputStats; gateway: TputStats }> & { sequential?: { direct: ClosedResult; gateway: ClosedResult } };

/** Closed loop, alternating rounds, over one protocol; then one client sending sequential requests on one connection. */
async function throughputSection(env: Env, protocol: ClientProtocol, tagPrefix: string, config?: string, gwArgs: string[] = [], sessions = OPT.sessions): Promise<TputRounds> {
  const { lg } = env;
  const { model, gw } = await startServers(env, TPUT_MODEL, 0, false, config, gwArgs);
  const warmJob = (url: string, tag: string): ClosedJob => ({ cmd: 'closed', url, protocol, tag, sessions, concurrency: OPT.concurrency, seconds: OPT.warmupSeconds, maxTokens: TPUT_MODEL.tokens, requestTimeoutMs: 10_000, authTokens: AUTH_TOKENS });
  await lg.run(warmJob(model.url, 'Wtd'));
  await lg.run(warmJob(gw.url, 'Wtg'));
  const rounds: TputRounds = [];
  for (let r = 1; r <= OPT.rounds; r++) {
    const direct = await tputPhase(lg, model, gw, 'direct', r, `${tagPrefix}${r}d`, OPT.tputSeconds, protocol, sessions);
    const gateway = await tputPhase(lg, model, gw, 'gateway', r, `${tagPrefix}${r}g`, OPT.tputSeconds, protocol, sessions);
    rounds.push({ direct, gateway });
  }
  // One client, one connection, one request at a time (the shape of `openai` SDK calls in a loop):
  // a per-request delay on a reused connection (Nagle meeting delayed ACKs: ~40 ms) shows here as is.
  const seqJob = (url: string, tag: string): ClosedJob => ({ cmd: 'closed', url, protocol, tag, sessions: 1, concurrency: 1, seconds: OPT.warmupSeconds, maxTokens: TPUT_MODEL.tokens, requestTimeoutMs: 10_000, authTokens: AUTH_TOKENS });
  const seqD = await lg.run<ClosedResult>(seqJob(model.url, `${tagPrefix}Sd`));
  const seqG = await lg.run<ClosedResult>(seqJob(gw.url, `${tagPrefix}Sg`));
  rounds.sequential = { direct: seqD, gateway: seqG };
  log(`  sequential, one connection: direct p50 ${f(seqD.latencyP50Ms)} ms (${seqD.completed} req), gateway p50 ${f(seqG.latencyP50Ms)} ms (${seqG.completed} req)`);
  await stopServers(env);
  return rounds;
}

/**
 * Connections for the workers section's throughput phases. The workers bind with SO_REUSEPORT and
 * the kernel spreads connections by hash, so with the other sections' 4 the split between two
 * workers can be 4-0; 16 makes an even share likely, as many editors' connections would.
 */
const WORKERS_SESSIONS = 16;

interface WorkersRun { byWorkers: Array<{ n: number; tput: TputRounds; latency: LatencyRun }> }

/** `--workers 1` then `--workers 2`: throughput and typing latency, each against direct in the same run. */
async function workersSection(env: Env): Promise<WorkersRun> {
  const byWorkers: WorkersRun['byWorkers'] = [];
  for (const n of [1, 2]) {
    log(`  --workers ${n}: throughput`);
    const tput = await throughputSection(env, 'h2', `K${n}`, undefined, ['--workers', String(n)], WORKERS_SESSIONS);
    log(`  --workers ${n}: latency`);
    const latency = await latencySection(env, 'h2', `M${n}`, ['--workers', String(n)]);
    byWorkers.push({ n, tput, latency });
  }
  return { byWorkers };
}

/** Rows of the workers section: ratios to direct, 2 workers to 1, and TTFB overhead p99 with 2 vs 1. */
function workersRows(R: Report, W: WorkersRun): Record<string, unknown> {
  const by = W.byWorkers.map((w) => ({ n: w.n, T: summarizeTput(w.tput), S: summarizeLatency(w.latency) }));
  R.sep();
  R.row(`Every core: ghostgate start --workers N (HTTP/2; throughput over ${WORKERS_SESSIONS} sessions)`);
  for (const { n, T } of by) R.row(`  --workers ${n}: max throughput (req/s)`, f(T.directRps, 0), f(T.gatewayRps, 0), `${f(T.ratio)}×`, '', '');
  const one = by.find((b) => b.n === 1)!;
  const two = by.find((b) => b.n === 2)!;
  const scale = two.T.gatewayRps / one.T.gatewayRps;
  R.row('  throughput, 2 workers / 1 worker', '', '', `${f(scale)}×`, '', '');
  for (const { n, S } of by) {
    R.row(`  --workers ${n}: TTFB p50 (ms)`, f(S.ttfb.directP50Ms), f(S.ttfb.gatewayP50Ms), signMs(S.ttfb.overheadP50Ms), '', '');
    R.row(`  --workers ${n}: TTFB p99 (ms)`, f(S.ttfb.directP99Ms), f(S.ttfb.gatewayP99Ms), signMs(S.ttfb.overheadP99Ms), '', '');
  }
  R.row('  TTFB overhead p99, 2 workers − 1 worker', '', '', signMs(two.S.ttfb.overheadP99Ms - one.S.ttfb.overheadP99Ms), '', '');
  const failed = by.reduce((n, b) => n + b.T.failed + b.T.truncated + b.S.failures.gateway.failed + b.S.failures.gateway.truncated, 0);
  R.row('  failed + truncated via the gateway', '', String(failed), '', '0',
    R.check('workers: failed + truncated', String(failed), '0', failed === 0));
  R.row('  noise: other processes\' CPU (cores; workers count here)', '', by.map((b) => f(b.T.othersCores.gateway)).join(' / '), '', '', '');
  return {
    throughputRatioToDirect: Object.fromEntries(by.map((b) => [b.n, b.T.ratio])), throughputTwoToOne: scale,
    ttfbOverheadP50Ms: Object.fromEntries(by.map((b) => [b.n, b.S.ttfb.overheadP50Ms])),
    ttfbOverheadP99Ms: Object.fromEntries(by.map((b) => [b.n, b.S.ttfb.overheadP99Ms])), failedOrTruncated: failed,
  };
}

/** Typing users via the gateway while the model server GOAWAYs every N streams per session. */
async function goawaySection(env: Env): Promise<{ phase: TypingStats; sessions: Record<string, number> }> {
  const { lg } = env;
  const { model, gw } = await startServers(env, LATENCY_MODEL, OPT.goawayEvery);
  await preflight(gw, AUTH_TOKENS[0]);
  await lg.run(typingJob(gw.url, 'Wg', OPT.users, OPT.warmupSeconds)); // a cold gateway is not what we measure
  await model.arrivals('W');
  const m0 = await model.stats();
  const up0 = await gw.upstreams();
  const phase = await typingPhase(lg, model, gw, 'gateway', 1, 'G1g', OPT.goawaySeconds);
  const up1 = await gw.upstreams();
  const m1 = await model.stats();
  const upstreamRequests = m1.requests - m0.requests;
  await stopServers(env);
  return {
    phase,
    sessions: {
      /** Sessions the model server accepted during the phase, plus the pool's warm ones opened at start. */
      modelSessionsOpenedTotal: m1.sessions.opened,
      modelSessionsOpenedDuringPhase: m1.sessions.opened - m0.sessions.opened,
      gatewaySessionsOpened: up1.local.sessionsOpened,
      gatewaySessionsOpenedDuringPhase: up1.local.sessionsOpened - up0.local.sessionsOpened,
      goawaysSent: m1.sessions.goawaysSent - m0.sessions.goawaysSent,
      upstreamRequests,
      /** Each GOAWAY should replace exactly one session: ≈ upstream requests / goawayEvery during the phase. */
      expectedAbout: Math.round(upstreamRequests / OPT.goawayEvery),
    },
  };
}

/** One round: each gateway's phase. `twin` is a second in-process gateway: in process vs in process is the comparison's own noise. */
type StoreRounds = Array<{ local: TypingStats; redis: TypingStats; fast: TypingStats; twin: TypingStats }>;
/** Store fallbacks during the measured phases (both redis gateways): the total, and `op/reason` → count. */
/** One side-by-side phase: TTFB p50 of each of two gateways sharing one typing load (users alternate between them). */
interface PairStats { a: number; b: number; aN: number; bN: number; failed: number }
type StorePairs = Array<{ redis: PairStats; twin: PairStats }>;
interface StoreRun { rounds: StoreRounds; pairs: StorePairs; redisFallbacks: number; redisFallbacksBy: Record<string, number>; redisUp: number; skipped?: string }

/**
 * Gateways `a` and `b` side by side in ONE typing phase: users alternate between them (which one
 * gets the even users swaps round by round), so both see the same machine at the same moments;
 * what drifts between phases run one after another (the comparison's main noise) hits both alike.
 * Each gets half of the users.
 */
async function pairedPhase(lg: LoadGen, a: GatewayProc, b: GatewayProc, round: number, tag: string, protocol: ClientProtocol): Promise<PairStats> {
  const swap = round % 2 === 0;
  const job: TypingJob = { ...typingJob(a.url, tag, OPT.users, OPT.seconds, protocol), urls: swap ? [b.url, a.url] : [a.url, b.url] };
  const res = await lg.run<TypingResult>(job);
  const ttfb = { a: [] as number[], b: [] as number[] };
  let failed = 0;
  for (const r of res.records) {
    const u = Number(/-u(\d+)-/.exec(r.id)?.[1]);
    const toA = (u % 2 === 0) !== swap;
    if (isFailed(r) || isTruncated(r)) failed++;
    if (r.status === 200 && r.ttfbMs >= 0) (toA ? ttfb.a : ttfb.b).push(r.ttfbMs);
  }
  return { a: pct(ttfb.a, 50), b: pct(ttfb.b, 50), aN: ttfb.a.length, bN: ttfb.b.length, failed };
}

/** ghostgate_store_fallback_total by `op/reason`, summed over the given scrapes. */
function fallbacksBy(scrapes: Prom[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of scrapes) for (const s of m) if (s.name === 'ghostgate_store_fallback_total') out[`${s.labels.op}/${s.labels.reason}`] = (out[`${s.labels.op}/${s.labels.reason}`] ?? 0) + s.value;
  return out;
}
const fallbacksSince = (a: Record<string, number>, b: Record<string, number>): Record<string, number> =>
  Object.fromEntries(Object.entries(b).map(([k, v]) => [k, v - (a[k] ?? 0)]).filter(([, v]) => (v as number) > 0));
/** ghostgate_store_late_answer_seconds: how many store calls given up on (takes, leases) were answered after all, and how late on average (ms). */
function lateAnswers(m: Prom): { n: number; meanMs: number } {
  const n = promSum(m, 'ghostgate_store_late_answer_seconds_count');
  return { n, meanMs: n ? (promSum(m, 'ghostgate_store_late_answer_seconds_sum') * 1000) / n : NaN };
}
const fallbacksStr = (by: Record<string, number>): string => Object.entries(by).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';

/** bench/gateway.bench.yaml with `server.fastLane: false`, written to a temp folder (policies by absolute path). */
function fastLaneOffConfig(): string {
  const base = readFileSync(path.join(ROOT, 'bench/gateway.bench.yaml'), 'utf8');
  const abs = base.replace('  - ../policies/*.yaml', `  - ${path.join(ROOT, 'policies')}/*.yaml`);
  if (abs === base) throw new Error('bench/gateway.bench.yaml: no ../policies/*.yaml entry to make absolute');
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'ghostgate-bench-fastlane-')), 'gateway.fastlane-off.yaml');
  writeFileSync(file, `${abs}\nserver:\n  fastLane: false\n`);
  return file;
}

/** bench/gateway.bench.yaml with the store policy (rate-limit + supersede) and, for `redis`, store.redis. */
function storeConfig(dir: string, redis: boolean, policy = 'store-policy.yaml'): string {
  const base = readFileSync(path.join(ROOT, 'bench/gateway.bench.yaml'), 'utf8');
  const withPolicy = base.replace(/^policies:\n(  - .*\n)+/m, `policies:\n  - ${policy}\n`);
  if (withPolicy === base) throw new Error('bench/gateway.bench.yaml: no policies: list to replace');
  const file = path.join(dir, `gateway.${redis ? 'redis' : 'local'}.${policy}`);
  writeFileSync(file, withPolicy
    + (redis ? '\nstore:\n  redis:\n    url: ${BENCH_REDIS_URL}\n' : ''));
  return file;
}

/** Start a throwaway redis-server (no persistence) on `port`, or say why not. */
async function startRedisServer(port: number, dir: string): Promise<ChildProcess | string> {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], { stdio: 'ignore' });
  process.on('exit', () => proc.kill('SIGKILL'));
  const failed = new Promise<string>((r) => proc.once('error', (e) => r(`redis-server could not start (${e.message}); apt-get install redis-server`)));
  for (let i = 0; i < 150; i++) {
    const up = await Promise.race([failed, new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    })]);
    if (typeof up === 'string') return up;
    if (up) return proc;
    await sleep(100);
  }
  proc.kill('SIGKILL');
  return 'redis-server did not listen within 15 s';
}

/**
 * Typing users (auth, then rate-limit per subject and supersede per subject and document, as
 * editors would run them) through two gateways at once: one keeps that state in process, one on
 * a real redis-server. Alternating rounds; the limit is never reached, so both answer the same.
 */
async function storeSection(env: Env, protocol: ClientProtocol = 'h2'): Promise<StoreRun> {
  const { lg } = env;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-bench-store-'));
  const policy = (shared: string): string => [
    'name: store-bench',
    'match: { paths: [/v1/completions, /v1/chat/completions] }',
    'steps:',
    '  - use: auth',
    '  - use: rate-limit',
    `    params: { key: claims.sub, ratePerSecond: 1000, burst: 1000, shared: ${shared} }`,
    '  - use: supersede',
    '    params: { keyFrom: { bodyPointer: /model }, identity: claims.sub }',
  ].join('\n') + '\n';
  writeFileSync(path.join(dir, 'store-policy.yaml'), policy('exact'));
  writeFileSync(path.join(dir, 'store-policy-fast.yaml'), policy('fast'));
  const redisPort = await freePort();
  const redis = await startRedisServer(redisPort, dir);
  if (typeof redis === 'string') { log(`  skipped: ${redis}`); return { rounds: [], pairs: [], redisFallbacks: NaN, redisFallbacksBy: {}, redisUp: NaN, skipped: redis }; }
  benchRedisPid = redis.pid;
  try {
    const model = await ModelProc.start(env.ports.model, LATENCY_MODEL);
    env.servers.model = model;
    const local = await GatewayProc.start(env.ports, storeConfig(dir, false));
    env.servers.gw = local;
    const tPorts: Ports = { model: env.ports.model, gateway: await freePort(), admin: await freePort() };
    const twin = await GatewayProc.start(tPorts, storeConfig(dir, false));
    const rPorts: Ports = { model: env.ports.model, gateway: await freePort(), admin: await freePort() };
    const shared = await GatewayProc.start(rPorts, storeConfig(dir, true), { BENCH_REDIS_URL: `redis://127.0.0.1:${redisPort}` });
    const fPorts: Ports = { model: env.ports.model, gateway: await freePort(), admin: await freePort() };
    const fast = await GatewayProc.start(fPorts, storeConfig(dir, true, 'store-policy-fast.yaml'), { BENCH_REDIS_URL: `redis://127.0.0.1:${redisPort}` });
    try {
      await preflight(local, AUTH_TOKENS[0]);
      await preflight(shared, AUTH_TOKENS[0]);
      await preflight(fast, AUTH_TOKENS[0]);
      await preflight(twin, AUTH_TOKENS[0]);
      await lg.run(typingJob(local.url, 'Wl', OPT.users, OPT.warmupSeconds, protocol));
      await lg.run(typingJob(twin.url, 'Wt', OPT.users, OPT.warmupSeconds, protocol));
      await lg.run(typingJob(shared.url, 'Wr', OPT.users, OPT.warmupSeconds, protocol));
      await lg.run(typingJob(fast.url, 'Wf', OPT.users, OPT.warmupSeconds, protocol));
      await model.arrivals('W');
      // Fallbacks are counted over the measured phases only (not start-up, preflight, warm-up).
      const before = fallbacksBy([await shared.metrics(), await fast.metrics()]);
      /** A redis-side phase, with the fallbacks it saw. */
      const redisPhase = async (gw: GatewayProc, r: number, tag: string): Promise<TypingStats> => {
        const f0 = fallbacksBy([await gw.metrics()]);
        const st = await typingPhase(lg, model, gw, 'gateway', r, tag, OPT.seconds, protocol);
        const m = await gw.metrics();
        const late = lateAnswers(m);
        log(`    store fallbacks: ${fallbacksStr(fallbacksSince(f0, fallbacksBy([m])))}; late answers of store calls given up on (takes, leases) (since start): ${late.n}${late.n ? `, mean ${f(late.meanMs)} ms after sending` : ''}`);
        return st;
      };
      const rounds: StoreRounds = [];
      type Side = keyof StoreRounds[number];
      const phases: Record<Side, (r: number) => Promise<TypingStats>> = {
        local: (r) => { log('  in process:'); return typingPhase(lg, model, local, 'gateway', r, `S${r}l`, OPT.seconds, protocol); },
        redis: (r) => { log('  on redis:'); return redisPhase(shared, r, `S${r}r`); },
        fast: (r) => { log('  on redis, rate-limit shared: fast:'); return redisPhase(fast, r, `S${r}f`); },
        twin: (r) => { log('  in process, a second gateway:'); return typingPhase(lg, model, twin, 'gateway', r, `S${r}t`, OPT.seconds, protocol); },
      };
      // The order rotates round by round, so no gateway always runs first.
      const order: Side[] = ['local', 'redis', 'twin', 'fast'];
      for (let r = 1; r <= OPT.rounds; r++) {
        const got: Partial<StoreRounds[number]> = {};
        for (let i = 0; i < order.length; i++) {
          const side = order[(i + r - 1) % order.length]!;
          got[side] = await phases[side](r);
        }
        rounds.push(got as StoreRounds[number]);
      }
      const pairs: StorePairs = [];
      for (let r = 1; r <= OPT.rounds; r++) {
        const redis = await pairedPhase(lg, local, shared, r, `S${r}plr`, protocol);
        log(`  side by side, in process | on redis, round ${r}: ttfb p50 ${f(redis.a)} | ${f(redis.b)} ms (${redis.aN} | ${redis.bN} requests), failed + truncated ${redis.failed}`);
        const twinP = await pairedPhase(lg, local, twin, r, `S${r}plt`, protocol);
        log(`  side by side, in process | second in process, round ${r}: ttfb p50 ${f(twinP.a)} | ${f(twinP.b)} ms (${twinP.aN} | ${twinP.bN} requests), failed + truncated ${twinP.failed}`);
        pairs.push({ redis, twin: twinP });
      }
      const m = [await shared.metrics(), await fast.metrics()];
      const by = fallbacksSince(before, fallbacksBy(m));
      return { rounds, pairs, redisFallbacks: Object.values(by).reduce((n, v) => n + v, 0), redisFallbacksBy: by, redisUp: promSum(m.flat(), 'ghostgate_store_up') };
    } finally {
      await fast.child.stop();
      await shared.child.stop();
      await twin.child.stop();
      await stopServers(env);
    }
  } finally {
    benchRedisPid = undefined;
    redis.kill('SIGKILL');
  }
}

/** Run bench/failover.ts as a child and read its figures. */
async function failoverSection(): Promise<{ checks: Array<{ name: string; value: string; pass: boolean }>; addedMs: number; cost: Record<string, number>; kill: Record<string, number> }> {
  const file = path.join(os.tmpdir(), `ghostgate-failover-${process.pid}.json`);
  const child = spawn(process.execPath, [path.join(ROOT, 'bench/failover.ts'), '--json', file, ...(quick ? ['--requests', '100', '--seconds', '4'] : [])], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  await new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return JSON.parse(readFileSync(file, 'utf8')) as never;
}

type CancelKind = 'beforeFirstToken' | 'midStream' | 'all';
interface PooledShare { share: number; reached: number; sent: number; n: number; neverSent: number; finishedBeforeCancel: number; notReset: number }

function summarizeLatency(run: LatencyRun) {
  const L = run.rounds;
  const pooledShare = (side: 'direct' | 'gateway', k: CancelKind): PooledShare => {
    const cs = L.map((r) => r[side].cancels[k]);
    const reached = sumOf(cs, (c) => c.reached);
    const neverSent = sumOf(cs, (c) => c.neverSent);
    const finishedBeforeCancel = sumOf(cs, (c) => c.finishedBeforeCancel);
    const n = sumOf(cs, (c) => c.n);
    const sent = n - neverSent - finishedBeforeCancel;
    return { share: reached / Math.max(1, sent), reached, sent, n, neverSent, finishedBeforeCancel, notReset: sumOf(cs, (c) => c.notReset) };
  };
  const pooledTokensAfter = (side: 'direct' | 'gateway', k: CancelKind): number => {
    const cs = L.map((r) => r[side].cancels[k]);
    return sumOf(cs, (c) => c.tokensAfterCancelTotal) / Math.max(1, sumOf(cs, (c) => c.reached));
  };
  const cancelSide = (side: 'direct' | 'gateway') => ({
    beforeFirstToken: { ...pooledShare(side, 'beforeFirstToken'), delayP50Ms: med(L, (r) => r[side].cancels.beforeFirstToken.delayP50Ms), delayP99Ms: med(L, (r) => r[side].cancels.beforeFirstToken.delayP99Ms), tokensAfterCancelMean: pooledTokensAfter(side, 'beforeFirstToken') },
    midStream: { ...pooledShare(side, 'midStream'), delayP50Ms: med(L, (r) => r[side].cancels.midStream.delayP50Ms), delayP99Ms: med(L, (r) => r[side].cancels.midStream.delayP99Ms), tokensAfterCancelMean: pooledTokensAfter(side, 'midStream') },
    all: { ...pooledShare(side, 'all'), tokensAfterCancelMean: pooledTokensAfter(side, 'all') },
    gatewayCancelledBeforeForward: side === 'gateway' ? sumOf(L, (r) => r.gateway.gatewayCancelledBeforeForward ?? 0) : null,
  });
  return {
    ttfb: {
      directP50Ms: med(L, (r) => r.direct.ttfbP50Ms), gatewayP50Ms: med(L, (r) => r.gateway.ttfbP50Ms),
      directP99Ms: med(L, (r) => r.direct.ttfbP99Ms), gatewayP99Ms: med(L, (r) => r.gateway.ttfbP99Ms),
      overheadP50Ms: med(L, (r) => r.gateway.ttfbP50Ms - r.direct.ttfbP50Ms),
      overheadP99Ms: med(L, (r) => r.gateway.ttfbP99Ms - r.direct.ttfbP99Ms),
      perRoundOverheadP50Ms: L.map((r) => r.gateway.ttfbP50Ms - r.direct.ttfbP50Ms),
      perRoundOverheadP99Ms: L.map((r) => r.gateway.ttfbP99Ms - r.direct.ttfbP99Ms),
      reusedP50Ms: { direct: med(L, (r) => r.direct.ttfbReusedP50Ms), gateway: med(L, (r) => r.gateway.ttfbReusedP50Ms) },
      reusedShare: { direct: med(L, (r) => r.direct.reusedShare), gateway: med(L, (r) => r.gateway.reusedShare) },
    },
    completion: {
      directP50Ms: med(L, (r) => r.direct.completionP50Ms), gatewayP50Ms: med(L, (r) => r.gateway.completionP50Ms),
      directP99Ms: med(L, (r) => r.direct.completionP99Ms), gatewayP99Ms: med(L, (r) => r.gateway.completionP99Ms),
    },
    requestsPerRound: { direct: med(L, (r) => r.direct.requests), gateway: med(L, (r) => r.gateway.requests) },
    noise: {
      othersCores: { direct: med(L, (r) => r.direct.cpu.others), gateway: med(L, (r) => r.gateway.cpu.others) },
      loadgenLoopDelayMaxMs: { direct: med(L, (r) => r.direct.loadgenLoopDelayMaxMs), gateway: med(L, (r) => r.gateway.loadgenLoopDelayMaxMs) },
      gatewayLoopLagMaxMs: med(L, (r) => r.gateway.gatewayLoopLagMaxMs ?? NaN),
    },
    cancels: { direct: cancelSide('direct'), gateway: cancelSide('gateway') },
    connections: {
      gatewayClientConnectionsPerPhase: med(L, (r) => r.gateway.gatewayClientConnections ?? NaN),
      loadgenSessionsPerPhase: { direct: med(L, (r) => r.direct.clientSessionsOpened), gateway: med(L, (r) => r.gateway.clientSessionsOpened) },
      modelSessionsPerPhase: { direct: med(L, (r) => r.direct.model.sessionsOpened), gateway: med(L, (r) => r.gateway.model.sessionsOpened) },
      gatewayUpstreamSessionsOpened: run.upstreamSessionsOpened,
      modelSessionsOpenedWholeSection: run.modelSessionsOpened,
    },
    failures: {
      direct: { failed: sumOf(L, (r) => r.direct.failed), truncated: sumOf(L, (r) => r.direct.truncated) },
      gateway: { failed: sumOf(L, (r) => r.gateway.failed), truncated: sumOf(L, (r) => r.gateway.truncated) },
    },
  };
}
type LatencySummary = ReturnType<typeof summarizeLatency>;

function summarizeTput(tput: TputRounds) {
  return {
    directRps: med(tput, (r) => r.direct.result.rps), gatewayRps: med(tput, (r) => r.gateway.result.rps),
    ratio: med(tput, (r) => r.gateway.result.rps / r.direct.result.rps),
    perRoundRatio: tput.map((r) => r.gateway.result.rps / r.direct.result.rps),
    directLatencyP50Ms: med(tput, (r) => r.direct.result.latencyP50Ms), gatewayLatencyP50Ms: med(tput, (r) => r.gateway.result.latencyP50Ms),
    gatewayCpuMsPer1000: med(tput, (r) => r.gateway.cpuMsPer1000.gateway),
    modelCpuMsPer1000: { direct: med(tput, (r) => r.direct.cpuMsPer1000.model), gateway: med(tput, (r) => r.gateway.cpuMsPer1000.model) },
    loadgenCpuMsPer1000: { direct: med(tput, (r) => r.direct.cpuMsPer1000.loadgen), gateway: med(tput, (r) => r.gateway.cpuMsPer1000.loadgen) },
    gatewayCores: med(tput, (r) => r.gateway.cpu.gateway),
    othersCores: { direct: med(tput, (r) => r.direct.cpu.others), gateway: med(tput, (r) => r.gateway.cpu.others) },
    failed: sumOf(tput, (r) => r.direct.result.failed + r.gateway.result.failed),
    truncated: sumOf(tput, (r) => r.direct.result.truncated + r.gateway.result.truncated),
    connectionsOpened: { direct: med(tput, (r) => r.direct.result.sessionsOpened), gateway: med(tput, (r) => r.gateway.result.sessionsOpened) },
    sequentialP50Ms: { direct: tput.sequential?.direct.latencyP50Ms ?? NaN, gateway: tput.sequential?.gateway.latencyP50Ms ?? NaN },
  };
}
type TputSummary = ReturnType<typeof summarizeTput>;

/** Table rows and checks, built section by section (a section not run has none). */
class Report {
  rows: string[][] = [];
  checks: Check[] = [];
  row(...cells: string[]): void { this.rows.push(cells); }
  sep(): void { this.rows.push([]); }
  check(name: string, value: string, target: string, pass: boolean): string {
    this.checks.push({ name, value, target, pass });
    return pass ? 'PASS' : 'FAIL';
  }
}
const signMs = (v: number): string => (Number.isFinite(v) ? `${v >= 0 ? '+' : ''}${v.toFixed(2)} ms` : '—');

/** Rows of a latency section; `p` prefixes check names ('' for HTTP/2, 'HTTP/1.1 ' for HTTP/1.1). */
function latencyRows(R: Report, S: LatencySummary, p: string, protocol: ClientProtocol): void {
  const gC = S.cancels.gateway;
  const dC = S.cancels.direct;
  R.row('TTFB p50 (ms)', f(S.ttfb.directP50Ms), f(S.ttfb.gatewayP50Ms), signMs(S.ttfb.overheadP50Ms), `≤ +${TARGETS.ttfbOverheadP50Ms} ms`,
    R.check(`${p}TTFB overhead p50`, `${f(S.ttfb.overheadP50Ms)} ms`, `≤ ${TARGETS.ttfbOverheadP50Ms} ms`, S.ttfb.overheadP50Ms <= TARGETS.ttfbOverheadP50Ms));
  if (protocol === 'h2') {
    R.row('TTFB p99 (ms)', f(S.ttfb.directP99Ms), f(S.ttfb.gatewayP99Ms), signMs(S.ttfb.overheadP99Ms), `≤ +${TARGETS.ttfbOverheadP99Ms} ms`,
      R.check(`${p}TTFB overhead p99`, `${f(S.ttfb.overheadP99Ms)} ms`, `≤ ${TARGETS.ttfbOverheadP99Ms} ms`, S.ttfb.overheadP99Ms <= TARGETS.ttfbOverheadP99Ms));
  } else {
    R.row('TTFB p99 (ms)', f(S.ttfb.directP99Ms), f(S.ttfb.gatewayP99Ms), signMs(S.ttfb.overheadP99Ms), '', '');
    R.row('  TTFB p50, requests on a reused socket (ms)', f(S.ttfb.reusedP50Ms.direct), f(S.ttfb.reusedP50Ms.gateway), signMs(S.ttfb.reusedP50Ms.gateway - S.ttfb.reusedP50Ms.direct), '', '');
    R.row('  requests on a reused socket', pctStr(S.ttfb.reusedShare.direct), pctStr(S.ttfb.reusedShare.gateway), '', '', '');
  }
  R.row('Completion p50 / p99 (ms)', `${f(S.completion.directP50Ms, 1)} / ${f(S.completion.directP99Ms, 1)}`, `${f(S.completion.gatewayP50Ms, 1)} / ${f(S.completion.gatewayP99Ms, 1)}`, '', '', '');
  R.row('Requests per phase (median)', f(S.requestsPerRound.direct, 0), f(S.requestsPerRound.gateway, 0), '', '', '');
  R.sep();
  const share = (c: { share: number; reached: number; sent: number }): string => `${pctStr(c.share)} (${c.reached}/${c.sent})`;
  R.row('Cancels → upstream reset, before 1st token', share(dC.beforeFirstToken), share(gC.beforeFirstToken), '', '100%',
    R.check(`${p}Cancels reaching upstream, before 1st token`, pctStr(gC.beforeFirstToken.share), '100%', gC.beforeFirstToken.share >= TARGETS.cancelReachedShare));
  R.row('Cancels → upstream reset, mid-stream', share(dC.midStream), share(gC.midStream), '', '100%',
    R.check(`${p}Cancels reaching upstream, mid-stream`, pctStr(gC.midStream.share), '100%', gC.midStream.share >= TARGETS.cancelReachedShare));
  R.row('  never sent (reset before forwarding)', String(dC.all.neverSent), `${gC.all.neverSent} (gw metric ${gC.gatewayCancelledBeforeForward})`, '', 'good', '');
  R.row(`  upstream finished < ${TARGETS.cancelDelayP99Ms} ms after the cancel`, String(dC.all.finishedBeforeCancel), String(gC.all.finishedBeforeCancel), '', '(race)', '');
  R.row('  reached upstream, reset too late / never', String(dC.all.notReset), String(gC.all.notReset), '', '0', '');
  R.row('Cancel → upstream p50, before 1st token (ms)', f(dC.beforeFirstToken.delayP50Ms), f(gC.beforeFirstToken.delayP50Ms), signMs(gC.beforeFirstToken.delayP50Ms - dC.beforeFirstToken.delayP50Ms), '', '');
  R.row('Cancel → upstream p99, before 1st token (ms)', f(dC.beforeFirstToken.delayP99Ms), f(gC.beforeFirstToken.delayP99Ms), signMs(gC.beforeFirstToken.delayP99Ms - dC.beforeFirstToken.delayP99Ms), `≤ ${TARGETS.cancelDelayP99Ms} ms`,
    R.check(`${p}Cancel → upstream p99, before 1st token`, `${f(gC.beforeFirstToken.delayP99Ms)} ms`, `≤ ${TARGETS.cancelDelayP99Ms} ms`, gC.beforeFirstToken.delayP99Ms <= TARGETS.cancelDelayP99Ms));
  R.row('Cancel → upstream p50, mid-stream (ms)', f(dC.midStream.delayP50Ms), f(gC.midStream.delayP50Ms), signMs(gC.midStream.delayP50Ms - dC.midStream.delayP50Ms), '', '');
  R.row('Cancel → upstream p99, mid-stream (ms)', f(dC.midStream.delayP99Ms), f(gC.midStream.delayP99Ms), signMs(gC.midStream.delayP99Ms - dC.midStream.delayP99Ms), `≤ ${TARGETS.cancelDelayP99Ms} ms`,
    R.check(`${p}Cancel → upstream p99, mid-stream`, `${f(gC.midStream.delayP99Ms)} ms`, `≤ ${TARGETS.cancelDelayP99Ms} ms`, gC.midStream.delayP99Ms <= TARGETS.cancelDelayP99Ms));
  R.row('Tokens generated after cancel (mean/cancel)', f(dC.all.tokensAfterCancelMean), f(gC.all.tokensAfterCancelMean), '', '', '');
  R.sep();
  const cn = S.connections;
  if (protocol === 'h2') {
    R.row('Client connections opened per phase', `${f(cn.loadgenSessionsPerPhase.direct, 0)} (model saw ${f(cn.modelSessionsPerPhase.direct, 0)})`, `${f(cn.gatewayClientConnectionsPerPhase, 0)} (gw metric)`, '', `${OPT.users} (one per user)`, '');
    R.row('Upstream sessions opened', `${f(cn.modelSessionsPerPhase.direct, 0)} per phase`, `${cn.gatewayUpstreamSessionsOpened} whole section`, '', `pool ${POOL_SIZE}`, '');
  } else {
    R.row('Client sockets opened per phase', f(cn.loadgenSessionsPerPhase.direct, 0), `${f(cn.loadgenSessionsPerPhase.gateway, 0)} (gw metric ${f(cn.gatewayClientConnectionsPerPhase, 0)})`, '', 'users + cancels', '');
    R.row('Upstream sessions opened (gateway, h2c)', '', `${cn.gatewayUpstreamSessionsOpened} whole section`, '', `pool ${POOL_SIZE}`, '');
  }
  const fl = S.failures;
  R.row('Failed / truncated (latency phases)', `${fl.direct.failed} / ${fl.direct.truncated}`, `${fl.gateway.failed} / ${fl.gateway.truncated}`, '', '0 / 0',
    R.check(`${p}Latency: failed + truncated via the gateway`, String(fl.gateway.failed + fl.gateway.truncated), '0', fl.gateway.failed + fl.gateway.truncated === 0));
  R.row('Noise: other processes\' CPU (cores)', f(S.noise.othersCores.direct), f(S.noise.othersCores.gateway), '', '≈ 0', '');
  R.row('Event-loop stall max: loadgen / gateway (ms)', f(S.noise.loadgenLoopDelayMaxMs.direct, 1), `${f(S.noise.loadgenLoopDelayMaxMs.gateway, 1)} / ${f(S.noise.gatewayLoopLagMaxMs, 1)}`, '', '', '');
}

function tputRows(R: Report, T: TputSummary, p: string, protocol: ClientProtocol, target = true): void {
  if (target) {
    R.row('Max throughput (req/s)', f(T.directRps, 0), f(T.gatewayRps, 0), `${f(T.ratio)}×`, `≥ ${TARGETS.throughputRatio}×`,
      R.check(`${p}Throughput ratio`, `${f(T.ratio)}×`, `≥ ${TARGETS.throughputRatio}×`, T.ratio >= TARGETS.throughputRatio));
  } else R.row('Max throughput (req/s)', f(T.directRps, 0), f(T.gatewayRps, 0), `${f(T.ratio)}×`, '', '');
  R.row('  closed-loop latency p50 (ms)', f(T.directLatencyP50Ms), f(T.gatewayLatencyP50Ms), '', '', '');
  R.row(`  one client, sequential on one ${protocol === 'h1' ? 'socket' : 'session'}: p50 (ms)`, f(T.sequentialP50Ms.direct), f(T.sequentialP50Ms.gateway), signMs(T.sequentialP50Ms.gateway - T.sequentialP50Ms.direct), '', '');
  R.row('  CPU ms per 1000 req: gateway process', '', f(T.gatewayCpuMsPer1000, 0), `${f(T.gatewayCores)} cores busy`, '', '');
  R.row('  CPU ms per 1000 req: model / loadgen', `${f(T.modelCpuMsPer1000.direct, 0)} / ${f(T.loadgenCpuMsPer1000.direct, 0)}`, `${f(T.modelCpuMsPer1000.gateway, 0)} / ${f(T.loadgenCpuMsPer1000.gateway, 0)}`, '', '', '');
  if (protocol === 'h1') R.row('  client sockets opened per phase', f(T.connectionsOpened.direct, 0), f(T.connectionsOpened.gateway, 0), '', `${OPT.concurrency}`, '');
  R.row('  failed / truncated (both sides)', '', `${T.failed} / ${T.truncated}`, '', '0 / 0', '');
  R.row('  noise: other processes\' CPU (cores)', f(T.othersCores.direct), f(T.othersCores.gateway), '', '≈ 0', '');
}

async function main(): Promise<void> {
  const startedAt = STARTED_AT;
  const t0 = Date.now();
  const ports: Ports = { model: await freePort(), gateway: await freePort(), admin: await freePort() };
  const runs = (x: Section): boolean => ONLY.has(x);
  log(`ghostgate bench: sections ${OPT.only.join(', ')}; ${OPT.users} typing users, ${OPT.rounds} rounds × ${OPT.seconds} s per side; throughput ${OPT.concurrency} streams (h2: over ${OPT.sessions} sessions; h1: ${OPT.concurrency} sockets), ${OPT.tputSeconds} s per side; GOAWAY ${OPT.goawaySeconds} s${quick ? ' (quick)' : ''}`);
  AUTH_TOKENS = await mintTokens(Math.max(OPT.users, OPT.sessions, OPT.concurrency), ports);
  const lg = await LoadGen.start();
  const env: Env = { lg, ports, servers: {} };
  const total = OPT.only.length;
  let step = 0;
  const head = (s: string): void => log(`\n[${++step}/${total}] ${s}`);
  try {
    let latency: LatencyRun | undefined;
    let tput: TputRounds | undefined;
    let goaway: Awaited<ReturnType<typeof goawaySection>> | undefined;
    let h1Latency: LatencyRun | undefined;
    let h1Tput: TputRounds | undefined;
    const latencyModel = `model --ttft-ms ${LATENCY_MODEL.ttftMs} --token-ms ${LATENCY_MODEL.tokenMs} --tokens ${LATENCY_MODEL.tokens}`;
    const tputModel = `model --ttft-ms ${TPUT_MODEL.ttftMs} --token-ms ${TPUT_MODEL.tokenMs} --tokens ${TPUT_MODEL.tokens}`;
    if (runs('latency')) { head(`latency, HTTP/2 clients: ${latencyModel}`); latency = await latencySection(env, 'h2', 'L'); }
    let floor: FloorRun | undefined;
    if (runs('floor')) { head(`what any proxy costs here: HTTP/2 typing users direct, via the gateway, via bench/null-proxy.ts, via haproxy: ${latencyModel}`); floor = await floorSection(env); }
    if (runs('throughput')) { head(`throughput, HTTP/2 clients: ${tputModel}; ${OPT.concurrency} streams over ${OPT.sessions} sessions`); tput = await throughputSection(env, 'h2', 'T'); }
    if (runs('goaway')) { head(`GOAWAY: model --goaway-every ${OPT.goawayEvery} (latency settings), typing users via the gateway for ${OPT.goawaySeconds} s`); goaway = await goawaySection(env); }
    if (runs('h1-latency')) { head(`latency, HTTP/1.1 keep-alive clients (a cancel closes the socket): ${latencyModel}`); h1Latency = await latencySection(env, 'h1', 'H'); }
    if (runs('h1-throughput')) { head(`throughput, HTTP/1.1 keep-alive clients: ${tputModel}; ${OPT.concurrency} sockets`); h1Tput = await throughputSection(env, 'h1', 'U'); }
    let fastLaneOff: TputRounds | undefined;
    if (runs('fastlane-off')) { head(`throughput, HTTP/2 clients, server.fastLane: false (Fastify's route): ${tputModel}; ${OPT.concurrency} streams over ${OPT.sessions} sessions`); fastLaneOff = await throughputSection(env, 'h2', 'F', fastLaneOffConfig()); }
    let workers: WorkersRun | undefined;
    if (runs('workers')) { head(`every core: --workers 1 and --workers 2, HTTP/2 clients; throughput (${tputModel}; ${OPT.concurrency} streams over ${WORKERS_SESSIONS} sessions) and latency (${latencyModel})`); workers = await workersSection(env); }
    let store: StoreRun | undefined;
    if (runs('store')) { head(`shared store: rate-limit + supersede in process vs on redis-server (store.redis), HTTP/2 typing users: ${latencyModel}`); store = await storeSection(env); }
    // #9.1: bench/failover.ts, its own gateway and two model servers as deployments.
    let failover: { checks: Array<{ name: string; value: string; pass: boolean }>; addedMs: number; cost: Record<string, number>; kill: Record<string, number> } | undefined;
    if (runs('failover')) { head('failover across two deployments (bench/failover.ts): cost of a failover before the first byte; one deployment killed under typing load'); failover = await failoverSection(); }

    // --- summary and table
    const summary: Record<string, unknown> = {};
    const R = new Report();
    R.row('', 'direct', 'gateway', 'gw − direct / ratio', 'target', '');
    const noiseValues: number[] = [];
    if (latency || tput) { R.sep(); R.row('HTTP/2 clients (h2c, one session per user)'); }
    if (latency) {
      const S = summarizeLatency(latency);
      summary.latency = S;
      latencyRows(R, S, '', 'h2');
      noiseValues.push(S.noise.othersCores.direct, S.noise.othersCores.gateway);
    }
    if (floor) {
      const S = floor.typing;
      const C = floor.closed;
      type HopName = 'gateway' | 'node' | 'haproxy' | 'variant';
      const hop = (k: HopName) => ({
        ttfbOverheadP50Ms: med(S, (r) => r[k]!.ttfbP50Ms - r.direct.ttfbP50Ms),
        ttfbOverheadP99Ms: med(S, (r) => r[k]!.ttfbP99Ms - r.direct.ttfbP99Ms),
        cpuMsPer1000: med(S, (r) => (r[k]!.cpu.gatewayCpuMs * 1000) / Math.max(1, r[k]!.requests)),
        throughputRatio: med(C, (r) => r[k]!.result.rps / r.direct.result.rps),
        closedCpuMsPer1000: med(C, (r) => r[k]!.cpuMsPer1000.gateway),
        failedOrTruncated: sumOf(S, (r) => r[k]!.failed + r[k]!.truncated) + sumOf(C, (r) => r[k]!.result.failed + r[k]!.result.truncated),
      });
      const F = { gateway: hop('gateway'), node: hop('node'), haproxy: floor.haproxySkipped === undefined ? hop('haproxy') : null, haproxySkipped: floor.haproxySkipped ?? null,
        variant: OPT.floorVariant ? { ...OPT.floorVariant, ...hop('variant') } : null };
      summary.floor = F;
      R.sep();
      R.row('What a proxy hop costs here (HTTP/2 clients, same run)', 'TTFB p50 / p99 − direct', 'CPU ms/1000 typing', 'throughput / direct', 'CPU ms/1000 closed', 'failed');
      const hopRow = (name: string, h: ReturnType<typeof hop>): void => R.row(name, `${signMs(h.ttfbOverheadP50Ms)} / ${signMs(h.ttfbOverheadP99Ms)}`, f(h.cpuMsPer1000, 0), `${f(h.throughputRatio)}×`, f(h.closedCpuMsPer1000, 0), String(h.failedOrTruncated));
      hopRow('  gateway (auth, policies, metrics, SSE checks)', F.gateway);
      hopRow('  node h2 relay, nothing else (bench/null-proxy.ts)', F.node);
      if (F.haproxy) hopRow('  haproxy 1 thread, h2c both sides', F.haproxy);
      else R.row(`  haproxy skipped: ${floor.haproxySkipped}`);
      if (F.variant) hopRow(`  gateway ${F.variant.name} (Node ${F.variant.nodeArgs.join(' ')})`, F.variant);
      R.row('  gateway − node h2 relay: the gateway\'s own work', `${signMs(F.gateway.ttfbOverheadP50Ms - F.node.ttfbOverheadP50Ms)} / ${signMs(F.gateway.ttfbOverheadP99Ms - F.node.ttfbOverheadP99Ms)}`,
        f(F.gateway.cpuMsPer1000 - F.node.cpuMsPer1000, 0), `${f(F.gateway.throughputRatio / F.node.throughputRatio)}× of the relay's`, f(F.gateway.closedCpuMsPer1000 - F.node.closedCpuMsPer1000, 0), '');
      noiseValues.push(...S.map((r) => r.direct.cpu.others), ...C.map((r) => r.direct.cpu.others));
    }
    if (tput) {
      const T = summarizeTput(tput);
      summary.throughput = T;
      R.sep();
      tputRows(R, T, '', 'h2');
      noiseValues.push(T.othersCores.direct, T.othersCores.gateway);
    }
    if (fastLaneOff) {
      const T = summarizeTput(fastLaneOff);
      summary.fastLaneOff = T;
      R.sep();
      R.row('HTTP/2 clients, server.fastLane: false (compare with the throughput rows above)');
      tputRows(R, T, 'fast lane off: ', 'h2', false);
      noiseValues.push(T.othersCores.direct, T.othersCores.gateway);
    }
    if (workers) {
      summary.workers = workersRows(R, workers);
    }
    if (goaway) {
      const G = goaway.phase;
      const gs = goaway.sessions;
      summary.goaway = { requests: G.requests, failed: G.failed, truncated: G.truncated, cancelled: G.cancelled, retries: G.gatewayUpstreamRetries, ...gs, cancelsReached: G.cancels.all.reachedShare };
      R.sep();
      R.row(`GOAWAY every ${OPT.goawayEvery} (${OPT.goawaySeconds} s via gateway, HTTP/2 clients)`, '', `${G.requests} req`, '', '', '');
      R.row('  failed (non-200) / truncated', '', `${G.failed} / ${G.truncated}`, '', '0 / 0',
        R.check('GOAWAY: failed + truncated', String(G.failed + G.truncated), '0', G.failed + G.truncated === 0));
      R.row('  upstream sessions opened in the phase (pool 2)', '', `${gs.gatewaySessionsOpenedDuringPhase} (model ${gs.modelSessionsOpenedDuringPhase})`, `${gs.goawaysSent} GOAWAYs, ${gs.upstreamRequests} upstream req`, `≈ ${gs.expectedAbout} (req/${OPT.goawayEvery})`,
        R.check('GOAWAY: upstream sessions opened', `${gs.gatewaySessionsOpenedDuringPhase} for ${gs.goawaysSent} GOAWAYs`, 'one per GOAWAY (±1)', Math.abs(gs.gatewaySessionsOpenedDuringPhase - gs.goawaysSent) <= 1));
      R.row('  upstream sessions opened since gateway start', '', String(gs.gatewaySessionsOpened), '', '', '');
      R.row('  cancels reaching upstream / reset too late', '', `${pctStr(G.cancels.all.reachedShare)} / ${G.cancels.all.notReset}`, '', '100% / 0', '');
      R.row('  streams retried by the gateway', '', String(G.gatewayUpstreamRetries), '', '', '');
    }
    if (h1Latency || h1Tput) { R.sep(); R.row('HTTP/1.1 clients (keep-alive; a cancel closes the socket)'); }
    if (h1Latency) {
      const S = summarizeLatency(h1Latency);
      summary.h1Latency = S;
      latencyRows(R, S, 'HTTP/1.1 ', 'h1');
      noiseValues.push(S.noise.othersCores.direct, S.noise.othersCores.gateway);
    }
    if (h1Tput) {
      const T = summarizeTput(h1Tput);
      summary.h1Throughput = T;
      R.sep();
      tputRows(R, T, 'HTTP/1.1 ', 'h1');
      noiseValues.push(T.othersCores.direct, T.othersCores.gateway);
    }
    if (store) {
      R.sep();
      R.row('Shared store (auth + rate-limit + supersede; HTTP/2 typing users)', 'in process', 'on redis', 'redis − in process', 'target', '');
      if (store.skipped) R.row(`  skipped: ${store.skipped}`);
      else {
        const S = store.rounds;
        const p50 = { local: med(S, (r) => r.local.ttfbP50Ms), redis: med(S, (r) => r.redis.ttfbP50Ms) };
        const p99 = { local: med(S, (r) => r.local.ttfbP99Ms), redis: med(S, (r) => r.redis.ttfbP99Ms) };
        const failed = sumOf(S, (r) => r.local.failed + r.redis.failed + r.fast.failed + r.twin.failed + r.local.truncated + r.redis.truncated + r.fast.truncated + r.twin.truncated);
        summary.store = { ttfbP50Ms: p50, ttfbP99Ms: p99, failedOrTruncated: failed, redisFallbacks: store.redisFallbacks, redisFallbacksBy: store.redisFallbacksBy, redisUp: store.redisUp };
        R.row('  TTFB p50', `${f(p50.local)} ms`, `${f(p50.redis)} ms`, signMs(p50.redis - p50.local), '≤ +0.20 ms',
          R.check('store: redis TTFB p50 overhead', signMs(p50.redis - p50.local), '≤ +0.20 ms', p50.redis - p50.local <= 0.2));
        R.row('  TTFB p99', `${f(p99.local)} ms`, `${f(p99.redis)} ms`, signMs(p99.redis - p99.local), '', '');
        const fastP50 = med(S, (r) => r.fast.ttfbP50Ms);
        summary.store = { ...(summary.store as object), fastTtfbP50Ms: fastP50, fastTtfbP99Ms: med(S, (r) => r.fast.ttfbP99Ms) };
        R.row('  TTFB p50, rate-limit shared: fast (no wait with headroom)', `${f(p50.local)} ms`, `${f(fastP50)} ms`, signMs(fastP50 - p50.local), '', '');
        const P = store.pairs;
        const pairRedis = med(P, (p) => p.redis.b - p.redis.a);
        const pairTwin = med(P, (p) => p.twin.b - p.twin.a);
        summary.store = { ...(summary.store as object), sideBySide: { redisMinusLocalP50Ms: pairRedis, twinMinusLocalP50Ms: pairTwin, failed: sumOf(P, (p) => p.redis.failed + p.twin.failed), rounds: P } };
        R.row('  TTFB p50 side by side (one phase, users alternate): on redis / second in process', '', `${signMs(pairRedis)} / ${signMs(pairTwin)}`, signMs(pairRedis), '', '');
        const twinP50 = med(S, (r) => r.twin.ttfbP50Ms);
        summary.store = { ...(summary.store as object), twinTtfbP50Ms: twinP50 };
        R.row('  TTFB p50, a second in-process gateway (the comparison\'s own noise)', `${f(p50.local)} ms`, `${f(twinP50)} ms`, signMs(twinP50 - p50.local), '', '');
        R.row('  failed + truncated / store fallbacks in the phases (redis side)', `${failed}`, `${store.redisFallbacks}`, fallbacksStr(store.redisFallbacksBy), '0 / 0',
          R.check('store: no failures, no fallbacks', `${failed} / ${store.redisFallbacks}`, '0 / 0', failed === 0 && store.redisFallbacks === 0));
        const others = { local: med(S, (r) => r.local.cpu.others), redis: med(S, (r) => r.redis.cpu.others) };
        noiseValues.push(others.local, others.redis);
        R.row('  noise: other processes\' CPU (cores; redis-server not counted)', f(others.local), f(others.redis), '', '≈ 0', '');
        R.row('  CPU cores: gateway / redis-server', f(med(S, (r) => r.local.cpu.gateway)), `${f(med(S, (r) => r.redis.cpu.gateway))} / ${f(med(S, (r) => r.redis.cpu.redis))}`, '', '', '');
        // Per request, medians over rounds: what the store costs the gateway (and redis-server),
        // and its system calls, which do not move with other load on the machine.
        const perReq = (side: 'local' | 'redis' | 'fast', x: (c: CpuUse) => number): number => med(S, (r) => x(r[side].cpu) / Math.max(1, r[side].requests));
        const per = { cpuUs: (c: CpuUse) => c.gatewayCpuMs * 1000, reads: (c: CpuUse) => c.gatewayReads, writes: (c: CpuUse) => c.gatewayWrites, redisUs: (c: CpuUse) => c.redisCpuMs * 1000 };
        summary.store = {
          ...(summary.store as object),
          perRequest: Object.fromEntries((['local', 'redis', 'fast'] as const).map((k) => [k, { gatewayCpuUs: perReq(k, per.cpuUs), gatewayReads: perReq(k, per.reads), gatewayWrites: perReq(k, per.writes), redisCpuUs: perReq(k, per.redisUs) }])),
        };
        R.row('  per request: gateway CPU µs / read, write syscalls', `${f(perReq('local', per.cpuUs), 0)} / ${f(perReq('local', per.reads))}, ${f(perReq('local', per.writes))}`,
          `${f(perReq('redis', per.cpuUs), 0)} / ${f(perReq('redis', per.reads))}, ${f(perReq('redis', per.writes))}`,
          `+${f(perReq('redis', per.cpuUs) - perReq('local', per.cpuUs), 0)} µs / +${f(perReq('redis', per.reads) - perReq('local', per.reads))}, +${f(perReq('redis', per.writes) - perReq('local', per.writes))}`, '', '');
        R.row('  per request: redis-server CPU µs', '', `${f(perReq('redis', per.redisUs), 0)}`, '', '', '');
      }
    }
    if (failover) {
      summary.failover = failover;
      R.sep();
      R.row('Deployments (bench/failover.ts)');
      R.row('  TTFB p50: A refuses (503) then B / B alone / A\'s refusal', '', `${f(failover.cost.codeP50Ms)} / ${f(failover.cost.onlyBP50Ms)} / ${f(failover.cost.aRefusalP50Ms)}`, signMs(failover.addedMs), '≤ +1 ms',
        R.check('failover before first byte: added beyond the failed attempt', `${f(failover.addedMs)} ms`, '≤ 1 ms', failover.addedMs <= 1));
      R.row('  one of two killed under typing load: client errors', '', `${failover.kill.visible} of ${failover.kill.requests}`, `${failover.kill.streamingAtKill} were streaming from it`, '0',
        R.check('deployment killed under load: client errors', String(failover.kill.visible), '0', failover.kill.visible === 0 && failover.kill.cleanTruncated === 0));
    }
    const { rows, checks } = R;
    const widths = [0, 1, 2, 3, 4, 5].map((i) => Math.max(...rows.filter((r) => r.length > 1).map((r) => (r[i] ?? '').length)));
    const line = (r: string[]): string => (r.length === 0 ? '' : r.length === 1 ? r[0] : r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(Math.max(widths[i], 8)))).join('  ').trimEnd());
    const elapsed = (Date.now() - t0) / 1000;
    const header = [
      `ghostgate bench ${startedAt.toISOString()}  (node ${process.version}, ${os.cpus().length} cpus${quick ? ', QUICK' : ''}, ${f(elapsed, 0)} s; sections: ${OPT.only.join(', ')})`,
      `latency: ${OPT.users} typing users, ${OPT.rounds} rounds × ${OPT.seconds} s per side, model ttft ${LATENCY_MODEL.ttftMs} ms / ${LATENCY_MODEL.tokenMs} ms per token / ${LATENCY_MODEL.tokens} tokens; `
        + `throughput: ${OPT.concurrency} streams (h2: over ${OPT.sessions} sessions; h1: ${OPT.concurrency} sockets), ${OPT.tputSeconds} s per side, model ttft 0 / 0 / ${TPUT_MODEL.tokens}`,
      'medians across rounds; cancel shares pooled over rounds',
      '',
    ];
    const passed = checks.filter((c) => c.pass).length;
    const noisy = Math.max(0, ...noiseValues.filter(Number.isFinite));
    const out = [...header, ...rows.map(line), '', `targets: ${passed}/${checks.length} PASS${checks.some((c) => !c.pass) ? `  (FAIL: ${checks.filter((c) => !c.pass).map((c) => c.name).join('; ')})` : ''}`,
      ...(noisy > 0.25 ? [`WARNING: other processes used up to ${f(noisy)} of the ${os.cpus().length} cores during the phases: p99s and throughput are pessimistic; re-run on a quiet machine`] : [])];
    process.stdout.write('\n' + out.join('\n') + '\n');

    mkdirSync(RESULTS_DIR, { recursive: true });
    const file = path.join(RESULTS_DIR, `${STAMP}.json`);
    writeFileSync(file, JSON.stringify({
      startedAt: startedAt.toISOString(), elapsedSeconds: elapsed, node: process.version, cpus: os.cpus().length, quick, loadavg: os.loadavg(),
      options: OPT, models: { latency: LATENCY_MODEL, throughput: TPUT_MODEL }, targets: TARGETS, checks, summary,
      rounds: { latency: latency?.rounds, floor, throughput: tput && { rounds: [...tput], sequential: tput.sequential }, goaway: goaway?.phase, h1Latency: h1Latency?.rounds, h1Throughput: h1Tput && { rounds: [...h1Tput], sequential: h1Tput.sequential }, store: store?.rounds }, table: out.join('\n'),
    }, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2));
    process.stdout.write(`\nresults: ${path.relative(process.cwd(), file)}\n`);
  } finally {
    await stopServers(env);
    lg.child.proc.send({ cmd: 'exit' });
    await Promise.race([lg.child.exited, sleep(3000)]);
    await lg.child.stop();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  killChildren();
  process.exit(1);
});
