/**
 * Processes and clients shared by the fuzz run (bench/fuzz.ts) and the soak (bench/soak.ts): a
 * real gateway (`bin/ghostgate.ts start`) in front of the real model server
 * (`model-server/main.ts`), each its own child process on loopback, in a temp folder that is
 * removed at the end; a seeded PRNG; a raw HTTP/1.1 exchange over a socket (for bytes Node's
 * own client refuses to send); an HTTP/2 request that reports everything it saw.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import type { ClientHttp2Session, OutgoingHttpHeaders } from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { START_MS } from '../test/helpers/h2.ts';
import { TEST_RUN_ENV, trackedEnv } from '../test/helpers/proc.ts';

export const ROOT = path.resolve(import.meta.dirname, '..');
const NODE = process.execPath;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// A tiny seeded PRNG (sfc32 seeded through splitmix32): the same seed gives the same run.

export class Rng {
  #a: number; #b: number; #c: number; #d: number;
  constructor(seed: number) {
    let s = seed >>> 0;
    const mix = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = mix(); this.#b = mix(); this.#c = mix(); this.#d = mix();
    for (let i = 0; i < 12; i++) this.next();
  }
  /** Uniform in [0, 1). */
  next(): number {
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t / 4294967296;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number { return lo + Math.floor(this.next() * (hi - lo + 1)); }
  chance(p: number): boolean { return this.next() < p; }
  pick<T>(xs: readonly T[]): T { return xs[Math.floor(this.next() * xs.length)]!; }
  bytes(n: number): Buffer { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = this.int(0, 255); return b; }
}

// ---------------------------------------------------------------------------------------------
// Processes

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export class Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  exitCode: number | null | undefined = undefined;
  signal: NodeJS.Signals | null = null;
  stdout = '';
  stderrTail = '';
  constructor(name: string, args: string[], env: NodeJS.ProcessEnv = process.env, ipc = false) {
    this.name = name;
    // Under npm test (tap killed the test file at its timeout, say), tracked as the tests' own
    // children are (test/helpers/proc.ts): its own process group and the parent watch, so it
    // does not outlive the test process. A benchmark run starts it plainly.
    const tracked = process.env[TEST_RUN_ENV] !== undefined;
    this.child = spawn(NODE, args, { cwd: ROOT, env: tracked ? trackedEnv(env) : env, detached: tracked, stdio: ['ignore', 'pipe', 'pipe', ...(ipc ? ['ipc' as const] : [])] });
    LIVE.add(this);
    this.child.on('error', () => { /* an IPC send to a child that is gone: its exit says why */ });
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => { if (this.stdout.length < 200_000) this.stdout += d; });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => { this.stderrTail = (this.stderrTail + d).slice(-8000); });
    this.exited = new Promise((res) => this.child.once('exit', (code, sig) => { this.exitCode = code; this.signal = sig; LIVE.delete(this); res(code); }));
  }
  get pid(): number { return this.child.pid ?? -1; }
  get alive(): boolean { return this.exitCode === undefined; }
  async waitStdout(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      const m = this.stdout.match(re);
      if (m) return m;
      if (!this.alive) break;
      await sleep(20);
    }
    throw new Error(`${this.name} did not start (exit ${this.exitCode}); stderr:\n${this.stderrTail}`);
  }
  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => { if (this.alive) this.child.kill('SIGKILL'); }, graceMs);
    await this.exited;
    clearTimeout(t);
  }
  kill(sig: NodeJS.Signals = 'SIGKILL'): void { if (this.alive) this.child.kill(sig); }
}

/** Every child still running: killed when this process exits, however it exits. */
const LIVE = new Set<Proc>();
process.on('exit', () => { for (const p of LIVE) p.kill('SIGKILL'); });

/**
 * The model server on a free port. `tracked`: run it as bench/model-proc.ts, which also answers
 * `{cmd: 'arrivals', prefix}` over IPC with the request ids that reached it.
 */
export async function startModel(args: string[], tracked = false): Promise<{ proc: Proc; port: number; url: string }> {
  const proc = tracked
    ? new Proc('model server', ['bench/model-proc.ts', '--port', '0', ...args], { ...process.env, BENCH_TRACK_ARRIVALS: '1' }, true)
    : new Proc('model server', ['model-server/main.ts', '--port', '0', ...args]);
  const m = await proc.waitStdout(/"event":"listening","port":(\d+)/, START_MS);
  const port = Number(m[1]);
  return { proc, port, url: `http://127.0.0.1:${port}` };
}

