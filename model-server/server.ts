/**
 * A fake OpenAI-compatible completion server: the default upstream for `npm start`, the upstream
 * the tests run as a real child process, and the baseline of the benchmark.
 *
 * It must stay cheap per request (the benchmark compares the gateway against a direct connection
 * to this server), so: no per-request logging, token events precomputed as string fragments, one
 * timer object per request phase, timer callbacks that take the exchange as an argument instead of
 * allocating closures per token.
 *
 * Its real purpose is cancellation accounting: every request the client abandons before the
 * server finished is recorded (phase, time since request start, tokens sent, RST code), so tests
 * and the benchmark can check that the gateway resets upstream streams the instant its own client
 * cancels.
 *
 * One cleartext port speaks h2c (prior knowledge) and HTTP/1.1 keep-alive.
 * HTTP/2 requests use the core `'stream'` API rather than the compatibility layer (it is cheaper);
 * HTTP/1.1 requests come through `acceptHttp1`.
 */
import { EventEmitter } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { acceptHttp1 } from '../core/net/dual-protocol.ts';

const {
  NGHTTP2_NO_ERROR,
  NGHTTP2_INTERNAL_ERROR,
  NGHTTP2_REFUSED_STREAM,
} = http2.constants;

export interface ModelServerOptions {
  /** TCP port; 0 picks a free one. Default 8100. */
  port?: number;
  /** Interface to bind. Default 127.0.0.1. */
  host?: string;
  /** Time to first token (simulated prefill), ms. Default 200. */
  ttftMs?: number;
  /** Time between tokens, ms. 0 sends all tokens at once. Default 20. */
  tokenMs?: number;
  /** Tokens per response (capped by the request's `max_tokens`). Default 64. */
  tokens?: number;
  /** Send GOAWAY on an h2 session when its N-th stream arrives (HTTP/1.1: close after N). 0 = off. */
  goawayEvery?: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS. Default 128 (as nginx). */
  maxConcurrentStreams?: number;
  /** If set, model routes require `authorization: Bearer <key>`. */
  key?: string;
  /**
   * Answer every model request with this status (a JSON error, before any token), e.g. 503 or 429
   * for failover tests; 0 = off. `POST /_fail {"status": N, "retryAfter": S}` changes it at run time.
   */
  failStatus?: number;
  /** With `failStatus`: a `Retry-After: S` header (seconds) on those answers. 0 = none. */
  retryAfter?: number;
  /** Sent as `x-model-server` on every model response (tells deployments apart in tests). Default: none. */
  name?: string;
}

export const MODEL_SERVER_DEFAULTS = {
  port: 8100,
  host: '127.0.0.1',
  ttftMs: 200,
  tokenMs: 20,
  tokens: 64,
  goawayEvery: 0,
  maxConcurrentStreams: 128,
  failStatus: 0,
  retryAfter: 0,
} as const;

export type AbortPhase = 'before-first-token' | 'streaming';

export interface AbortRecord {
  /** `x-request-id` of the request, or a generated `ms-<n>`. */
  id: string;
  protocol: 'h2' | 'h1';
  phase: AbortPhase;
  /** ms since the request arrived (performance.now()) when the server noticed the abort. */
  abortedAtMs: number;
  /** High-resolution epoch ms (performance.timeOrigin + performance.now()) when the request arrived. */
  arrivedAtEpochMs: number;
  /** High-resolution epoch ms when the server noticed the abort (comparable across processes). */
  abortedAtEpochMs: number;
  /** Token events written before the abort (non-streaming: tokens generated so far). */
  tokensSent: number;
  /** Tokens generated after the stream was already gone but before the server noticed. */
  tokensAfterAbort: number;
  /** HTTP/2 RST_STREAM code of the stream (8 = CANCEL); null for HTTP/1.1. */
  rstCode: number | null;
}

export interface RequestRecord {
  id: string;
  /** Epoch ms when the request arrived. */
  at: number;
  /** High-resolution epoch ms (performance.timeOrigin + performance.now()) when the request arrived. */
  atEpochMs: number;
  method: string;
  path: string;
  /** Headers as received (h2 includes pseudo-headers). */
  headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON body, or the raw text if it was not JSON. */
  body: unknown;
}

/** A model request answered in full (emitted only while someone listens for `'complete'`). */
export interface CompleteRecord {
  id: string;
  /** High-resolution epoch ms (performance.timeOrigin + performance.now()) when the last byte was written. */
  atEpochMs: number;
}

