/**
 * The benchmark's load generator: its own process (it must not share the gateway's event loop),
 * driven by bench/run.ts over IPC. It stays alive across phases so its JIT is equally warm for the
 * direct and the gateway phases, but opens fresh connections for each: HTTP/2 sessions (h2c prior
 * knowledge), or HTTP/1.1 keep-alive sockets (`protocol: 'h1'`; a cancel closes the socket, the
 * only way an HTTP/1.1 client can cancel, and the next request opens a new one).
 *
 *   typing: N editor users, each on ONE long-lived session: think 20–200 ms, send a streaming
 *           completion, cancel ~45% of them (a third before the first token, the rest mid-stream).
 *   closed: a fixed number of streams in flight over a few sessions, no think time (throughput).
 *
 * Every loop is bounded by the phase's deadline and every request by a hard timeout.
 */
import http from 'node:http';
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { epochNow, pct } from './types.ts';
import type { ClientProtocol, ClosedJob, ClosedResult, LoadJob, ReqRecord, TypingJob, TypingResult } from './types.ts';

const { NGHTTP2_CANCEL } = http2.constants;
const DONE_TAIL = 'data: [DONE]\n\n';

const PROMPT_HEAD = 'import math\n\n\ndef fibonacci(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n'.repeat(12);
/** The histogram holds whole timer intervals (resolution 1 ms); keep only the delay beyond it. */
const stallMs = (ns: number): number => Math.max(0, ns / 1e6 - 1);
const rand = (lo: number, hi: number): number => lo + Math.random() * (hi - lo);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function body(maxTokens: number, n: number): string {
  // ~1 KB of code before the cursor, a different tail each time (as an editor's prompt).
  return JSON.stringify({ model: 'ghost-small', prompt: `${PROMPT_HEAD}# edit ${n}\ndef f${n}(`, stream: true, max_tokens: maxTokens, temperature: 0.2 });
}

/** Sessions that received GOAWAY: no new streams on them. */
const goneAway = new WeakSet<ClientHttp2Session>();

export interface Plan { plan: 'none' | 'before' | 'mid'; beforeDelayMs: number; midAfterTokens: number; midDelayMs: number }

/** A user's (or worker group's) connection(s) to one URL, over either protocol. */
export interface Client {
  /** Connections opened so far (sessions, or sockets). */
  readonly opened: number;
  /** Open the first connection and wait (bounded) until it is usable. */
  connect(): Promise<void>;
  /** Send one streaming completion and follow it to its end; never rejects. */
  send(id: string, payload: string, plan: Plan, timeoutMs: number, auth: string | undefined): Promise<ReqRecord>;
  close(): Promise<void>;
}

/** One user's (or worker group's) session, reopened if the peer closed or GOAWAY'd it. */
class Conn implements Client {
  url: string;
  session: ClientHttp2Session | null = null;
  opened = 0;
  constructor(url: string) { this.url = url; }
  get(): ClientHttp2Session {
    const s = this.session;
    if (s !== null && !s.closed && !s.destroyed && !goneAway.has(s)) return s;
    const ns = http2.connect(this.url, { peerMaxConcurrentStreams: 1000 });
    ns.on('error', () => { /* surfaces on the streams */ });
    ns.on('goaway', () => { goneAway.add(ns); });
    this.session = ns;
    this.opened++;
    return ns;
  }
  connect(): Promise<void> {
    return new Promise<void>((res) => {
      const s = this.get();
      const t = setTimeout(res, 3000);
      s.once('remoteSettings', () => { clearTimeout(t); res(); });
    });
  }
  send(id: string, payload: string, plan: Plan, timeoutMs: number, auth: string | undefined): Promise<ReqRecord> {
    return request(this.get(), id, payload, plan, timeoutMs, auth);
  }
  close(): Promise<void> {
    const s = this.session;
    this.session = null;
    if (s === null || s.closed || s.destroyed) return Promise.resolve();
    return new Promise((res) => {
      const t = setTimeout(() => { s.destroy(); res(); }, 2000);
      s.close(() => { clearTimeout(t); res(); });
    });
  }
}

