/** Shapes exchanged between bench/run.ts and its child processes (IPC), and small stats helpers. */

/** Client protocol: HTTP/2 (h2c prior knowledge, one session per user) or HTTP/1.1 keep-alive. */
export type ClientProtocol = 'h2' | 'h1';

export interface TypingJob {
  cmd: 'typing';
  url: string;
  /**
   * Several targets at once: user i goes to urls[i % length] (its records' ids carry `-u<i>-`).
   * Two gateways measured side by side under the same load, at the same time. Default: [url].
   */
  urls?: string[];
  /** Default h2. h1: one keep-alive socket per user; a cancel closes the socket (as HTTP/1.1 clients do). */
  protocol?: ClientProtocol;
  /** Prefix of every x-request-id of the phase (joins client records to the model server's). */
  tag: string;
  users: number;
  seconds: number;
  thinkMinMs: number;
  thinkMaxMs: number;
  /** Share of requests the user cancels (0.45). */
  cancelShare: number;
  /** Share of the cancels made before the first token (1/3). */
  beforeFirstShare: number;
  /** The model's time to first token and per-token time: where to put the cancel instants. */
  ttftMs: number;
  tokenMs: number;
  maxTokens: number;
  requestTimeoutMs: number;
  /** Bearer tokens: user i sends authTokens[i % length] (none if empty). */
  authTokens: string[];
}

export interface ClosedJob {
  cmd: 'closed';
  url: string;
  /** Default h2. h1: `concurrency` keep-alive sockets, one request at a time each (`sessions` is ignored). */
  protocol?: ClientProtocol;
  tag: string;
  sessions: number;
  /** Streams in flight at all times, spread over the sessions. */
  concurrency: number;
  seconds: number;
  maxTokens: number;
  requestTimeoutMs: number;
  /** Bearer tokens: session i sends authTokens[i % length] (none if empty). */
  authTokens: string[];
}

export type LoadJob = TypingJob | ClosedJob;

/** One typing-user request as the client saw it. Times in ms; epochs are performance.timeOrigin + now(). */
export interface ReqRecord {
  id: string;
  /** 'none' | 'before' (planned before the first token) | 'mid' (planned mid-stream). */
  plan: 'none' | 'before' | 'mid';
  status: number;
  startEpoch: number;
  /** Request sent → first DATA byte; -1 if none. */
  ttfbMs: number;
  /** Request sent → stream closed. */
  durationMs: number;
  cancelled: boolean;
  /** Epoch ms just before stream.close(NGHTTP2_CANCEL); -1 if not cancelled. */
  cancelAtEpoch: number;
  tokensAtCancel: number;
  tokens: number;
  /** The stream ended with `data: [DONE]`. */
  done: boolean;
  /** An `event: error` SSE event arrived. */
  errorEvent: boolean;
  /** RST_STREAM code of the stream (0 = none / NO_ERROR). */
  rstCode: number;
  /** 'timeout', a session/stream error code, or ''. */
  error: string;
  /**
   * The response ended the way a complete one does, as far as a client library can tell: HTTP/2
   * END_STREAM or RST_STREAM(NO_ERROR) (many clients treat both as a normal end); HTTP/1.1 the
   * terminating chunk / full Content-Length. With no `[DONE]` and no error event, such an end is a
   * clean-but-truncated response.
   */
  cleanEnd: boolean;
  /** HTTP/1.1: the request went out on a socket an earlier request had used (keep-alive reuse). HTTP/2: always true. */
  reused: boolean;
}

export interface TypingResult {
  kind: 'typing';
  records: ReqRecord[];
  sessionsOpened: number;
  wallMs: number;
  /** Longest event-loop stall of the load generator during the phase (ms): a noisy client shows here. */
  loopDelayMaxMs: number;
  loopDelayP99Ms: number;
}

export interface ClosedResult {
  kind: 'closed';
  /** 200 responses that ended with [DONE] and finished inside the window. */
  completed: number;
  failed: number;
  truncated: number;
  seconds: number;
  rps: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  sessionsOpened: number;
  loopDelayMaxMs: number;
  loopDelayP99Ms: number;
}

export type LoadResult = TypingResult | ClosedResult;

/** Nearest-rank percentile of an unsorted list; NaN when empty. */
export function pct(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = values.slice().sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i];
}

/** Median of a list (mean of the two middle values when even); NaN when empty. */
export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function mean(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  let s = 0;
  for (const v of values) s += v;
  return s / values.length;
}

export const epochNow = (): number => performance.timeOrigin + performance.now();

/** Microseconds per call of `fn`: the median of `runs` timed loops of `calls` calls each. */
export function microsPerCall(fn: () => unknown, calls: number, runs: number): number {
  const per: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) fn();
    per.push(((performance.now() - t0) * 1000) / calls);
  }
  return median(per);
}