export interface ModelServerStats {
  /** Model requests received (control routes such as /_stats are not counted). */
  requests: number;
  /** Model requests answered in full (200). */
  completed: number;
  /** Model requests the client abandoned before the server finished. */
  aborted: number;
  /** Requests failed on purpose (`x-fail-after-tokens`, `x-status`). */
  failedInjected: number;
  /** Requests answered with a 4xx error (bad JSON, wrong key, ...). */
  errors: number;
  sessions: { opened: number; active: number; goawaysSent: number; refusedStreams: number };
  h1Connections: number;
  inFlight: number;
  /** The last 10 000 abort records, oldest first. */
  aborts: AbortRecord[];
  tokensSent: number;
  tokensAfterAbort: number;
}

export interface ModelServerHandle {
  port: number;
  host: string;
  /** `http://host:port` */
  url: string;
  stats(): ModelServerStats;
  reset(): void;
  /** The last 50 model requests, oldest first. */
  requests(): RequestRecord[];
  /** `'request'` (RequestRecord), `'abort'` (AbortRecord) and `'complete'` (CompleteRecord). */
  events: EventEmitter;
  /** Stop at once: in-flight requests are cut (sessions and sockets destroyed). */
  close(): Promise<void>;
  /**
   * Stop gracefully: stop listening, refuse new requests (h2: GOAWAY, then REFUSED_STREAM above
   * it; HTTP/1.1: idle sockets closed, busy ones answer `connection: close` or close after the
   * response), let the requests in flight finish, close each connection once it is idle.
   * Resolves when every connection has closed; what still runs after `graceMs` is cut as by
   * `close()`.
   */
  drain(graceMs: number): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Precomputed token text and SSE fragments.

/** A Python snippet split into code-looking tokens; responses cycle through it. */
const SNIPPET_TOKENS: readonly string[] = [
  'def', ' fibonacci', '(n', ':', ' int', ')', ' ->', ' int', ':', '\n', '    ', '"""', 'Return',
  ' the', ' n', '-th', ' Fibonacci', ' number', '."""', '\n', '    ', 'a', ',', ' b', ' =', ' 0',
  ',', ' 1', '\n', '    ', 'for', ' _', ' in', ' range', '(n', '):', '\n', '        ', 'a', ',',
  ' b', ' =', ' b', ',', ' a', ' +', ' b', '\n', '    ', 'return', ' a', '\n', '\n', '\n', 'def',
  ' main', '():', '\n', '    ', 'print', '([', 'fibonacci', '(i', ')', ' for', ' i', ' in',
  ' range', '(', '10', ')])', '\n',
];
const NTOK = SNIPPET_TOKENS.length;
const TOKEN_JSON = SNIPPET_TOKENS.map((t) => JSON.stringify(t));

type Finish = 'null' | '"length"' | '"stop"';
const fragments = (fn: (tokJson: string, finish: Finish) => string) => ({
  mid: TOKEN_JSON.map((j) => fn(j, 'null')),
  length: TOKEN_JSON.map((j) => fn(j, '"length"')),
  stop: TOKEN_JSON.map((j) => fn(j, '"stop"')),
});
/** Everything of a completion chunk after `data: {"id":..,"object":..,"created":..,"model":..`. */
const CMPL = fragments((j, f) =>
  `,"choices":[{"text":${j},"index":0,"logprobs":null,"finish_reason":${f}}]}\n\n`);
const CHAT = fragments((j, f) =>
  `,"choices":[{"index":0,"delta":{"content":${j}},"finish_reason":${f}}]}\n\n`);
const chatFirst = (j: string, f: Finish): string =>
  `,"choices":[{"index":0,"delta":{"role":"assistant","content":${j}},"finish_reason":${f}}]}\n\n`;
const DONE = 'data: [DONE]\n\n';

const textCache = new Map<number, string>();
function textOf(count: number): string {
  let s = textCache.get(count);
  if (s === undefined) {
    const parts = new Array<string>(count);
    for (let i = 0; i < count; i++) parts[i] = SNIPPET_TOKENS[i % NTOK];
    s = parts.join('');
    if (textCache.size < 1024) textCache.set(count, s);
  }
  return s;
}

const MAX_BODY_BYTES = 8 * 1024 * 1024;
const MAX_ABORTS = 10_000;
const MAX_REQUESTS = 50;

// ---------------------------------------------------------------------------------------------

/** A fixed-size ring buffer; `list()` returns oldest first. */
class Ring<T> {
  items: T[] = [];
  next = 0;
  cap: number;
  constructor(cap: number) { this.cap = cap; }
  push(v: T): void {
    if (this.items.length < this.cap) this.items.push(v);
    else { this.items[this.next] = v; this.next = (this.next + 1) % this.cap; }
  }
  list(): T[] {
    return this.items.length < this.cap ? this.items.slice()
      : this.items.slice(this.next).concat(this.items.slice(0, this.next));
  }
  clear(): void { this.items = []; this.next = 0; }
}

interface Counters {
  requests: number; completed: number; aborted: number; failedInjected: number; errors: number;
  sessionsOpened: number; goawaysSent: number; refusedStreams: number; h1Connections: number;
  tokensSent: number; tokensAfterAbort: number;
}
const zeroCounters = (): Counters => ({
  requests: 0, completed: 0, aborted: 0, failedInjected: 0, errors: 0,
  sessionsOpened: 0, goawaysSent: 0, refusedStreams: 0, h1Connections: 0,
  tokensSent: 0, tokensAfterAbort: 0,
});

interface SessionState { streams: number; goawayLastId: number }

type Kind = 'completions' | 'chat';

interface Config {
  ttftMs: number; tokenMs: number; tokens: number; goawayEvery: number; key: Buffer | null;
  failStatus: number; retryAfter: number; name: string;
}

class Server {
  cfg: Config;
  c: Counters = zeroCounters();
  inFlight = 0;
  aborts = new Ring<AbortRecord>(MAX_ABORTS);
  recent = new Ring<RequestRecord>(MAX_REQUESTS);
  events = new EventEmitter();
  seq = 0;
  cmplSeq = 0;
  /** Live exchanges, so close() can stop their timers. */
  live = new Set<Exchange>();
  sessions = new Set<http2.ServerHttp2Session>();
  closing = false;
  constructor(cfg: Config) { this.cfg = cfg; }