/** Same port again (the gateway's upstream URL is fixed): for a restart after a kill. */
export async function startModelOn(port: number, args: string[], tracked = false): Promise<Proc> {
  for (let i = 0; ; i++) {
    const proc = tracked
      ? new Proc('model server', ['bench/model-proc.ts', '--port', String(port), ...args], { ...process.env, BENCH_TRACK_ARRIVALS: '1' }, true)
      : new Proc('model server', ['model-server/main.ts', '--port', String(port), ...args]);
    try {
      await proc.waitStdout(/"event":"listening"/, START_MS);
      return proc;
    } catch (e) {
      if (i >= 20) throw e;
      await sleep(100); // the old socket may linger a moment
    }
  }
}

export interface GatewayFiles { dir: string; configFile: string; policiesDir: string }

/** A temp folder with gateway.config.yaml and policies/; removed by `cleanup`. */
export function gatewayDir(config: string, policies: Record<string, string>): GatewayFiles {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-bench-'));
  const policiesDir = path.join(dir, 'policies');
  mkdirSync(policiesDir);
  for (const [name, text] of Object.entries(policies)) writeFileSync(path.join(policiesDir, name), text);
  const configFile = path.join(dir, 'gateway.config.yaml');
  writeFileSync(configFile, config);
  return { dir, configFile, policiesDir };
}

export function removeDir(dir: string): void {
  try { rmSync(dir, { recursive: true, force: true }); } catch { /* best effort */ }
}

export class GatewayProc {
  readonly proc: Proc;
  readonly url: string;
  readonly admin: string;
  private constructor(proc: Proc, port: number, adminPort: number) {
    this.proc = proc;
    this.url = `http://127.0.0.1:${port}`;
    this.admin = `http://127.0.0.1:${adminPort}`;
  }
  /** Start it and wait for /_ping and a live upstream session. */
  static async start(configFile: string, port: number, adminPort: number, env: NodeJS.ProcessEnv = process.env): Promise<GatewayProc> {
    const proc = new Proc('gateway', ['bin/ghostgate.ts', 'start', '--config', configFile], env);
    const g = new GatewayProc(proc, port, adminPort);
    const until = Date.now() + START_MS;
    while (Date.now() < until && proc.alive) {
      try {
        const r = await fetch(`${g.admin}/_ping`, { signal: AbortSignal.timeout(1000) });
        if (r.ok) return g;
      } catch { /* not yet */ }
      await sleep(100);
    }
    await proc.stop();
    throw new Error(`gateway did not start (exit ${proc.exitCode}); stderr:\n${proc.stderrTail}\nstdout:\n${proc.stdout.slice(-2000)}`);
  }
  async json<T>(p: string, init: RequestInit = {}): Promise<{ status: number; body: T }> {
    const r = await fetch(`${this.admin}${p}`, { ...init, signal: AbortSignal.timeout(10_000) });
    return { status: r.status, body: await r.json() as T };
  }
  async metrics(): Promise<string> {
    const r = await fetch(`${this.admin}/metrics`, { signal: AbortSignal.timeout(10_000) });
    return await r.text();
  }
  /** A dev-mode token from the admin plane. */
  async token(sub = 'fuzz'): Promise<string> {
    const r = await this.json<{ token: string }>('/-/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sub, ttlSeconds: 3600 }) });
    if (r.status !== 200 || typeof r.body.token !== 'string') throw new Error(`POST /-/token answered ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body.token;
  }
}

/** The sum of a Prometheus metric's samples (optionally only those whose labels contain `filter`). */
export function promValue(text: string, name: string, filter = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    if (filter && !rest.includes(filter)) continue;
    const v = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(v)) sum += v;
  }
  return sum;
}

/** RSS (bytes) and open fds of a process (Linux /proc). */
export function procUsage(pid: number): { rssBytes: number; fds: number } {
  let rssBytes = NaN;
  let fds = NaN;
  try {
    const st = readFileSync(`/proc/${pid}/statm`, 'utf8');
    rssBytes = Number(st.split(' ')[1]) * 4096;
  } catch { /* not Linux */ }
  try { fds = readdirSync(`/proc/${pid}/fd`).length; } catch { /* not Linux */ }
  return { rssBytes, fds };
}

// ---------------------------------------------------------------------------------------------
// Clients

export interface Reply {
  /** 0 if no response head arrived. */
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** How it ended: 'end' (complete), 'reset' (h2 RST, code in rstCode), 'closed' (h1 socket closed mid-body or before a head), 'timeout', 'error'. */
  end: 'end' | 'reset' | 'closed' | 'timeout' | 'error';
  rstCode: number;
  error: string;
  ms: number;
}

/** One HTTP/2 request on `session`; never rejects. `timeoutMs` bounds it (end 'timeout'). */
export function h2Request(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body: Buffer | null, timeoutMs: number): Promise<Reply> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const rep: Reply = { status: 0, headers: {}, body: Buffer.alloc(0), end: 'error', rstCode: 0, error: '', ms: 0 };
    const chunks: Buffer[] = [];
    let size = 0;
    let gotEnd = false;
    let st: http2.ClientHttp2Stream;
    try {
      st = session.request(headers, { endStream: body === null });
    } catch (e) {
      rep.error = `client refused: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
      resolve(rep);
      return;
    }
    const timer = setTimeout(() => { rep.error = 'timeout'; st.close(http2.constants.NGHTTP2_CANCEL); }, timeoutMs);
    st.on('response', (h) => { rep.status = Number(h[':status']); rep.headers = h; });
    st.on('data', (c: Buffer) => { if (size < 4_000_000) { chunks.push(c); size += c.length; } });
    st.on('end', () => { gotEnd = true; });
    st.on('error', (e: NodeJS.ErrnoException) => { rep.error ||= e.code ?? e.message; });
    st.on('close', () => {
      clearTimeout(timer);
      rep.ms = performance.now() - t0;
      rep.body = Buffer.concat(chunks, size);
      rep.rstCode = st.rstCode ?? 0;
      rep.end = rep.error === 'timeout' ? 'timeout' : gotEnd ? 'end' : 'reset';
      resolve(rep);
    });
    if (body !== null) st.end(body);
  });
}