/** Send one streaming completion and follow it to its end; never rejects. */
function request(session: ClientHttp2Session, id: string, payload: string, plan: Plan, timeoutMs: number, auth: string | undefined): Promise<ReqRecord> {
  return new Promise((resolve) => {
    const rec: ReqRecord = {
      id, plan: plan.plan, status: 0, startEpoch: 0, ttfbMs: -1, durationMs: -1, cancelled: false, cancelAtEpoch: -1,
      tokensAtCancel: -1, tokens: 0, done: false, errorEvent: false, rstCode: 0, error: '', reused: true, cleanEnd: false,
    };
    const sse = new SseTracker();
    let ended = false;
    let gotEnd = false;
    let cancelTimer: NodeJS.Timeout | null = null;
    let stream: ClientHttp2Stream;
    const t0 = performance.now();
    rec.startEpoch = performance.timeOrigin + t0;
    const cancel = (): void => {
      cancelTimer = null;
      if (ended || stream.closed || stream.destroyed) return;
      rec.cancelled = true;
      rec.tokensAtCancel = sse.events;
      rec.cancelAtEpoch = epochNow();
      stream.close(NGHTTP2_CANCEL);
    };
    try {
      const headers: http2.OutgoingHttpHeaders = {
        ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json',
        accept: 'text/event-stream', 'x-request-id': id, 'user-agent': 'ghostgate-bench/1', 'editor-version': 'vscode/1.95.0',
      };
      if (auth !== undefined) headers.authorization = auth;
      stream = session.request(headers);
    } catch (e) {
      rec.error = (e as NodeJS.ErrnoException).code ?? 'request_failed';
      resolve(rec);
      return;
    }
    const hard = setTimeout(() => { if (!ended) { rec.error = 'timeout'; stream.close(NGHTTP2_CANCEL); } }, timeoutMs);
    stream.on('response', (h) => { rec.status = Number(h[':status']); });
    stream.on('data', (chunk: Buffer) => {
      if (rec.ttfbMs < 0) rec.ttfbMs = performance.now() - t0;
      sse.push(chunk);
      if (plan.plan === 'mid' && cancelTimer === null && !rec.cancelled && sse.events >= plan.midAfterTokens && !sse.done) {
        cancelTimer = setTimeout(cancel, plan.midDelayMs);
      }
    });
    stream.on('end', () => { ended = true; gotEnd = true; });
    stream.on('error', (e: NodeJS.ErrnoException) => { if (!rec.error && !rec.cancelled) rec.error = e.code ?? 'stream_error'; });
    stream.on('close', () => {
      ended = true;
      clearTimeout(hard);
      if (cancelTimer !== null) clearTimeout(cancelTimer);
      rec.durationMs = performance.now() - t0;
      rec.rstCode = stream.rstCode ?? 0;
      rec.errorEvent = sse.errorEvent;
      // Complete = `data: [DONE]` and END_STREAM (an RST, even NO_ERROR, is not an end).
      rec.done = gotEnd && sse.done;
      // END_STREAM, or RST_STREAM(NO_ERROR): both close with code 0 (a destroyed session ends its
      // streams' readable side too, but with a non-zero code).
      rec.cleanEnd = rec.status !== 0 && rec.error === '' && rec.rstCode === 0;
      rec.tokens = sse.done ? sse.events - 1 : sse.events;
      resolve(rec);
    });
    stream.end(payload);
    if (plan.plan === 'before') cancelTimer = setTimeout(cancel, plan.beforeDelayMs);
  });
}

/** Counts SSE events and remembers the tail of a response body (both protocols). */
class SseTracker {
  events = 0;
  lastNL = false;
  tail = '';
  errorEvent = false;
  push(chunk: Buffer): void {
    // Each event ends with a blank line ("\n\n"); token text never holds a raw newline.
    let i = chunk.indexOf(10);
    while (i !== -1) {
      if (i === 0 ? this.lastNL : chunk[i - 1] === 10) this.events++;
      i = chunk.indexOf(10, i + 1);
    }
    this.lastNL = chunk[chunk.length - 1] === 10;
    this.tail = (this.tail + chunk.toString('latin1')).slice(-32);
    if (!this.errorEvent && chunk.includes('event: error')) this.errorEvent = true;
  }
  get done(): boolean { return this.tail.endsWith(DONE_TAIL); }
}

/**
 * HTTP/1.1 keep-alive: one agent per user (maxSockets 1, so every request after the first reuses
 * the socket unless a cancel closed it), or one agent with `maxSockets` for a closed loop. A cancel
 * destroys the request, i.e. closes the socket: HTTP/1.1 has no other way to abandon a response.
 */