  stats(): ModelServerStats {
    const c = this.c;
    return {
      requests: c.requests, completed: c.completed, aborted: c.aborted,
      failedInjected: c.failedInjected, errors: c.errors,
      sessions: { opened: c.sessionsOpened, active: this.sessions.size, goawaysSent: c.goawaysSent, refusedStreams: c.refusedStreams },
      h1Connections: c.h1Connections, inFlight: this.inFlight, aborts: this.aborts.list(),
      tokensSent: c.tokensSent, tokensAfterAbort: c.tokensAfterAbort,
    };
  }
  reset(): void { this.c = zeroCounters(); this.aborts.clear(); this.recent.clear(); }
}

/** One model request, on either protocol. */
class Exchange {
  srv: Server;
  id: string;
  t0: number;
  protocol: 'h2' | 'h1';
  h2: http2.ServerHttp2Stream | null;
  res: http.ServerResponse | null;
  /** The server finished (or failed on purpose / answered an error): a close is not an abort. */
  done = false;
  counted = false;
  ttftPassed = false;
  headersSent = false;
  streamMode = false;
  headersAfterTtft = false;
  kind: Kind = 'completions';
  count = 0;
  tokenMs = 0;
  ttftMs = 0;
  failAfter = -1;
  tokensSent = 0;
  tokensAfterAbort = 0;
  finish: Finish = '"stop"';
  prefix = '';
  model = '';
  created = 0;
  promptTokens = 0;
  timer: NodeJS.Timeout | null = null;
  interval: NodeJS.Timeout | null = null;

  constructor(srv: Server, id: string, protocol: 'h2' | 'h1', h2s: http2.ServerHttp2Stream | null, res: http.ServerResponse | null) {
    this.srv = srv;
    this.id = id;
    this.t0 = performance.now();
    this.protocol = protocol;
    this.h2 = h2s;
    this.res = res;
  }

  gone(): boolean {
    return this.h2 !== null ? (this.h2.destroyed || this.h2.closed) : (this.res as http.ServerResponse).destroyed;
  }

  sendHeaders(status: number, contentType: string, length: number, retryAfter = 0): void {
    if (this.headersSent) return;
    this.headersSent = true;
    if (this.h2 !== null) {
      const h: http2.OutgoingHttpHeaders = { ':status': status, 'content-type': contentType, 'x-request-id': this.id };
      if (retryAfter > 0) h['retry-after'] = String(retryAfter);
      if (this.srv.cfg.name !== '') h['x-model-server'] = this.srv.cfg.name;
      if (length >= 0) h['content-length'] = length;
      else h['cache-control'] = 'no-cache';
      this.h2.respond(h);
    } else {
      const res = this.res as http.ServerResponse;
      res.statusCode = status;
      if (length >= 0) {
        res.setHeader('content-type', contentType);
        res.setHeader('content-length', length);
        res.setHeader('x-request-id', this.id);
        if (retryAfter > 0) res.setHeader('retry-after', String(retryAfter));
        if (this.srv.cfg.name !== '') res.setHeader('x-model-server', this.srv.cfg.name);
      } else {
        res.writeHead(status, ['content-type', 'text/event-stream', 'cache-control', 'no-cache', 'x-request-id', this.id, ...(this.srv.cfg.name !== '' ? ['x-model-server', this.srv.cfg.name] : [])]);
        res.flushHeaders();
      }
    }
  }

