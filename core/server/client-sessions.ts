/**
 * Per client HTTP/2 session: what one client may cost the others.
 *
 * - Rapid reset (CVE-2023-44487 style): a session that opens streams and resets them before any
 *   response is sent GOAWAY(ENHANCE_YOUR_CALM) and closed. Every reset of a stream that had no
 *   response yet counts, whatever its age: an attacker delays its RST_STREAM past any "within N ms"
 *   rule as easily as it picks its error code. A session is cut when such resets over the last one
 *   to two seconds exceed `http2.rapidResetLimit` (default 1000: 500–1000 resets/s; an editor makes
 *   1–5 requests/s and cancels ~45%, so that is hundreds of editors on one connection) *and* are
 *   more than half of the streams it opened in that time: an editor, or a load balancer
 *   multiplexing many, cancels under half of its requests. A reset counts in the window its
 *   stream was opened in (not the one it arrived in), so a busy process that reads cancels late
 *   cannot push an editor population's share over one half; a reset of a stream opened before
 *   the previous window counts in neither (such a stream held its slot for over a second).
 * - Streams in flight upstream are counted per session, for `http2.maxInflightPerSession`, and per
 *   client IP across its connections (`ClientInflight`), for `limits.maxInflightPerClientIp`.
 * - A completion stream the client resets before any Call took it (during its body, or before the
 *   server handled it at all) is counted as cancelled before forward, like the ones the Call's
 *   last look catches.
 *
 * Cost per stream: a window check, two counter updates and one 'close' listener (on, not once:
 * no wrapper to allocate and remove); no timer. What calls it for every stream, and answers the
 * requests no lane may see: core/server/stream-guard.ts.
 */
import http2 from 'node:http2';
import type { Http2Session, ServerHttp2Stream } from 'node:http2';
import { performance } from 'node:perf_hooks';
import type { Http2Settings } from '../config/model.ts';
import type { GatewayMetrics } from '../metrics.ts';
import type { Logger } from '../types.ts';

const { NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;
/** The length of one counting window (ms); the decision looks at the current and the previous one. */
const WINDOW_MS = 1000;

const GUARD = Symbol('ghostgate.sessionGuard');
const STREAM = Symbol('ghostgate.streamWatch');

interface Watch {
  readonly guard: SessionGuard;
  /** A completion route: an unowned reset counts as cancelled before forward. */
  readonly completion: boolean;
  /** A Call took this stream (it accounts for its own outcome). */
  owned: boolean;
  /** Its 'close' was handled here (before any Call took it, if `owned` is false). */
  closed: boolean;
  /** The guard's counting window the stream was opened in. */
  readonly win: number;
}
type WatchedStream = ServerHttp2Stream & { [STREAM]?: Watch };
type GuardedSession = Http2Session & { [GUARD]?: SessionGuard };

/** What the guards need from the gateway. */
export interface GuardContext {
  readonly metrics: GatewayMetrics;
  readonly log: Logger;
  readonly settings: Http2Settings;
}

export class SessionGuard {
  readonly session: Http2Session;
  /** The client's address (the socket's; fixed for the session's life). */
  readonly ip: string;
  /** Streams of this session forwarded upstream and not finished. */
  upstreamInflight = 0;
  #ctx: GuardContext;
  #winStart = 0;
  /** The current counting window's number (the previous one is `#win - 1`). */
  #win = 0;
  #opened = 0;
  #rapid = 0;
  #prevOpened = 0;
  #prevRapid = 0;
  #cut = false;

  constructor(session: Http2Session, ctx: GuardContext) {
    this.session = session;
    this.ip = session.socket?.remoteAddress ?? '';
    this.#ctx = ctx;
  }

  #roll(now: number): void {
    if (now - this.#winStart < WINDOW_MS) return;
    // A whole window or more went by with nothing: the previous window is empty too.
    const adjacent = now - this.#winStart < 2 * WINDOW_MS;
    this.#prevOpened = adjacent ? this.#opened : 0;
    this.#prevRapid = adjacent ? this.#rapid : 0;
    this.#opened = 0;
    this.#rapid = 0;
    this.#winStart = now;
    this.#win += adjacent ? 1 : 2;
  }

  /** A stream opened; returns the window it counts in. */
  opened(now: number): number {
    this.#roll(now);
    this.#opened++;
    return this.#win;
  }

  /** The client reset a stream opened in window `win` before any response (however long after). */
  reset(now: number, win: number): void {
    if (this.#cut) return;
    this.#roll(now);
    if (win === this.#win) this.#rapid++;
    else if (win === this.#win - 1) this.#prevRapid++;
    else return;
    const rapid = this.#rapid + this.#prevRapid;
    if (rapid > this.#ctx.settings.rapidResetLimit && rapid * 2 > this.#opened + this.#prevOpened) this.#cutOff(rapid);
  }

  /** A completion request the client cancelled before a Call took it: never sent, count it. */
  cancelledBeforeForward(): void {
    this.#ctx.metrics.cancelledBeforeForward.inc();
  }

  #cutOff(rapid: number): void {
    this.#cut = true;
    const s = this.session;
    this.#ctx.metrics.clientSessionsCut.labels('rapid_reset').inc();
    this.#ctx.log.warn({ remote: s.socket?.remoteAddress, rapidResets: rapid, opened: this.#opened + this.#prevOpened }, 'client session cut off: rapid resets');
    // GOAWAY(ENHANCE_YOUR_CALM) (nghttp2 ignores the client's new streams from now on), then the
    // socket is closed with every stream on it. destroy(err, code) alone writes a GOAWAY too, but
    // on a busy process the socket was often gone before it was flushed: the client saw a bare
    // close. One timer per cut session. The error goes to the server's 'sessionError', which
    // nobody needs to handle.
    if (s.destroyed) return;
    s.goaway(NGHTTP2_ENHANCE_YOUR_CALM);
    setTimeout(destroyCut, 50, s).unref();
  }
}

/**
 * Requests in flight upstream per client IP, across all of its connections and both protocols:
 * the per-session cap bounds one connection, and one client may open many. One map get and set
 * when a request is forwarded, one when it ends; an address leaves the map at 0.
 */
export class ClientInflight {
  readonly #byIp = new Map<string, number>();

  /** Count one more request from `ip`, unless it already has `cap` in flight. */
  take(ip: string, cap: number): boolean {
    const n = this.#byIp.get(ip) ?? 0;
    if (n >= cap) return false;
    this.#byIp.set(ip, n + 1);
    return true;
  }

  release(ip: string): void {
    const n = (this.#byIp.get(ip) ?? 1) - 1;
    if (n <= 0) this.#byIp.delete(ip); else this.#byIp.set(ip, n);
  }

  /** Requests in flight from `ip` (for tests). */
  of(ip: string): number { return this.#byIp.get(ip) ?? 0; }
}

function destroyCut(s: Http2Session): void {
  if (!s.destroyed) s.destroy(new Error('rapid reset'), NGHTTP2_ENHANCE_YOUR_CALM);
}

/** The guard of a client session, created on its first stream. */
export function guardOf(session: Http2Session, ctx: GuardContext): SessionGuard {
  const s = session as GuardedSession;
  return (s[GUARD] ??= new SessionGuard(session, ctx));
}

/** The guard of the session a response's stream belongs to (undefined for HTTP/1.1). */
export function guardOfStream(stream: ServerHttp2Stream | undefined): SessionGuard | undefined {
  return stream === undefined ? undefined : (stream as WatchedStream)[STREAM]?.guard;
}

/**
 * Start accounting for a new client stream: every stream, from its session's 'stream' event
 * (a stream reset in the same read as its HEADERS is already destroyed there and no longer
 * knows its session, so the session is passed in).
 */
export function watchStream(session: Http2Session, stream: ServerHttp2Stream, ctx: GuardContext, completion: boolean): void {
  const guard = guardOf(session, ctx);
  const win = guard.opened(performance.now());
  (stream as WatchedStream)[STREAM] = { guard, completion, owned: false, closed: false, win };
  // Already reset (its RST_STREAM was in the same read as its HEADERS): 'close' may have fired.
  if (stream.destroyed) onStreamClose.call(stream);
  else stream.on('close', onStreamClose); // 'close' comes once; on() spares once()'s wrapper
}

/**
 * A Call takes this stream: its outcome (and any cancel before forward) is counted by the Call.
 * Returns false if the stream already closed and was counted here as cancelled before forward
 * (a reset during the body, seen before the request reached the Call): then there is nobody to
 * answer and nothing left to count, and no Call must start.
 */
export function markOwned(stream: ServerHttp2Stream | undefined): boolean {
  const w = stream === undefined ? undefined : (stream as WatchedStream)[STREAM];
  if (w === undefined) return true;
  if (w.closed) return false;
  w.owned = true;
  return true;
}

function onStreamClose(this: WatchedStream): void {
  const w = this[STREAM];
  if (w !== undefined) w.closed = true;
  const code = this.rstCode;
  // Answered before the reset (then the reset is not a cancel of the request); a stream that ended
  // normally was answered too. A reset before any response counts whatever its code: an attacker
  // picks RST_STREAM(NO_ERROR) as easily as CANCEL.
  if (w === undefined || code === undefined || this.headersSent) return;
  const guard = w.guard;
  // The session itself is going away (client disconnect, our shutdown or cut): not a client reset.
  if (w.completion && !w.owned) guard.cancelledBeforeForward();
  if (guard.session.destroyed || guard.session.closed) return;
  guard.reset(performance.now(), w.win);
}
