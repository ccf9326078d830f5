/**
 * A small pool of long-lived HTTP/2 sessions to one upstream.
 *
 * - Opened and warmed at start. A session is ready (takes streams) only once the peer's SETTINGS
 *   arrived: an upstream that accepts TCP and never speaks HTTP/2 is a failed connect (after
 *   `connectTimeoutMs`), and the session is replaced with back-off.
 * - Every `pingIntervalMs`, each session taking streams is PINGed, busy or idle; a PING still unanswered
 *   at the next interval means the peer is dead: the session is destroyed (its streams fail or,
 *   before their response headers, are retried elsewhere) and replaced.
 * - New streams go to the busiest ready session with room under the peer's
 *   SETTINGS_MAX_CONCURRENT_STREAMS (the oldest, on a tie): streams are packed onto as few
 *   sessions as there is room for, the others stay warm (PINGed) for when one fails or is full.
 *   Packed, the DATA frames of many streams come in one read and leave in one write: spread over
 *   two sessions, the gateway made 1.7–2× the read calls per streamed request (bench/token-cpu.ts,
 *   bench/README.md "CPU per token"). A stream is never queued on a full session: when all are full,
 *   one more session opens (up to 4 × `size`) and the request waits for it, or for a stream to end.
 *   A session above `size` with no stream for a whole PING interval is closed again.
 * - One client (its `owner` key: the client's address, when the per-address cap is on) may hold at
 *   most half of the streams the pool can grow to; its further requests wait for its own streams
 *   to end (or the connect budget: 503), so one client that does not read cannot take every
 *   upstream stream from the others.
 * - GOAWAY (nginx sends one after `keepalive_requests`, 100 by default): the session stops taking
 *   new streams at once, finishes the ones it has, and a fresh session replaces it. Streams the
 *   peer did not process (refused, or above GOAWAY's last stream id) are reported as retryable,
 *   which is safe even for POST (RFC 9113 §8.7).
 *
 * Why one file over 250 lines: session lifecycle, the full-session rule, the owners' share and GOAWAY
 * accounting all read and write the same per-session counters; split apart, each would reach into the
 * others' state.
 */
import http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream, OutgoingHttpHeaders, SecureClientSessionOptions } from 'node:http2';
import { Readable } from 'node:stream';
import { GatewayError } from '../errors.ts';
import type { CancelSignal, Logger } from '../types.ts';
import type { GatewayMetrics } from '../metrics.ts';