  write(chunk: string): void {
    if (this.h2 !== null) this.h2.write(chunk);
    else (this.res as http.ServerResponse).write(chunk);
  }

  end(chunk: string): void {
    if (this.h2 !== null) this.h2.end(chunk);
    else (this.res as http.ServerResponse).end(chunk);
  }

  stopTimers(): void {
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null; }
    if (this.interval !== null) { clearInterval(this.interval); this.interval = null; }
  }

  /** Answer a JSON body and mark the exchange done. */
  json(status: number, body: unknown, retryAfter = 0): void {
    if (this.done) return;
    this.done = true;
    this.stopTimers();
    if (this.gone()) return;
    const text = JSON.stringify(body);
    this.sendHeaders(status, 'application/json', Buffer.byteLength(text), retryAfter);
    this.end(text);
  }

  error(status: number, message: string, type: string, injected = false, retryAfter = 0): void {
    if (this.done) return;
    if (injected) this.srv.c.failedInjected++;
    else this.srv.c.errors++;
    this.json(status, { error: { message, type, code: null } }, retryAfter);
  }

  /** Abrupt failure: RST_STREAM INTERNAL_ERROR on h2, a destroyed socket on HTTP/1.1. */
  fail(): void {
    if (this.done) return;
    this.done = true;
    this.stopTimers();
    this.srv.c.failedInjected++;
    if (this.h2 !== null) this.h2.close(NGHTTP2_INTERNAL_ERROR);
    else (this.res as http.ServerResponse).socket?.destroy();
  }

  onClose(): void {
    const srv = this.srv;
    srv.live.delete(this);
    if (this.counted) srv.inFlight--;
    if (this.done) return;
    this.done = true;
    this.stopTimers();
    if (!this.counted || srv.closing) return;
    let tokens = this.tokensSent;
    if (!this.streamMode && this.ttftPassed && this.tokenMs > 0) {
      tokens = Math.min(this.count, Math.floor((performance.now() - this.t0 - this.ttftMs) / this.tokenMs));
    }
    const now = performance.now();
    const rec: AbortRecord = {
      id: this.id,
      protocol: this.protocol,
      phase: this.ttftPassed ? 'streaming' : 'before-first-token',
      abortedAtMs: Math.round((now - this.t0) * 1000) / 1000,
      arrivedAtEpochMs: performance.timeOrigin + this.t0,
      abortedAtEpochMs: performance.timeOrigin + now,
      tokensSent: tokens,
      tokensAfterAbort: this.tokensAfterAbort,
      rstCode: this.h2 !== null ? this.h2.rstCode ?? null : null,
    };
    srv.c.aborted++;
    srv.aborts.push(rec);
    if (srv.events.listenerCount('abort') > 0) srv.events.emit('abort', rec);
  }

  /** Body read and validated: start generating. */
  begin(kind: Kind, body: Record<string, unknown>, model: string, hdr: (name: string) => string | undefined): void {
    const cfg = this.srv.cfg;
    const ttft = intHeader(hdr('x-ttft-ms'));
    const tokMs = intHeader(hdr('x-token-ms'));
    const toks = intHeader(hdr('x-tokens'));
    const failAfter = intHeader(hdr('x-fail-after-tokens'));
    if (ttft === -2 || tokMs === -2 || toks === -2 || failAfter === -2) {
      this.error(400, 'x-ttft-ms, x-token-ms, x-tokens and x-fail-after-tokens must be non-negative integers', 'invalid_request_error');
      return;
    }
    this.ttftMs = ttft >= 0 ? ttft : cfg.ttftMs;
    this.tokenMs = tokMs >= 0 ? tokMs : cfg.tokenMs;
    let count = toks >= 0 ? toks : cfg.tokens;
    const maxTokens = body.max_tokens ?? body.max_completion_tokens;
    if (typeof maxTokens === 'number' && Number.isInteger(maxTokens) && maxTokens > 0 && maxTokens <= count) {
      count = maxTokens;
      this.finish = '"length"';
    }
    this.count = count;
    this.failAfter = failAfter;
    this.kind = kind;
    this.model = model;
    this.created = Math.floor(Date.now() / 1000);
    this.streamMode = body.stream === true;
    this.headersAfterTtft = hdr('x-headers-after-ttft') === '1';
    this.promptTokens = estimatePromptTokens(kind, body);
    const n = ++this.srv.cmplSeq;
    if (this.streamMode) {
      this.prefix = kind === 'chat'
        ? `data: {"id":"chatcmpl-${n}","object":"chat.completion.chunk","created":${this.created},"model":${JSON.stringify(model)}`
        : `data: {"id":"cmpl-${n}","object":"text_completion","created":${this.created},"model":${JSON.stringify(model)}`;
      if (!this.headersAfterTtft) this.sendHeaders(200, 'text/event-stream', -1);
    } else {
      this.prefix = kind === 'chat' ? `chatcmpl-${n}` : `cmpl-${n}`;
    }
    this.timer = setTimeout(onTtft, this.ttftMs, this);
  }