export function h2Connect(url: string, timeoutMs = 5000): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(url, { peerMaxConcurrentStreams: 1000 });
    const t = setTimeout(() => { s.destroy(); reject(new Error(`h2 connect to ${url} timed out`)); }, timeoutMs);
    s.once('remoteSettings', () => { clearTimeout(t); resolve(s); });
    s.once('error', (e) => { clearTimeout(t); reject(e); });
    s.on('error', () => { /* surfaces on streams */ });
  });
}

/**
 * Send raw bytes on a fresh socket and read one HTTP/1.1 response (the request should say
 * `connection: close`); `halfClose` ends our side after the bytes (FIN). Parses the status line, headers and the body (content-length or chunked;
 * 'end' only if the body was complete by its framing).
 */
export function h1Raw(port: number, request: Buffer, timeoutMs: number, halfClose = false): Promise<Reply> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const rep: Reply = { status: 0, headers: {}, body: Buffer.alloc(0), end: 'closed', rstCode: 0, error: '', ms: 0 };
    const chunks: Buffer[] = [];
    let done = false;
    const sock = net.connect(port, '127.0.0.1');
    sock.setNoDelay(true);
    const finish = (why: Reply['end'] | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      rep.ms = performance.now() - t0;
      parseH1(Buffer.concat(chunks), rep);
      if (why === 'timeout') { rep.end = 'timeout'; rep.error ||= 'timeout'; }
      resolve(rep);
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    sock.on('data', (c: Buffer) => {
      chunks.push(c);
      // A complete response is enough (the gateway may keep the socket open).
      const probe: Reply = { status: 0, headers: {}, body: Buffer.alloc(0), end: 'closed', rstCode: 0, error: '', ms: 0 };
      parseH1(Buffer.concat(chunks), probe);
      if (probe.end === 'end') finish('end');
    });
    sock.on('error', (e: NodeJS.ErrnoException) => { rep.error ||= e.code ?? e.message; });
    sock.on('close', () => finish(null));
    if (halfClose) sock.end(request);
    else sock.write(request);
  });
}

