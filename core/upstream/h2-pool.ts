/**
 * A small pool of long-lived HTTP/2 sessions to one upstream.
 *
 * - Opened and warmed at start; PING keeps idle sessions warm and finds dead ones.
 * - New streams go to the least-loaded live session, within the peer's SETTINGS_MAX_CONCURRENT_STREAMS.
 * - GOAWAY (nginx sends one after `keepalive_requests`, 100 by default): the session stops taking
 *   new streams at once, finishes the ones it has, and a fresh session replaces it. Streams the
 *   peer did not process (refused, or above GOAWAY's last stream id) are reported as retryable,
 *   which is safe even for POST (RFC 9113 §8.7).
 */
import http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream, OutgoingHttpHeaders, SecureClientSessionOptions } from 'node:http2';
import { Readable } from 'node:stream';
import { GatewayError } from '../errors.ts';
import type { CancelSignal, Logger } from '../types.ts';
import type { GatewayMetrics } from '../metrics.ts';

const { NGHTTP2_REFUSED_STREAM } = http2.constants;

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
  connected = false;
  draining = false;
  /** Peer's SETTINGS_MAX_CONCURRENT_STREAMS (until we hear it, a safe 100). */
  maxStreams = 100;
  /** Set when the peer sent GOAWAY: streams above it were not processed. */
  goawayLastStreamId = -1;
  streamsOpened = 0;
  /** We destroyed this session ourselves (shutdown deadline): its streams did not complete. */
  forcedClose = false;
  constructor(session: ClientHttp2Session) { this.session = session; }
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

type Waiter = { resolve: (s: Slot) => void; reject: (e: Error) => void; timer: NodeJS.Timeout };