  /** The SSE event for token i (0-based) of this response. */
  event(i: number): string {
    const k = i % NTOK;
    const last = i === this.count - 1;
    const fin: Finish = last ? this.finish : 'null';
    if (this.kind === 'chat') {
      if (i === 0) return this.prefix + chatFirst(TOKEN_JSON[k], fin);
      return this.prefix + (last ? (fin === '"length"' ? CHAT.length : CHAT.stop) : CHAT.mid)[k];
    }
    return this.prefix + (last ? (fin === '"length"' ? CMPL.length : CMPL.stop) : CMPL.mid)[k];
  }

  /** Write tokens up to (excluding) `upto`, then finish or fail if the budget says so. */
  emitUpTo(upto: number): void {
    if (this.done) return;
    if (this.gone()) { this.tokensAfterAbort++; this.srv.c.tokensAfterAbort++; return; }
    const stopAt = this.failAfter >= 0 ? Math.min(upto, this.failAfter) : upto;
    if (this.headersAfterTtft && !this.headersSent) this.sendHeaders(200, 'text/event-stream', -1);
    let from = this.tokensSent;
    if (stopAt - from === 1) {
      this.write(this.event(from));
    } else if (stopAt > from) {
      let s = '';
      for (; from < stopAt; from++) s += this.event(from);
      this.write(s);
    }
    this.srv.c.tokensSent += stopAt - this.tokensSent;
    this.tokensSent = stopAt;
    if (this.failAfter >= 0 && this.tokensSent >= this.failAfter) { this.fail(); return; }
    if (this.tokensSent >= this.count) {
      this.done = true;
      this.stopTimers();
      this.srv.c.completed++;
      this.end(DONE);
      this.emitComplete();
    }
  }

  emitComplete(): void {
    const ev = this.srv.events;
    if (ev.listenerCount('complete') > 0) ev.emit('complete', { id: this.id, atEpochMs: performance.timeOrigin + performance.now() } satisfies CompleteRecord);
  }

  finishJson(): void {
    if (this.done) return;
    if (this.gone()) return;
    const text = textOf(this.count);
    const finish = this.finish === '"length"' ? 'length' : 'stop';
    const usage = { prompt_tokens: this.promptTokens, completion_tokens: this.count, total_tokens: this.promptTokens + this.count };
    const body = this.kind === 'chat'
      ? { id: this.prefix, object: 'chat.completion', created: this.created, model: this.model,
          choices: [{ index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: finish }], usage }
      : { id: this.prefix, object: 'text_completion', created: this.created, model: this.model,
          choices: [{ text, index: 0, logprobs: null, finish_reason: finish }], usage };
    this.srv.c.tokensSent += this.count;
    this.srv.c.completed++;
    this.json(200, body);
    this.emitComplete();
  }
}

function onTtft(x: Exchange): void {
  x.timer = null;
  x.ttftPassed = true;
  if (x.done) return;
  if (x.streamMode) {
    if (x.count === 0 || x.tokenMs <= 0) {
      x.emitUpTo(x.count);
      if (x.count === 0 && !x.done) {
        x.done = true;
        x.srv.c.completed++;
        if (!x.gone()) x.end(DONE);
      }
      return;
    }
    x.emitUpTo(1);
    if (!x.done) x.interval = setInterval(onTokenTick, x.tokenMs, x);
  } else {
    const budget = x.failAfter >= 0 && x.failAfter < x.count ? x.failAfter : x.count;
    const fn = budget < x.count ? onInjectedFail : onJsonDone;
    if (x.tokenMs <= 0 || budget === 0) fn(x);
    else x.timer = setTimeout(fn, budget * x.tokenMs, x);
  }
}
function onTokenTick(x: Exchange): void { x.emitUpTo(x.tokensSent + 1); }
function onJsonDone(x: Exchange): void { x.timer = null; x.finishJson(); }
function onInjectedFail(x: Exchange): void { x.timer = null; x.fail(); }

/** -1 absent, -2 invalid, else the value. */
function intHeader(v: string | undefined): number {
  if (v === undefined || v === '') return -1;
  if (!/^\d{1,9}$/.test(v)) return -2;
  return Number(v);
}

