/**
 * The benchmark's load generator: its own process (it must not share the gateway's event loop),
 * driven by bench/run.ts over IPC. It stays alive across phases so its JIT is equally warm for the
 * direct and the gateway phases, but opens fresh HTTP/2 sessions (h2c prior knowledge) for each.
 *
 *   typing: N editor users, each on ONE long-lived session: think 20–200 ms, send a streaming
 *           completion, cancel ~45% of them (a third before the first token, the rest mid-stream).
 *   closed: a fixed number of streams in flight over a few sessions, no think time (throughput).
 *
 * Every loop is bounded by the phase's deadline and every request by a hard timeout.
 */
import http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { epochNow, pct } from './types.ts';
import type { ClosedJob, ClosedResult, LoadJob, ReqRecord, TypingJob, TypingResult } from './types.ts';

const { NGHTTP2_CANCEL } = http2.constants;
const DONE_TAIL = 'data: [DONE]\n\n';

const PROMPT_HEAD = 'import math\n\n\ndef fibonacci(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n'.repeat(12);
/** The histogram holds whole timer intervals (resolution 1 ms); keep only the delay beyond it. */
const stallMs = (ns: number): number => Math.max(0, ns / 1e6 - 1);
const rand = (lo: number, hi: number): number => lo + Math.random() * (hi - lo);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function body(maxTokens: number, n: number): string {
  // ~1 KB of code before the cursor, a different tail each time (as an editor's prompt).
  return JSON.stringify({ model: 'ghost-small', prompt: `${PROMPT_HEAD}# edit ${n}\ndef f${n}(`, stream: true, max_tokens: maxTokens, temperature: 0.2 });
}

/** Sessions that received GOAWAY: no new streams on them. */
const goneAway = new WeakSet<ClientHttp2Session>();

/** One user's (or worker group's) session, reopened if the peer closed or GOAWAY'd it. */
class Conn {
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

interface Plan { plan: 'none' | 'before' | 'mid'; beforeDelayMs: number; midAfterTokens: number; midDelayMs: number }

/** Send one streaming completion and follow it to its end; never rejects. */
function request(session: ClientHttp2Session, id: string, payload: string, plan: Plan, timeoutMs: number, auth: string | undefined): Promise<ReqRecord> {
  return new Promise((resolve) => {
    const rec: ReqRecord = {
      id, plan: plan.plan, status: 0, startEpoch: 0, ttfbMs: -1, durationMs: -1, cancelled: false, cancelAtEpoch: -1,
      tokensAtCancel: -1, tokens: 0, done: false, errorEvent: false, rstCode: 0, error: '',
    };
    let events = 0;
    let lastNL = false;
    let tail = '';
    let ended = false;
    let cancelTimer: NodeJS.Timeout | null = null;
    let stream: ClientHttp2Stream;
    const t0 = performance.now();
    rec.startEpoch = performance.timeOrigin + t0;
    const cancel = (): void => {
      cancelTimer = null;
      if (ended || stream.closed || stream.destroyed) return;
      rec.cancelled = true;
      rec.tokensAtCancel = events;
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
      // Count SSE events: each ends with a blank line ("\n\n"); token text never holds a raw newline.
      let i = chunk.indexOf(10);
      while (i !== -1) {
        if (i === 0 ? lastNL : chunk[i - 1] === 10) events++;
        i = chunk.indexOf(10, i + 1);
      }
      lastNL = chunk[chunk.length - 1] === 10;
      tail = (tail + chunk.toString('latin1')).slice(-32);
      if (!rec.errorEvent && chunk.includes('event: error')) rec.errorEvent = true;
      if (plan.plan === 'mid' && cancelTimer === null && !rec.cancelled && events >= plan.midAfterTokens && !tail.endsWith(DONE_TAIL)) {
        cancelTimer = setTimeout(cancel, plan.midDelayMs);
      }
    });
    stream.on('end', () => { ended = true; });
    stream.on('error', (e: NodeJS.ErrnoException) => { if (!rec.error && !rec.cancelled) rec.error = e.code ?? 'stream_error'; });
    stream.on('close', () => {
      ended = true;
      clearTimeout(hard);
      if (cancelTimer !== null) clearTimeout(cancelTimer);
      rec.durationMs = performance.now() - t0;
      rec.rstCode = stream.rstCode ?? 0;
      rec.done = tail.endsWith(DONE_TAIL);
      rec.tokens = rec.done ? events - 1 : events;
      resolve(rec);
    });
    stream.end(payload);
    if (plan.plan === 'before') cancelTimer = setTimeout(cancel, plan.beforeDelayMs);
  });
}

function makePlan(job: TypingJob): Plan {
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
async function connectAll(conns: Conn[]): Promise<void> {
  await Promise.all(conns.map((c) => new Promise<void>((res) => {
    const s = c.get();
    const t = setTimeout(res, 3000);
    s.once('remoteSettings', () => { clearTimeout(t); res(); });
  })));
}

async function runTyping(job: TypingJob): Promise<TypingResult> {
  const loop = monitorEventLoopDelay({ resolution: 1 });
  const records: ReqRecord[] = [];
  // Editors hold long-lived sessions: open them all before the clock starts (one per user).
  const conns = Array.from({ length: job.users }, () => new Conn(job.url));
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
      records.push(await request(conn.get(), id, body(job.maxTokens, n), makePlan(job), job.requestTimeoutMs, auth));
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
  const conns = Array.from({ length: job.sessions }, () => new Conn(job.url));
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
    const auth = job.authTokens.length ? `Bearer ${job.authTokens[(w % conns.length) % job.authTokens.length]}` : undefined;
    for (let n = 0; performance.now() < deadline && n < 10_000_000; n++) {
      const r = await request(conn.get(), `${job.tag}-w${w}-${n}`, body(job.maxTokens, n), none, job.requestTimeoutMs, auth);
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

if (!process.send) {
  process.stderr.write('bench/loadgen.ts is started by bench/run.ts (it needs an IPC channel)\n');
  process.exit(2);
}
process.on('message', (m: LoadJob | { cmd: 'exit' }) => {
  if (m.cmd === 'exit') { process.disconnect(); return; }
  void run(m);
});
process.send({ ready: true });