export class H2Pool {
  readonly name: string;
  readonly origin: string;
  readonly authority: string;
  readonly scheme: string;
  #o: H2PoolOptions;
  #live: Slot[] = [];
  #draining = new Set<Slot>();
  #waiters: Waiter[] = [];
  #closed = false;
  #pingTimer: NodeJS.Timeout | undefined;
  #lastConnectError: Error | undefined;
  #lastFailAt = 0;
  #connecting = 0;
  #opened = 0;

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
  get liveSessions(): number { return this.#live.filter((s) => s.connected).length; }
  get drainingSessions(): number { return this.#draining.size; }

  /** Open `size` sessions and wait until they are connected (or failed). */
  async warm(): Promise<void> {
    while (this.#live.length < this.#o.size) this.#open();
    await Promise.allSettled(this.#live.map((s) => (s.connected ? Promise.resolve() : new Promise<void>((res) => {
      s.session.once('connect', () => res()); s.session.once('close', () => res());
    }))));
  }

  /** A session with room for a stream now, or undefined (then use `wait`). Synchronous: the hot path. */
  pick(): Slot | undefined {
    let best: Slot | undefined;
    for (const s of this.#live) {
      if (!s.connected || s.draining) continue;
      if (best === undefined || s.active < best.active) best = s;
    }
    if (best !== undefined && best.active >= best.maxStreams) {
      // Every session is full: open one more (bounded) and let nghttp2 queue this stream meanwhile.
      if (this.#live.length < this.#o.size * 4) this.#open();
    }
    // Replace lost sessions (not while the upstream is refusing connections).
    if (this.#live.length < this.#o.size && Date.now() - this.#lastFailAt > 250) this.#open();
    return best;
  }

  /** Wait for a connected session (connect budget), opening one if needed. */
  wait(signal?: CancelSignal): Promise<Slot> {
    if (this.#closed) return Promise.reject(new GatewayError('GW_ERR_UPSTREAM_UNAVAILABLE', [this.name]));
    // The upstream refused a connection a moment ago: fail fast rather than hammer it.
    if (this.#connecting === 0 && this.#lastConnectError && Date.now() - this.#lastFailAt < 250) {
      return Promise.reject(new GatewayError('GW_ERR_UPSTREAM_CONNECT', [this.name]));
    }
    if (this.#connecting === 0) this.#open();
    return new Promise<Slot>((resolve, reject) => {
      const w: Waiter = {
        resolve, reject,
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
  request(slot: Slot, headers: OutgoingHttpHeaders): ClientHttp2Stream {
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
    stream.once('close', () => {
      slot.active--;
      if (slot.draining && slot.active === 0) slot.session.close();
    });
    return stream;
  }

  /** Whether a failed stream was certainly not processed by the upstream (safe to retry). */
  unprocessed(slot: Slot, stream: ClientHttp2Stream): string | undefined {
    if (stream.rstCode === NGHTTP2_REFUSED_STREAM) return 'refused_stream';
    if (stream.id === undefined) return 'never_sent';
    if (slot.goawayLastStreamId >= 0 && stream.id > slot.goawayLastStreamId) return 'goaway';
    return undefined;
  }

  /** Close every session gracefully (streams in flight finish). */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#pingTimer) clearInterval(this.#pingTimer);
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
    const connectTimer = setTimeout(() => {
      if (!slot.connected) session.destroy(new Error(`connect timeout after ${o.connectTimeoutMs} ms`));
    }, o.connectTimeoutMs);
    connectTimer.unref();
    session.once('connect', () => {
      clearTimeout(connectTimer);
      this.#connecting--;
      slot.connected = true;
      this.#lastConnectError = undefined;
      o.metrics.upstreamSessionsActive.labels(this.name).inc();
      session.setLocalWindowSize(8 << 20);
      this.#serveWaiters();
    });
    session.on('remoteSettings', (s) => {
      if (s.maxConcurrentStreams !== undefined) slot.maxStreams = s.maxConcurrentStreams;
    });
    session.on('goaway', (code: number, lastStreamId: number) => {
      o.metrics.upstreamGoaways.labels(this.name).inc();
      slot.goawayLastStreamId = lastStreamId;
      this.#retire(slot);
      if (code !== 0) o.log.warn({ upstream: this.name, code }, 'upstream sent GOAWAY with an error code');
      this.#replenish();
    });
    session.on('error', (err: Error) => {
      if (!slot.connected) { this.#lastConnectError = err; this.#lastFailAt = Date.now(); }
      o.log.warn({ upstream: this.name, err: err.message }, 'upstream session error');
    });
    session.once('close', () => {
      clearTimeout(connectTimer);
      if (!slot.connected) this.#connecting--;
      else o.metrics.upstreamSessionsActive.labels(this.name).dec();
      const wasLive = this.#live.includes(slot);
      this.#live = this.#live.filter((s) => s !== slot);
      this.#draining.delete(slot);
      if (!slot.connected) this.#failWaitersIfNoneConnecting();
      else if (wasLive) this.#replenish();
    });
    // Don't keep the process alive for idle upstream connections.
    session.unref();
  }

  #retire(slot: Slot): void {
    if (slot.draining) return;
    slot.draining = true;
    this.#live = this.#live.filter((s) => s !== slot);
    this.#draining.add(slot);
    if (slot.active === 0 && !slot.session.closed) slot.session.close();
  }

  #replenish(): void {
    if (this.#closed) return;
    if (this.#live.length < this.#o.size) this.#open();
  }

  #serveWaiters(): void {
    while (this.#waiters.length) {
      const slot = this.pick();
      if (!slot) return;
      const w = this.#waiters.shift()!;
      clearTimeout(w.timer);
      w.resolve(slot);
    }
  }

  #failWaitersIfNoneConnecting(): void {
    if (this.#connecting > 0 || this.#live.some((s) => s.connected)) return;
    const err = new GatewayError('GW_ERR_UPSTREAM_CONNECT', [this.name]);
    for (const w of this.#waiters.splice(0)) { clearTimeout(w.timer); w.reject(err); }
  }

  #removeWaiter(w: Waiter): void {
    const i = this.#waiters.indexOf(w);
    if (i >= 0) this.#waiters.splice(i, 1);
  }

  #ping(): void {
    for (const s of this.#live) {
      if (!s.connected || s.active > 0 || s.session.destroyed) continue;
      const ok = s.session.ping((err) => {
        if (err && !s.session.destroyed) { this.#o.log.warn({ upstream: this.name }, 'upstream PING failed; replacing session'); s.session.destroy(); }
      });
      if (!ok) s.session.destroy();
    }
  }
}