function estimatePromptTokens(kind: Kind, body: Record<string, unknown>): number {
  let chars = 0;
  if (kind === 'chat') {
    if (Array.isArray(body.messages)) {
      for (const m of body.messages) {
        const c = (m as { content?: unknown } | null)?.content;
        if (typeof c === 'string') chars += c.length;
      }
    }
  } else if (typeof body.prompt === 'string') chars = body.prompt.length;
  else if (Array.isArray(body.prompt)) for (const p of body.prompt) if (typeof p === 'string') chars += p.length;
  if (typeof body.suffix === 'string') chars += body.suffix.length;
  return Math.ceil(chars / 4);
}

// ---------------------------------------------------------------------------------------------
// Routing

type Route = { kind: Kind; model: string | null } | 'stats' | 'reset' | 'requests' | 'models' | 'health' | 'fail' | null;

function route(method: string, path: string): Route | 405 {
  const q = path.indexOf('?');
  const p = q === -1 ? path : path.slice(0, q);
  switch (p) {
    case '/v1/completions': return method === 'POST' ? { kind: 'completions', model: null } : 405;
    case '/v1/chat/completions': return method === 'POST' ? { kind: 'chat', model: null } : 405;
    case '/_stats': return method === 'GET' ? 'stats' : 405;
    case '/_reset': return method === 'POST' ? 'reset' : 405;
    case '/_fail': return method === 'POST' ? 'fail' : 405;
    case '/_requests': return method === 'GET' ? 'requests' : 405;
    case '/v1/models': return method === 'GET' ? 'models' : 405;
    case '/health': return method === 'GET' ? 'health' : 405;
  }
  if (p.startsWith('/v1/engines/') && p.endsWith('/completions')) {
    const model = p.slice('/v1/engines/'.length, -'/completions'.length);
    if (model.length > 0 && !model.includes('/')) {
      return method === 'POST' ? { kind: 'completions', model: decodeURIComponentSafe(model) } : 405;
    }
  }
  return null;
}

function decodeURIComponentSafe(s: string): string {
  try { return decodeURIComponent(s); } catch { return s; }
}

function checkKey(srv: Server, auth: string | undefined): boolean {
  const key = srv.cfg.key;
  if (key === null) return true;
  if (auth === undefined || !auth.startsWith('Bearer ')) return false;
  const got = Buffer.from(auth.slice(7));
  return got.length === key.length && timingSafeEqual(got, key);
}

/** Common path once the request is known to be a model request and its body is read. */
function handleModel(srv: Server, x: Exchange, r: { kind: Kind; model: string | null }, raw: Buffer | null,
  method: string, path: string, headers: RequestRecord['headers'], hdr: (n: string) => string | undefined): void {
  if (x.done || x.gone()) return;
  if (raw === null) { x.error(413, 'request body too large', 'invalid_request_error'); return; }
  const text = raw.toString('utf8');
  let body: unknown = text;
  let parsed = false;
  try { body = JSON.parse(text); parsed = true; } catch { /* recorded as text */ }
  const rec: RequestRecord = { id: x.id, at: Date.now(), atEpochMs: performance.timeOrigin + x.t0, method, path, headers, body };
  srv.recent.push(rec);
  if (srv.events.listenerCount('request') > 0) srv.events.emit('request', rec);

  if (!checkKey(srv, hdr('authorization'))) { x.error(401, 'invalid API key', 'invalid_request_error'); return; }
  if (srv.cfg.failStatus > 0) {
    x.error(srv.cfg.failStatus, `failing on purpose (--fail-status ${srv.cfg.failStatus})`, srv.cfg.failStatus === 429 ? 'rate_limit_error' : 'server_error', true, srv.cfg.retryAfter);
    return;
  }
  const status = hdr('x-status');
  if (status !== undefined) {
    const code = Number(status);
    if (Number.isInteger(code) && code >= 200 && code <= 599) {
      x.error(code, `injected status ${code}`, 'server_error', true);
      return;
    }
  }
  if (!parsed || body === null || typeof body !== 'object' || Array.isArray(body)) {
    x.error(400, 'request body must be a JSON object', 'invalid_request_error');
    return;
  }
  const b = body as Record<string, unknown>;
  const model = r.model ?? (typeof b.model === 'string' && b.model !== '' ? b.model : 'ghost-1');
  x.begin(r.kind, b, model, hdr);
}