class H1Conn implements Client {
  readonly url: string;
  readonly agent: http.Agent;
  opened = 0;
  readonly #seen = new WeakSet<Socket>();
  constructor(url: string, maxSockets = 1) {
    this.url = `${url}/v1/completions`;
    this.agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets, scheduling: 'lifo' });
  }
  /** The agent opens a socket with the first request (a TCP connect on loopback: ~0.1 ms, same for both sides). */
  connect(): Promise<void> { return Promise.resolve(); }
  send(id: string, payload: string, plan: Plan, timeoutMs: number, auth: string | undefined): Promise<ReqRecord> {
    return new Promise((resolve) => {
      const rec: ReqRecord = {
        id, plan: plan.plan, status: 0, startEpoch: 0, ttfbMs: -1, durationMs: -1, cancelled: false, cancelAtEpoch: -1,
        tokensAtCancel: -1, tokens: 0, done: false, errorEvent: false, rstCode: 0, error: '', reused: false, cleanEnd: false,
      };
      const sse = new SseTracker();
      let finished = false;
      let complete = false;
      let cancelTimer: NodeJS.Timeout | null = null;
      const t0 = performance.now();
      rec.startEpoch = performance.timeOrigin + t0;
      const headers: http.OutgoingHttpHeaders = {
        'content-type': 'application/json', 'content-length': Buffer.byteLength(payload),
        accept: 'text/event-stream', 'x-request-id': id, 'user-agent': 'ghostgate-bench/1', 'editor-version': 'vscode/1.95.0',
      };
      if (auth !== undefined) headers.authorization = auth;
      const req = http.request(this.url, { method: 'POST', agent: this.agent, headers });
      const finish = (): void => {
        if (finished) return;
        finished = true;
        clearTimeout(hard);
        if (cancelTimer !== null) clearTimeout(cancelTimer);
        rec.durationMs = performance.now() - t0;
        rec.done = complete && sse.done;
        rec.cleanEnd = complete;
        rec.errorEvent = sse.errorEvent;
        rec.tokens = sse.done ? sse.events - 1 : sse.events;
        if (!complete && !rec.cancelled && rec.error === '' && rec.status !== 0) rec.error = 'aborted';
        resolve(rec);
      };
      const cancel = (): void => {
        cancelTimer = null;
        if (finished || complete) return;
        rec.cancelled = true;
        rec.tokensAtCancel = sse.events;
        rec.cancelAtEpoch = epochNow();
        req.destroy();
      };
      const hard = setTimeout(() => { if (!finished) { rec.error = 'timeout'; req.destroy(); } }, timeoutMs);
      req.on('socket', (s: Socket) => {
        if (this.#seen.has(s)) rec.reused = true;
        else { this.#seen.add(s); this.opened++; }
      });
      req.on('response', (res: http.IncomingMessage) => {
        rec.status = res.statusCode ?? 0;
        res.on('data', (chunk: Buffer) => {
          if (rec.ttfbMs < 0) rec.ttfbMs = performance.now() - t0;
          sse.push(chunk);
          if (plan.plan === 'mid' && cancelTimer === null && !rec.cancelled && sse.events >= plan.midAfterTokens && !sse.done) {
            cancelTimer = setTimeout(cancel, plan.midDelayMs);
          }
        });
        res.on('end', () => { complete = res.complete; finish(); });
        res.on('error', () => { /* 'close' follows */ });
        res.on('close', finish);
      });
      req.on('error', (e: NodeJS.ErrnoException) => { if (!rec.error && !rec.cancelled) rec.error = e.code ?? 'request_error'; });
      req.on('close', () => { if (rec.status === 0 || rec.cancelled || rec.error !== '') finish(); });
      req.end(payload);
      if (plan.plan === 'before') cancelTimer = setTimeout(cancel, plan.beforeDelayMs);
    });
  }
  close(): Promise<void> { this.agent.destroy(); return Promise.resolve(); }
}

export function newClient(protocol: ClientProtocol | undefined, url: string, maxSockets = 1): Client {
  return protocol === 'h1' ? new H1Conn(url, maxSockets) : new Conn(url);
}

export function makePlan(job: TypingJob): Plan {
  const p: Plan = { plan: 'none', beforeDelayMs: 0, midAfterTokens: 0, midDelayMs: 0 };
  if (Math.random() >= job.cancelShare) return p;
  if (Math.random() < job.beforeFirstShare) {
    p.plan = 'before';
    p.beforeDelayMs = rand(0, job.ttftMs * 0.9); // somewhere in the prefill
  } else {
    p.plan = 'mid';
    // After the k-th token (k in [1, N-2], so the model still has ≥ 2 tokens to go), at a random
    // instant before the next one: a keystroke does not wait for a token boundary.
    p.midAfterTokens = 1 + Math.floor(Math.random() * Math.max(1, job.maxTokens - 2));
    p.midDelayMs = rand(0, job.tokenMs);
  }
  return p;
}

/** Open every session and wait (bounded) for the peer's SETTINGS: connecting is not what we time. */
async function connectAll(conns: Client[]): Promise<void> {
  await Promise.all(conns.map((c) => c.connect()));
}

async function runTyping(job: TypingJob): Promise<TypingResult> {
  const loop = monitorEventLoopDelay({ resolution: 1 });
  const records: ReqRecord[] = [];
  // Editors hold long-lived sessions: open them all before the clock starts (one per user).
  const urls = job.urls ?? [job.url];
  const conns = Array.from({ length: job.users }, (_, i) => newClient(job.protocol, urls[i % urls.length]!));
  await connectAll(conns);
  loop.enable();
  const t0 = performance.now();
  const deadline = t0 + job.seconds * 1000;
  const user = async (u: number): Promise<void> => {
    const auth = job.authTokens.length ? `Bearer ${job.authTokens[u % job.authTokens.length]}` : undefined;
    const conn = conns[u];
    await sleep(rand(0, job.thinkMaxMs)); // users don't start in lockstep
    for (let n = 0; performance.now() < deadline && n < 100_000; n++) {
      const id = `${job.tag}-u${u}-${n}`;
      records.push(await conn.send(id, body(job.maxTokens, n), makePlan(job), job.requestTimeoutMs, auth));
      const think = rand(job.thinkMinMs, job.thinkMaxMs);
      if (performance.now() + think >= deadline) break;
      await sleep(think);
    }
  };
  await Promise.all(Array.from({ length: job.users }, (_, u) => user(u)));
  const wallMs = performance.now() - t0;
  await Promise.all(conns.map((c) => c.close()));
  loop.disable();
  return {
    kind: 'typing', records, wallMs, sessionsOpened: conns.reduce((n, c) => n + c.opened, 0),
    loopDelayMaxMs: stallMs(loop.max), loopDelayP99Ms: stallMs(loop.percentile(99)),
  };
}

async function runClosed(job: ClosedJob): Promise<ClosedResult> {
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  // HTTP/1.1: one agent with `concurrency` keep-alive sockets (one request in flight on each).
  const conns = job.protocol === 'h1' ? [newClient('h1', job.url, job.concurrency)] : Array.from({ length: job.sessions }, () => newClient('h2', job.url));
  await connectAll(conns);
  const t0 = performance.now();
  const deadline = t0 + job.seconds * 1000;
  let completed = 0;
  let failed = 0;
  let truncated = 0;
  const lat: number[] = [];
  const none: Plan = { plan: 'none', beforeDelayMs: 0, midAfterTokens: 0, midDelayMs: 0 };
  const worker = async (w: number): Promise<void> => {
    const conn = conns[w % conns.length];
    const auth = job.authTokens.length ? `Bearer ${job.authTokens[(w % job.sessions) % job.authTokens.length]}` : undefined;
    for (let n = 0; performance.now() < deadline && n < 10_000_000; n++) {
      const r = await conn.send(`${job.tag}-w${w}-${n}`, body(job.maxTokens, n), none, job.requestTimeoutMs, auth);
      const inWindow = performance.now() <= deadline;
      if (!inWindow) break;
      if (r.status !== 200) failed++;
      else if (!r.done || r.errorEvent) truncated++;
      else { completed++; if (lat.length < 200_000) lat.push(r.durationMs); }
    }
  };
  await Promise.all(Array.from({ length: job.concurrency }, (_, w) => worker(w)));
  await Promise.all(conns.map((c) => c.close()));
  loop.disable();
  return {
    kind: 'closed', completed, failed, truncated, seconds: job.seconds, rps: completed / job.seconds,
    latencyP50Ms: pct(lat, 50), latencyP99Ms: pct(lat, 99), sessionsOpened: conns.reduce((n, c) => n + c.opened, 0),
    loopDelayMaxMs: stallMs(loop.max), loopDelayP99Ms: stallMs(loop.percentile(99)),
  };
}

async function run(job: LoadJob): Promise<void> {
  try {
    const result = job.cmd === 'typing' ? await runTyping(job) : await runClosed(job);
    process.send!({ ok: true, result });
  } catch (e) {
    process.send!({ ok: false, error: e instanceof Error ? e.stack ?? e.message : String(e) });
  }
}

// Run as a child of bench/run.ts; imported (by bench/soak.ts) for its clients.
if (import.meta.main) {
  if (!process.send) {
    process.stderr.write('bench/loadgen.ts is started by bench/run.ts (it needs an IPC channel)\n');
    process.exit(2);
  }
  process.on('message', (m: LoadJob | { cmd: 'exit' }) => {
    if (m.cmd === 'exit') { process.disconnect(); return; }
    void run(m);
  });
  process.send({ ready: true });
}