const { NGHTTP2_REFUSED_STREAM, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

/** Back-off after a failed connect: 250 ms, doubling per consecutive failure, at most 5 s. */
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 5_000;
/** Sessions per upstream at most, as a multiple of `pool.size`, when every session is at the peer's stream limit. */
const MAX_SESSIONS_FACTOR = 4;

export interface H2PoolOptions {
  name: string;
  origin: string;
  size: number;
  connectTimeoutMs: number;
  pingIntervalMs: number;
  tls?: { ca?: string; servername?: string; rejectUnauthorized: boolean };
  log: Logger;
  metrics: GatewayMetrics;
}

export class Slot {
  readonly session: ClientHttp2Session;
  active = 0;
  /** The peer's SETTINGS arrived: the session takes streams. */
  ready = false;
  draining = false;
  /** Peer's SETTINGS_MAX_CONCURRENT_STREAMS (until we hear it, a safe 100). */
  maxStreams = 100;
  /** Set when the peer sent GOAWAY: streams above it were not processed. */
  goawayLastStreamId = -1;
  streamsOpened = 0;
  /** `streamsOpened` at the last PING round: unchanged and no stream open means idle for a round. */
  streamsAtLastRound = 0;
  /** We destroyed this session ourselves (shutdown deadline): its streams did not complete. */
  forcedClose = false;
  /** A PING is on its way and its ACK has not come back. */
  pingOutstanding = false;
  /** The peer stopped answering PING; we destroyed the session. */
  dead = false;
  /** The PING callback, made once per session (not per PING). */
  readonly onPingAck: (err: Error | null) => void;
  constructor(session: ClientHttp2Session) {
    this.session = session;
    this.onPingAck = (err) => { if (err === null) this.pingOutstanding = false; };
  }
}

/** Thrown for a stream the upstream never processed; the caller retries it elsewhere. */
export class RetryableError extends Error {
  readonly reason: string;
  constructor(reason: string) { super(`upstream did not process the stream (${reason})`); this.reason = reason; }
}

const kEndStream = Symbol('ghostgate.endStream');
type WatchedStream = ClientHttp2Stream & { [kEndStream]?: boolean };
const readablePush = Readable.prototype.push;

/**
 * Node ends an h2 stream's readable side both when the peer's END_STREAM arrives and when the
 * peer resets the stream with RST_STREAM(NO_ERROR), and `rstCode` is 0 in both cases. The
 * difference is the order: END_STREAM pushes the end while the stream is still open (nghttp2
 * closes it after the frame), a reset closes the stream first and then pushes the end. Installed
 * as the stream's own `push` (a shared function: no per-request closure).
 */
function pushWatchingEnd(this: WatchedStream, chunk: unknown, encoding?: BufferEncoding): boolean {
  if (chunk === null && this[kEndStream] === undefined) this[kEndStream] = !this.closed;
  return readablePush.call(this, chunk, encoding);
}

/** Whether the upstream's END_STREAM arrived on a stream opened by `H2Pool.request`. */
export function endStreamArrived(stream: ClientHttp2Stream): boolean {
  return (stream as WatchedStream)[kEndStream] === true;
}

type Waiter = { resolve: (s: Slot) => void; reject: (e: Error) => void; timer: NodeJS.Timeout; avoid: Slot | undefined; owner: string | undefined };

export class H2Pool {
  readonly name: string;
  readonly origin: string;
  readonly authority: string;
  readonly scheme: string;
  #o: H2PoolOptions;
  /** Sessions taking streams, or connecting (not ready yet). */
  #live: Slot[] = [];
  #draining = new Set<Slot>();
  #waiters: Waiter[] = [];
  #closed = false;
  #pingTimer: NodeJS.Timeout | undefined;
  #lastConnectError: Error | undefined;
  /** Consecutive failed connects, and no new connect before `#retryAt` (epoch ms). */
  #failures = 0;
  #retryAt = 0;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #connecting = 0;
  #opened = 0;
  /** Streams open per owner (client address), for the owners' share. */
  readonly #owners = new Map<string, number>();

  constructor(o: H2PoolOptions) {
    this.#o = o;
    this.name = o.name;
    this.origin = o.origin;
    const u = new URL(o.origin);
    this.authority = u.host;
    this.scheme = u.protocol.slice(0, -1);
    if (o.pingIntervalMs > 0) {
      this.#pingTimer = setInterval(() => this.#ping(), o.pingIntervalMs);
      this.#pingTimer.unref();
    }
  }

  /** Sessions opened over the pool's life (for the benchmark and tests). */
  get sessionsOpened(): number { return this.#opened; }
  /** Sessions ready to take streams (the peer's SETTINGS arrived). */
  get liveSessions(): number { let n = 0; for (const s of this.#live) if (s.ready) n++; return n; }
  /** Sessions opened whose peer has not sent its SETTINGS yet. */
  get connectingSessions(): number { return this.#connecting; }
  get drainingSessions(): number { return this.#draining.size; }
  /** Streams open on the pool's sessions (live and draining) that have not closed yet. */
  get openStreams(): number { let n = 0; for (const s of this.#live) n += s.active; for (const s of this.#draining) n += s.active; return n; }

  /** Open `size` sessions and wait until they are ready (or failed). */
  async warm(): Promise<void> {
    while (this.#live.length < this.#o.size && !this.#closed) this.#open();
    await Promise.allSettled(this.#live.map((s) => (s.ready ? Promise.resolve() : new Promise<void>((res) => {
      s.session.once('remoteSettings', () => res()); s.session.once('close', () => res());
    }))));
  }

  /**
   * A ready session with room for a stream now (not `avoid`: the one that just refused this
   * request), or undefined (then use `wait`). Synchronous: the hot path.
   */
  pick(avoid?: Slot, promised?: Map<Slot, number>, owner?: string, ownerPromised = 0): Slot | undefined {
    // An owner at its share waits for its own streams to end (see the module comment).
    if (owner !== undefined && (this.#owners.get(owner) ?? 0) + ownerPromised >= this.#share()) return undefined;
    let best: Slot | undefined;
    let bestLoad = 0;
    for (const s of this.#live) {
      if (!s.ready || s.draining || s === avoid) continue;
      const load = promised === undefined ? s.active : s.active + (promised.get(s) ?? 0);
      if (load >= s.maxStreams) continue;
      // Packed: the busiest session with room (see the module comment).
      if (best === undefined || load > bestLoad) { best = s; bestLoad = load; }
    }
    // Every session is at the peer's stream limit: never queue a stream on a full session (nghttp2
    // would hold it until a stream there ends, and a slow or stalled one may take the whole
    // first-byte timeout). Open one more session (bounded); the caller waits for it.
    if (best === undefined && this.#connecting === 0 && this.#live.length >= this.#o.size && this.#live.length < this.#o.size * MAX_SESSIONS_FACTOR) this.#open();
    // Replace lost sessions (not while backing off from failed connects).
    if (this.#live.length < this.#o.size && Date.now() >= this.#retryAt) this.#open();
    return best;
  }

  /** Streams one owner may hold: half of what the pool can grow to (at least 1). */
  #share(): number {
    let max = 0;
    for (const s of this.#live) if (s.ready && s.maxStreams > max) max = s.maxStreams;
    return Math.max(1, Math.floor((this.#o.size * MAX_SESSIONS_FACTOR * (max || 100)) / 2));
  }

  /** Wait for a ready session other than `avoid` (connect budget), opening one if needed. */
  wait(signal?: CancelSignal, avoid?: Slot, owner?: string): Promise<Slot> {
    if (this.#closed) return Promise.reject(new GatewayError('GW_ERR_UPSTREAM_UNAVAILABLE', [this.name]));
    // Connects failed a moment ago: fail fast rather than hammer the upstream.
    if (this.#connecting === 0 && this.#lastConnectError && Date.now() < this.#retryAt) {
      return Promise.reject(new GatewayError('GW_ERR_UPSTREAM_CONNECT', [this.name]));
    }
    const overShare = owner !== undefined && (this.#owners.get(owner) ?? 0) >= this.#share();
    if (!overShare && this.#connecting === 0 && this.#live.length < this.#o.size * MAX_SESSIONS_FACTOR) this.#open();
    return new Promise<Slot>((resolve, reject) => {
      const w: Waiter = {
        resolve, reject, avoid, owner,
        timer: setTimeout(() => {
          this.#removeWaiter(w);
          reject(this.#lastConnectError
            ? new GatewayError('GW_ERR_UPSTREAM_CONNECT', [this.name])
            : new GatewayError('GW_ERR_UPSTREAM_UNAVAILABLE', [this.name]));
        }, this.#o.connectTimeoutMs),
      };
      if (signal) signal.addEventListener('abort', () => { this.#removeWaiter(w); clearTimeout(w.timer); reject(new Error('aborted')); }, { once: true });
      this.#waiters.push(w);
    });
  }

  /** Open a stream on `slot`. Throws RetryableError if the session can no longer take streams. */
  request(slot: Slot, headers: OutgoingHttpHeaders, owner?: string): ClientHttp2Stream {
    let stream: ClientHttp2Stream;
    try {
      stream = slot.session.request(headers, { endStream: false });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // Only a session that can no longer open streams is retired and the stream retried
      // elsewhere; anything else (e.g. a header value HTTP/2 refuses) is this request's problem.
      if (code === 'ERR_HTTP2_INVALID_SESSION' || code === 'ERR_HTTP2_GOAWAY_SESSION' || code === 'ERR_HTTP2_OUT_OF_STREAMS') {
        this.#retire(slot);
        throw new RetryableError(code);
      }
      throw e;
    }
    (stream as WatchedStream).push = pushWatchingEnd;
    slot.active++;
    slot.streamsOpened++;
    if (owner !== undefined) this.#owners.set(owner, (this.#owners.get(owner) ?? 0) + 1);
    stream.once('close', () => {
      slot.active--;
      if (owner !== undefined) {
        const n = this.#owners.get(owner)! - 1;
        if (n === 0) this.#owners.delete(owner); else this.#owners.set(owner, n);
      }
      if (slot.draining && slot.active === 0) slot.session.close();
      // A stream slot freed (or an owner under its share again): a waiting request may go.
      if (this.#waiters.length > 0) this.#serveWaiters();
    });
    return stream;
  }

  /**
   * Why a stream that closed before its response headers may be retried elsewhere, or undefined
   * if the upstream may have processed it (then it is not retried).
   */
  unprocessed(slot: Slot, stream: ClientHttp2Stream): string | undefined {
    const code = stream.rstCode;
    // Above GOAWAY's last stream id: nghttp2 closes these as REFUSED_STREAM itself, so this is
    // checked first to say why (test/core/upstream-goaway.test.ts).
    if (slot.goawayLastStreamId >= 0 && stream.id !== undefined && stream.id > slot.goawayLastStreamId) return 'goaway';
    if (code === NGHTTP2_REFUSED_STREAM) return 'refused_stream';
    // The upstream refused it for load ("calm down"): not processed. A session that took streams
    // before and now refuses one is full: a Node upstream answers so when the session's memory
    // (`maxSessionMemory`) is used up, e.g. by responses queued for a client that does not read,
    // and it went on refusing after those streams were cancelled, while a new connection was
    // served. So it is retired (its streams in flight finish) and a fresh one replaces it; a
    // session refusing its very first stream is kept (a new one would not fare better).
    // test/core/upstream-session-memory.test.ts
    if (code === NGHTTP2_ENHANCE_YOUR_CALM) {
      if (slot.streamsOpened > 1) { this.#retire(slot); this.#replenish(); }
      return 'enhance_your_calm';
    }
    if (stream.id === undefined) return 'never_sent';
    // The peer stopped answering PING and no response came: the request waits on a dead session.
    if (slot.dead) return 'dead_session';
    return undefined;
  }

  /** Close every session gracefully (streams in flight finish). */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#pingTimer) clearInterval(this.#pingTimer);
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    for (const w of this.#waiters.splice(0)) { clearTimeout(w.timer); w.reject(new GatewayError('GW_ERR_UPSTREAM_UNAVAILABLE', [this.name])); }
    const all = [...this.#live, ...this.#draining];
    await Promise.all(all.map((s) => new Promise<void>((res) => {
      if (s.session.closed || s.session.destroyed) return res();
      // Sessions are unref'd while idle; a closing one must keep the process up until it is done.
      s.session.ref();
      const force = setTimeout(() => { s.forcedClose = true; s.session.destroy(); res(); }, 5_000);
      s.session.close(() => { clearTimeout(force); res(); });
    })));
  }

  #open(): void {
    if (this.#closed) return;
    const o = this.#o;
    const opts: SecureClientSessionOptions = {
      settings: { enablePush: false, initialWindowSize: 1 << 20 },
      peerMaxConcurrentStreams: 100,
    };
    if (o.tls) {
      Object.assign(opts, { ca: o.tls.ca, servername: o.tls.servername, rejectUnauthorized: o.tls.rejectUnauthorized, ALPNProtocols: ['h2'] });
    }
    const session = http2.connect(this.origin, opts);
    const slot = new Slot(session);
    this.#connecting++;
    this.#live.push(slot);
    this.#opened++;
    o.metrics.upstreamSessionsOpened.labels(this.name).inc();
    // TCP (and TLS) up is not enough: the session is ready when the peer's SETTINGS arrive.
    const connectTimer = setTimeout(() => {
      if (!slot.ready) session.destroy(new Error(`no HTTP/2 SETTINGS from the upstream within ${o.connectTimeoutMs} ms`));
    }, o.connectTimeoutMs);
    connectTimer.unref();
    session.once('connect', () => { session.setLocalWindowSize(8 << 20); });
    session.on('remoteSettings', (s) => {
      if (s.maxConcurrentStreams !== undefined) slot.maxStreams = s.maxConcurrentStreams;
      if (slot.ready) return;
      clearTimeout(connectTimer);
      this.#connecting--;
      slot.ready = true;
      this.#lastConnectError = undefined;
      this.#failures = 0;
      this.#retryAt = 0;
      o.metrics.upstreamSessionsActive.labels(this.name).inc();
      this.#replenish();
      // Don't keep the process alive for idle upstream connections (a connecting one does, so
      // that `warm()` can wait for it).
      session.unref();
      this.#serveWaiters();
    });
    session.on('goaway', (code: number, lastStreamId: number) => {
      o.metrics.upstreamGoaways.labels(this.name).inc();
      slot.goawayLastStreamId = lastStreamId;
      this.#retire(slot);
      if (code !== 0) o.log.warn({ upstream: this.name, code, lastStreamId, activeStreams: slot.active }, 'upstream sent GOAWAY with an error code');
      this.#replenish();
    });
    session.on('error', (err: Error) => {
      if (!slot.ready) this.#lastConnectError = err;
      // With the session's state: a session error that fails streams in flight is rare and hard
      // to reproduce, and its message alone (e.g. 'Protocol error') does not say which frame did it.
      o.log.warn({
        upstream: this.name, err: err.message, code: (err as NodeJS.ErrnoException).code, ready: slot.ready, draining: slot.draining,
        goawayLastStreamId: slot.goawayLastStreamId, streamsOpened: slot.streamsOpened, activeStreams: slot.active, pingOutstanding: slot.pingOutstanding,
      }, 'upstream session error');
    });
    session.once('close', () => {
      clearTimeout(connectTimer);
      const i = this.#live.indexOf(slot);
      if (i >= 0) this.#live.splice(i, 1);
      this.#draining.delete(slot);
      if (slot.ready) {
        o.metrics.upstreamSessionsActive.labels(this.name).dec();
      } else {
        this.#connecting--;
        this.#lastConnectError ??= new Error('the upstream closed the connection before its SETTINGS');
        this.#failures++;
        this.#retryAt = Date.now() + Math.min(BACKOFF_MIN_MS * 2 ** (this.#failures - 1), BACKOFF_MAX_MS);
        this.#failWaitersIfNoneConnecting();
      }
      this.#replenish();
    });
  }

  #retire(slot: Slot): void {
    if (slot.draining) return;
    slot.draining = true;
    const i = this.#live.indexOf(slot);
    if (i >= 0) this.#live.splice(i, 1);
    this.#draining.add(slot);
    if (slot.active === 0 && !slot.session.closed) slot.session.close();
  }

  /** Keep `size` sessions: open them now, or when the back-off after failed connects ends. */
  #replenish(): void {
    if (this.#closed || this.#live.length >= this.#o.size) return;
    const wait = this.#retryAt - Date.now();
    if (wait <= 0) { while (this.#live.length < this.#o.size) this.#open(); return; }
    if (this.#reconnectTimer !== undefined) return;
    this.#reconnectTimer = setTimeout(() => { this.#reconnectTimer = undefined; this.#replenish(); }, wait);
    this.#reconnectTimer.unref();
  }

  #serveWaiters(): void {
    // Streams promised to waiters in this pass: each opens its stream a microtask later, so the
    // sessions' `active` counts do not see them yet.
    const promised = new Map<Slot, number>();
    const promisedOwners = new Map<string, number>();
    for (let i = 0; i < this.#waiters.length;) {
      const w = this.#waiters[i]!;
      const slot = this.pick(w.avoid, promised, w.owner, w.owner === undefined ? 0 : promisedOwners.get(w.owner) ?? 0);
      if (slot === undefined) { i++; continue; }
      promised.set(slot, (promised.get(slot) ?? 0) + 1);
      if (w.owner !== undefined) promisedOwners.set(w.owner, (promisedOwners.get(w.owner) ?? 0) + 1);
      this.#waiters.splice(i, 1);
      clearTimeout(w.timer);
      w.resolve(slot);
    }
  }

  #failWaitersIfNoneConnecting(): void {
    if (this.#connecting > 0 || this.#live.some((s) => s.ready)) return;
    const err = new GatewayError('GW_ERR_UPSTREAM_CONNECT', [this.name]);
    for (const w of this.#waiters.splice(0)) { clearTimeout(w.timer); w.reject(err); }
  }

  #removeWaiter(w: Waiter): void {
    const i = this.#waiters.indexOf(w);
    if (i >= 0) this.#waiters.splice(i, 1);
  }

  /**
   * PING every session taking streams, busy or idle; one still unanswered from the last round is
   * dead. (A session closing after a GOAWAY cannot send PING in Node; its streams keep their own
   * first-byte and idle timeouts.)
   */
  #ping(): void {
    this.#shrink();
    let suspects: Slot[] | undefined;
    for (const s of this.#live) {
      if (!s.ready || s.session.destroyed || s.session.closed) continue;
      if (!s.pingOutstanding && s.session.ping(s.onPingAck)) { s.pingOutstanding = true; continue; }
      s.pingOutstanding = true;
      (suspects ??= []).push(s);
    }
    // Timers run before I/O: after a stalled event loop the ACK may sit unread in the socket.
    // Decide after this turn's I/O phase.
    if (suspects) setImmediate(() => { for (const s of suspects) if (s.pingOutstanding && !s.session.destroyed && !s.session.closed) this.#declareDead(s); });
  }

  /**
   * Close sessions opened above `size` (when every session was full) once they have had no stream
   * for a whole PING interval, so a burst does not leave the pool at up to 4 × `size` for good.
   * Runs on the PING timer: nothing on the request path.
   */
  #shrink(): void {
    let extra = this.#live.length - this.#o.size;
    for (const s of [...this.#live]) {
      const idle = s.ready && s.active === 0 && s.streamsOpened === s.streamsAtLastRound;
      s.streamsAtLastRound = s.streamsOpened;
      if (extra > 0 && idle) { extra--; this.#retire(s); }
    }
  }

  #declareDead(s: Slot): void {
    s.dead = true;
    // Out of the pool now (its 'close' comes later): no retry may land on it.
    const i = this.#live.indexOf(s);
    if (i >= 0) this.#live.splice(i, 1);
    this.#o.log.warn({ upstream: this.#o.name, activeStreams: s.active }, 'upstream did not answer PING; replacing the session');
    s.session.destroy(new Error('the upstream did not answer PING'));
  }
}