function controlJson(srv: Server, r: 'stats' | 'reset' | 'requests' | 'models' | 'health' | 'fail', query = ''): unknown {
  switch (r) {
    case 'fail': {
      // POST /_fail?status=N&retryAfter=S: fail every model request from now on (status 0: stop).
      const q = new URLSearchParams(query);
      const status = Number(q.get('status') ?? 0);
      const retryAfter = Number(q.get('retryAfter') ?? 0);
      if (!Number.isInteger(status) || !(status === 0 || (status >= 400 && status <= 599)) || !Number.isInteger(retryAfter) || retryAfter < 0) {
        return { error: { message: 'status must be 0 or 400-599, retryAfter a non-negative integer', type: 'invalid_request_error', code: null } };
      }
      srv.cfg.failStatus = status;
      srv.cfg.retryAfter = retryAfter;
      return { ok: true, failStatus: status, retryAfter };
    }
    case 'stats': return srv.stats();
    case 'reset': srv.reset(); return { ok: true };
    case 'requests': return srv.recent.list();
    case 'models': return { object: 'list', data: [{ id: 'ghost-1', object: 'model', created: 0, owned_by: 'ghostgate' }] };
    case 'health': return { ok: true };
  }
}

function nextId(srv: Server, given: string | string[] | undefined): string {
  if (typeof given === 'string' && given !== '') return given;
  return `ms-${++srv.seq}`;
}

// --- HTTP/2 ---

function onH2Stream(srv: Server, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
  stream.on('error', noop);
  const session = stream.session;
  const st = session ? sessionState.get(session) : undefined;
  const sid = stream.id ?? 0;
  if (st !== undefined) {
    if (st.goawayLastId > 0 && sid > st.goawayLastId) {
      srv.c.refusedStreams++;
      stream.close(NGHTTP2_REFUSED_STREAM);
      return;
    }
    st.streams++;
    if (srv.cfg.goawayEvery > 0 && st.streams === srv.cfg.goawayEvery && session) {
      st.goawayLastId = sid;
      srv.c.goawaysSent++;
      session.goaway(NGHTTP2_NO_ERROR, sid);
      // Let the accepted streams finish, then close (close() would GOAWAY again, clamped to the same id).
      session.close();
    }
  }
  const method = String(headers[':method'] ?? 'GET');
  const path = String(headers[':path'] ?? '/');
  const r = route(method, path);
  if (r === null || r === 405 || typeof r === 'string') {
    const { status, text } = nonModelReply(srv, r, method, path);
    if (stream.destroyed || stream.closed) return;
    stream.respond({ ':status': status, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    stream.end(text);
    stream.resume();
    return;
  }
  const x = new Exchange(srv, nextId(srv, headers['x-request-id']), 'h2', stream, null);
  x.counted = true;
  srv.c.requests++;
  srv.inFlight++;
  srv.live.add(x);
  stream.once('close', () => x.onClose());
  const hdr = (n: string): string | undefined => { const v = headers[n]; return Array.isArray(v) ? v[0] : v; };
  readBody(stream, (raw) => handleModel(srv, x, r, raw, method, path, headers, hdr));
}

const sessionState = new WeakMap<http2.Http2Session, SessionState>();

/** The reply for anything that is not a model route: 404, 405, or a control route's JSON (both protocols). */
function nonModelReply(srv: Server, r: null | 405 | string, method: string, path: string): { status: number; text: string } {
  const status = r === null ? 404 : r === 405 ? 405 : 200;
  const body = r === null ? { error: { message: `no route for ${method} ${path.split('?')[0]}`, type: 'invalid_request_error', code: null } }
    : r === 405 ? { error: { message: `method ${method} not allowed`, type: 'invalid_request_error', code: null } }
    : controlJson(srv, r as never, path.includes('?') ? path.slice(path.indexOf('?') + 1) : '');
  const bad = status === 200 && typeof body === 'object' && body !== null && 'error' in body;
  return { status: bad ? 400 : status, text: JSON.stringify(body) };
}

// --- HTTP/1.1 ---

function onH1Request(srv: Server, req: http.IncomingMessage, res: http.ServerResponse): void {
  req.on('error', noop);
  res.on('error', noop);
  const method = req.method ?? 'GET';
  const path = req.url ?? '/';
  const r = route(method, path);
  if (r === null || r === 405 || typeof r === 'string') {
    const { status, text } = nonModelReply(srv, r, method, path);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
    req.resume();
    return;
  }
  const x = new Exchange(srv, nextId(srv, req.headers['x-request-id']), 'h1', null, res);
  x.counted = true;
  srv.c.requests++;
  srv.inFlight++;
  srv.live.add(x);
  res.once('close', () => x.onClose());
  const headers = req.headers;
  const hdr = (n: string): string | undefined => { const v = headers[n]; return Array.isArray(v) ? v[0] : v; };
  readBody(req, (raw) => handleModel(srv, x, r, raw, method, path, headers, hdr));
}

/** Read a request body; `null` if it exceeds MAX_BODY_BYTES. */
function readBody(src: Readable, done: (raw: Buffer | null) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  src.on('data', (c: Buffer) => {
    if (over) return;
    size += c.length;
    if (size > MAX_BODY_BYTES) { over = true; chunks.length = 0; return; }
    chunks.push(c);
  });
  src.on('end', () => done(over ? null : chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)));
}

function noop(): void { /* errors surface as 'close' */ }

// ---------------------------------------------------------------------------------------------

function nonNegInt(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < 0) throw new TypeError(`model-server: ${name} must be a non-negative integer, got ${v}`);
  return v;
}