function parseH1(buf: Buffer, rep: Reply): void {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd === -1) { rep.end = 'closed'; return; }
  const head = buf.subarray(0, headEnd).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '');
  if (!m) { rep.end = 'closed'; rep.error ||= 'bad status line'; return; }
  rep.status = Number(m[1]);
  const headers: Record<string, string> = {};
  for (const l of head.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  rep.headers = headers;
  const rest = buf.subarray(headEnd + 4);
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const out: Buffer[] = [];
    let i = 0;
    for (;;) {
      const nl = rest.indexOf('\r\n', i);
      if (nl === -1) { rep.end = 'closed'; break; }
      const n = parseInt(rest.subarray(i, nl).toString('latin1'), 16);
      if (!Number.isFinite(n)) { rep.end = 'closed'; rep.error ||= 'bad chunk'; break; }
      if (n === 0) { rep.end = rest.indexOf('\r\n', nl + 2) !== -1 ? 'end' : 'closed'; break; }
      if (rest.length < nl + 2 + n + 2) { out.push(rest.subarray(nl + 2)); rep.end = 'closed'; break; }
      out.push(rest.subarray(nl + 2, nl + 2 + n));
      i = nl + 2 + n + 2;
    }
    rep.body = Buffer.concat(out);
  } else if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length']);
    rep.body = rest.subarray(0, n);
    rep.end = rest.length >= n ? 'end' : 'closed';
  } else if (rep.status === 204 || rep.status === 304 || (rep.status >= 100 && rep.status < 200)) {
    rep.end = 'end';
  } else {
    // Body delimited by the close of the connection.
    rep.body = rest;
    rep.end = 'closed';
  }
}

/** Build an HTTP/1.1 request from parts (header lines given as raw strings or Buffers). */
export function h1Bytes(requestLine: string | Buffer, headerLines: Array<string | Buffer>, body: Buffer | null): Buffer {
  const parts: Buffer[] = [Buffer.isBuffer(requestLine) ? requestLine : Buffer.from(requestLine, 'latin1'), Buffer.from('\r\n')];
  for (const h of headerLines) { parts.push(Buffer.isBuffer(h) ? h : Buffer.from(h, 'latin1'), Buffer.from('\r\n')); }
  parts.push(Buffer.from('\r\n'));
  if (body) parts.push(body);
  return Buffer.concat(parts);
}

/** Request ids with `prefix` that reached a tracked model server (bench/model-proc.ts); it forgets them. */
export function modelArrivals(proc: Proc, prefix: string, timeoutMs = 10_000): Promise<string[]> {
  return new Promise((resolve) => {
    const t = setTimeout(() => { proc.child.off('message', on); resolve([]); }, timeoutMs);
    const on = (m: { arrivals?: Array<[string, number, number]> }): void => {
      if (!Array.isArray(m.arrivals)) return;
      clearTimeout(t);
      proc.child.off('message', on);
      resolve(m.arrivals.map((a) => a[0]));
    };
    proc.child.on('message', on);
    proc.child.send?.({ cmd: 'arrivals', prefix });
  });
}

/**
 * TCP sockets the process holds on local port `port`, other than its listener: client
 * connections still open (any state: ESTABLISHED, CLOSE_WAIT…). Linux /proc; NaN elsewhere.
 */
export function socketsOnPort(pid: number, port: number): number {
  try {
    const inodes = new Set<string>();
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const l = readlinkSync(`/proc/${pid}/fd/${fd}`);
        const m = /^socket:\[(\d+)\]$/.exec(l);
        if (m) inodes.add(m[1]!);
      } catch { /* closed meanwhile */ }
    }
    let n = 0;
    const hex = port.toString(16).toUpperCase().padStart(4, '0');
    for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
      let text = '';
      try { text = readFileSync(f, 'utf8'); } catch { continue; }
      for (const line of text.split('\n').slice(1)) {
        const c = line.trim().split(/\s+/);
        if (c.length < 10) continue;
        const local = c[1]!;
        const state = c[3]!;
        if (!local.endsWith(`:${hex}`) || state === '0A') continue; // 0A = LISTEN
        if (inodes.has(c[9]!)) n++;
      }
    }
    return n;
  } catch { return NaN; }
}