export async function startModelServer(opts: ModelServerOptions = {}): Promise<ModelServerHandle> {
  const d = MODEL_SERVER_DEFAULTS;
  const port = nonNegInt('port', opts.port, d.port);
  if (port > 65535) throw new TypeError(`model-server: port out of range: ${port}`);
  const host = opts.host ?? d.host;
  const maxConcurrentStreams = nonNegInt('maxConcurrentStreams', opts.maxConcurrentStreams, d.maxConcurrentStreams);
  const srv = new Server({
    ttftMs: nonNegInt('ttftMs', opts.ttftMs, d.ttftMs),
    tokenMs: nonNegInt('tokenMs', opts.tokenMs, d.tokenMs),
    tokens: nonNegInt('tokens', opts.tokens, d.tokens),
    goawayEvery: nonNegInt('goawayEvery', opts.goawayEvery, d.goawayEvery),
    key: opts.key ? Buffer.from(opts.key) : null,
    failStatus: nonNegInt('failStatus', opts.failStatus, d.failStatus),
    retryAfter: nonNegInt('retryAfter', opts.retryAfter, d.retryAfter),
    name: opts.name ?? '',
  });

  const server = http2.createServer({
    settings: { maxConcurrentStreams },
    streamResetBurst: 100_000,
    streamResetRate: 10_000,
    maxSessionMemory: 64,
  });
  server.on('session', (session) => {
    srv.c.sessionsOpened++;
    srv.sessions.add(session);
    sessionState.set(session, { streams: 0, goawayLastId: 0 });
    session.on('error', noop);
    session.once('close', () => srv.sessions.delete(session));
  });
  server.on('stream', (stream, headers) => onH2Stream(srv, stream, headers));
  server.on('sessionError', noop);
  const h1 = acceptHttp1(server, { handler: (req, res) => onH1Request(srv, req, res) });
  if (srv.cfg.goawayEvery > 0) h1.maxRequestsPerSocket = srv.cfg.goawayEvery;
  // The internal HTTP/1.1 server never listens, so Node does not track its connections and
  // h1.closeAllConnections() is a no-op: keep our own set for close().
  const h1Sockets = new Set<Socket>();
  h1.on('connection', (socket: Socket) => {
    srv.c.h1Connections++;
    h1Sockets.add(socket);
    socket.once('close', () => h1Sockets.delete(socket));
  });
  h1.on('clientError', (_err: Error, socket: Socket) => socket.destroy());
  server.on('connection', (socket: Socket) => socket.setNoDelay(true));

  await new Promise<void>((resolve, reject) => {
    const onErr = (err: Error): void => reject(err);
    server.once('error', onErr);
    server.listen(port, host, () => { server.off('error', onErr); resolve(); });
  });
  const addr = server.address() as AddressInfo;
  const urlHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;

  let closed: Promise<void> | null = null;
  let drained: Promise<void> | null = null;
  const handle: ModelServerHandle = {
    port: addr.port,
    host: addr.address,
    url: `http://${urlHost}:${addr.port}`,
    stats: () => srv.stats(),
    reset: () => srv.reset(),
    requests: () => srv.recent.list(),
    events: srv.events,
    close(): Promise<void> {
      if (closed) return closed;
      srv.closing = true;
      closed = new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const x of srv.live) { x.stopTimers(); x.done = true; }
        for (const s of srv.sessions) s.destroy();
        for (const s of h1Sockets) s.destroy();
      });
      return closed;
    },
    drain(graceMs: number): Promise<void> {
      if (closed) return closed;
      if (drained) return drained;
      drained = new Promise<void>((resolve) => {
        // The listener's close callback runs once every connection has closed: that is "drained".
        const deadline = setTimeout(() => { handle.close().then(resolve, resolve); }, graceMs);
        server.close(() => { clearTimeout(deadline); resolve(); });
        // GOAWAY(NO_ERROR, last processed stream); each session closes when its last stream ends.
        for (const s of srv.sessions) s.close();
        const busy = new Set<Socket>();
        for (const x of srv.live) {
          const res = x.res;
          const sock = res?.socket;
          if (res === null || !sock) continue;
          busy.add(sock);
          res.shouldKeepAlive = false;
          res.once('close', () => sock.end());
        }
        for (const s of h1Sockets) if (!busy.has(s)) s.destroy();
      });
      return drained;
    },
  };
  return handle;
}
