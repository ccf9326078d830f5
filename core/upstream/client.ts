/**
 * The core's UpstreamClient: one per configured upstream. Adds the upstream's own credential,
 * opens the stream on the pool, enforces time-to-first-byte, retries streams the upstream did
 * not process, and resets the upstream stream (CANCEL) the instant the signal fires.
 *
 * Why one file over 250 lines: the stream's life (open, first-byte deadline, retry of unprocessed
 * streams, cancel, truncation check) is one state machine over one upstream stream.
 */
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type { ClientHttp2Stream, IncomingHttpHeaders } from 'node:http2';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { GatewayError } from '../errors.ts';
import type { GatewayMetrics } from '../metrics.ts';
import type { UpstreamConfig } from '../config/model.ts';
import type { Logger, UpstreamClient, UpstreamResponse, UpstreamSendOptions } from '../types.ts';
import { H2Pool, RetryableError, endStreamArrived } from './h2-pool.ts';
import type { Slot } from './h2-pool.ts';

const { NGHTTP2_CANCEL } = http2.constants;

export interface UpstreamDeps { log: Logger; metrics: GatewayMetrics; readSecret(ref: { env: string } | { file: string }): string }

/** A client plus what the runtime needs to manage it. */
export interface ManagedUpstream extends UpstreamClient {
  readonly config: UpstreamConfig;
  /** Stable fingerprint of the settings: a reload keeps the pool when it is unchanged. */
  readonly key: string;
  warm(): Promise<void>;
  close(): Promise<void>;
  /** A runtime starts using this upstream. */
  retain(): void;
  /** A runtime is done with it (its requests have ended); the last release closes it. */
  release(): Promise<void>;
  /**
   * Connection state for `/-/upstreams`: `live` sessions take streams (h2: the peer's SETTINGS
   * arrived), `connecting` are opened and not ready yet, `draining` finish their streams after a GOAWAY;
   * `streams`: requests open upstream (h2: streams not closed yet; HTTP/1.1: sockets in use).
   */
  stats(): { sessionsOpened: number; live: number; connecting: number; draining: number; streams: number };
}

export function createUpstream(name: string, config: UpstreamConfig, deps: UpstreamDeps, key: string): ManagedUpstream {
  const credential = config.credential
    ? { header: config.credential.header, value: config.credential.prefix + deps.readSecret(config.credential.secret) }
    : undefined;
  const base = new URL(config.url);
  const basePath = base.pathname.replace(/\/$/, '');
  const tls = config.tls ? { ca: config.tls.ca ? deps.readSecret(config.tls.ca) : undefined, servername: config.tls.servername, rejectUnauthorized: config.tls.rejectUnauthorized } : undefined;
  return config.protocol === 'http1'
    ? new H1Upstream(name, config, deps, key, base, basePath, credential, tls)
    : new H2Upstream(name, config, deps, key, base, basePath, credential, tls);
}

type Credential = { header: string; value: string } | undefined;
type Tls = { ca?: string; servername?: string; rejectUnauthorized: boolean } | undefined;

/** What both protocols share: identity, settings, credential, and the reference count. */
abstract class BaseUpstream {
  readonly name: string;
  readonly config: UpstreamConfig;
  readonly key: string;
  protected readonly deps: UpstreamDeps;
  protected readonly basePath: string;
  protected readonly credential: Credential;
  #refs = 0;

  constructor(name: string, config: UpstreamConfig, deps: UpstreamDeps, key: string, basePath: string, credential: Credential) {
    this.name = name;
    this.config = config;
    this.key = key;
    this.deps = deps;
    this.basePath = basePath;
    this.credential = credential;
  }

  abstract close(): Promise<void>;
  retain(): void { this.#refs++; }
  release(): Promise<void> { return --this.#refs <= 0 ? this.close() : Promise.resolve(); }
}

class H2Upstream extends BaseUpstream implements ManagedUpstream {
  #pool: H2Pool;

  constructor(name: string, config: UpstreamConfig, deps: UpstreamDeps, key: string, base: URL, basePath: string, credential: Credential, tls: Tls) {
    super(name, config, deps, key, basePath, credential);
    this.#pool = new H2Pool({
      name, origin: base.origin, size: config.pool.size, connectTimeoutMs: config.timeouts.connectMs,
      pingIntervalMs: config.pool.pingIntervalMs, tls: config.protocol === 'h2' ? (tls ?? { rejectUnauthorized: true }) : undefined,
      log: deps.log, metrics: deps.metrics,
    });
  }

  warm(): Promise<void> { return this.#pool.warm(); }
  close(): Promise<void> { return this.#pool.close(); }
  stats() { return { sessionsOpened: this.#pool.sessionsOpened, live: this.#pool.liveSessions, connecting: this.#pool.connectingSessions, draining: this.#pool.drainingSessions, streams: this.#pool.openStreams }; }

  async send(opts: UpstreamSendOptions): Promise<UpstreamResponse> {
    const headers: Record<string, string | number> = {
      ...opts.headers,
      ':method': 'POST',
      ':path': this.basePath + opts.path,
      ':scheme': this.#pool.scheme,
      ':authority': this.#pool.authority,
      'content-length': opts.body.length,
    };
    if (this.credential) headers[this.credential.header] = this.credential.value;
    const max = this.config.maxRetries;
    // A retry goes to another session than the one that refused it (a new one if need be).
    let avoid: Slot | undefined;
    for (let attempt = 0; ; attempt++) {
      if (opts.signal?.aborted) throw abortError();
      const slot = this.#pool.pick(avoid, undefined, opts.owner) ?? await this.#pool.wait(opts.signal, avoid, opts.owner);
      // The client may have gone while we waited for a session: never send it then.
      if (opts.signal?.aborted) throw abortError();
      try {
        return await this.#attempt(slot, headers, opts);
      } catch (e) {
        if (e instanceof RetryableError && attempt < max) {
          this.deps.metrics.upstreamRetries.labels(this.name, e.reason).inc();
          avoid = slot;
          continue;
        }
        if (e instanceof RetryableError) throw new GatewayError('GW_ERR_UPSTREAM_UNAVAILABLE', [this.name]);
        throw e;
      }
    }
  }

  #attempt(slot: Slot, headers: Record<string, string | number>, opts: UpstreamSendOptions): Promise<UpstreamResponse> {
    const stream: ClientHttp2Stream = this.#pool.request(slot, headers, opts.owner);
    const sentAt = performance.now();
    stream.end(opts.body);
    const signal = opts.signal;
    const firstByteMs = opts.firstByteTimeoutMs ?? this.config.timeouts.firstByteMs;
    return new Promise<UpstreamResponse>((resolve, reject) => {
      let settled = false;
      const onAbort = (): void => {
        // The client is gone: reset the upstream stream now, whatever phase it is in. Then destroy
        // it: a stream the relay paused (its client did not read) whose upstream already sent
        // END_STREAM is kept open by Node until its buffered data is read, so close() alone never
        // closed it (its session stayed draining forever). test/core/upstream-stream-release.test.ts
        stream.close(NGHTTP2_CANCEL);
        stream.destroy();
        if (!settled) { settled = true; reject(abortError()); }
      };
      const fail = (err: Error): void => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        reject(err);
      };
      if (signal) signal.addEventListener('abort', onAbort, { once: true });
      if (firstByteMs > 0) {
        stream.setTimeout(firstByteMs, () => {
          if (settled) return;
          stream.close(NGHTTP2_CANCEL);
          fail(new GatewayError('GW_ERR_UPSTREAM_TIMEOUT', [this.name, firstByteMs]));
        });
      }
      stream.once('response', (h: IncomingHttpHeaders) => {
        if (settled) return;
        settled = true;
        const ttfbMs = performance.now() - sentAt;
        this.deps.metrics.upstreamTtfb.labels(this.name).observe(ttfbMs / 1000);
        stream.setTimeout(this.config.timeouts.idleMs, () => {
          stream.destroy(new GatewayError('GW_ERR_UPSTREAM_IDLE_TIMEOUT', [this.name, this.config.timeouts.idleMs]));
        });
        // From here the relay owns the stream; the signal still cancels it (listener stays).
        // Complete only if the upstream's END_STREAM arrived: a RST_STREAM(NO_ERROR) or a session
        // that went away mid-response also ends the stream, with rstCode 0.
        resolve({ status: Number(h[':status']), headers: h, body: stream, ttfbMs, complete: () => endStreamArrived(stream) && !slot.forcedClose });
      });
      stream.on('error', () => { /* reported through 'close' below */ });
      stream.once('close', () => {
        signal?.removeEventListener('abort', onAbort);
        if (settled) return;
        const reason = this.#pool.unprocessed(slot, stream);
        fail(reason ? new RetryableError(reason) : new GatewayError('GW_ERR_UPSTREAM_RESET', [this.name]));
      });
    });
  }
}

/** HTTP/1.1 upstream: a keep-alive agent; cancel = destroy the socket (h1 has nothing finer). */
class H1Upstream extends BaseUpstream implements ManagedUpstream {
  #agent: http.Agent;
  #base: URL;
  #transport: typeof http | typeof https;
  #opened = 0;

  constructor(name: string, config: UpstreamConfig, deps: UpstreamDeps, key: string, base: URL, basePath: string, credential: Credential, tls: Tls) {
    super(name, config, deps, key, basePath, credential);
    this.#base = base;
    const secure = base.protocol === 'https:';
    this.#transport = secure ? https : http;
    const agentOpts = { keepAlive: true, maxSockets: config.pool.size, maxFreeSockets: config.pool.size, timeout: config.timeouts.idleMs, scheduling: 'lifo' as const };
    this.#agent = secure ? new https.Agent({ ...agentOpts, ...(tls ?? {}) }) : new http.Agent(agentOpts);
    this.#agent.on('free', () => {});
    const origCreate = this.#agent.createConnection.bind(this.#agent);
    (this.#agent as unknown as { createConnection: typeof origCreate }).createConnection = (...args: Parameters<typeof origCreate>) => {
      this.#opened++;
      deps.metrics.upstreamSessionsOpened.labels(name).inc();
      return origCreate(...args);
    };
  }

  async warm(): Promise<void> { /* sockets open on first use; nothing to warm for h1 */ }
  async close(): Promise<void> { this.#agent.destroy(); }
  stats() { return { sessionsOpened: this.#opened, live: Object.values(this.#agent.sockets).flat().length + Object.values(this.#agent.freeSockets).flat().length, connecting: 0, draining: 0, streams: Object.values(this.#agent.sockets).flat().length }; }

  async send(opts: UpstreamSendOptions): Promise<UpstreamResponse> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#attempt(opts);
      } catch (e) {
        if (e instanceof RetryableError && attempt < this.config.maxRetries) {
          this.deps.metrics.upstreamRetries.labels(this.name, e.reason).inc();
          continue;
        }
        throw e instanceof RetryableError ? new GatewayError('GW_ERR_UPSTREAM_RESET', [this.name]) : e;
      }
    }
  }

  #attempt(opts: UpstreamSendOptions): Promise<UpstreamResponse> {
    if (opts.signal?.aborted) return Promise.reject(abortError());
    const headers: Record<string, string | number> = { ...opts.headers, host: this.#base.host, 'content-length': opts.body.length };
    if (this.credential) headers[this.credential.header] = this.credential.value;
    const sentAt = performance.now();
    const firstByteMs = opts.firstByteTimeoutMs ?? this.config.timeouts.firstByteMs;
    return new Promise<UpstreamResponse>((resolve, reject) => {
      let settled = false;
      const req = this.#transport.request({
        agent: this.#agent, method: 'POST', protocol: this.#base.protocol, hostname: this.#base.hostname,
        port: this.#base.port, path: this.basePath + opts.path, headers,
      });
      const onAbort = (): void => { req.destroy(); if (!settled) { settled = true; reject(abortError()); } };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      const timer = firstByteMs > 0 ? setTimeout(() => {
        if (settled) return;
        settled = true;
        req.destroy();
        reject(new GatewayError('GW_ERR_UPSTREAM_TIMEOUT', [this.name, firstByteMs]));
      }, firstByteMs) : undefined;
      req.once('response', (res) => {
        clearTimeout(timer);
        if (settled) { res.destroy(); return; }
        settled = true;
        const ttfbMs = performance.now() - sentAt;
        this.deps.metrics.upstreamTtfb.labels(this.name).observe(ttfbMs / 1000);
        res.setTimeout(this.config.timeouts.idleMs, () => res.destroy(new GatewayError('GW_ERR_UPSTREAM_IDLE_TIMEOUT', [this.name, this.config.timeouts.idleMs])));
        res.once('close', () => opts.signal?.removeEventListener('abort', onAbort));
        resolve({ status: res.statusCode ?? 502, headers: res.headers, body: res as Readable, ttfbMs, complete: () => res.complete });
      });
      req.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        if (settled) return;
        settled = true;
        // A kept-alive socket the server closed just as we reused it: nothing was processed.
        if (req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) return reject(new RetryableError('stale_keepalive'));
        reject(err.code === 'ECONNREFUSED' || err.code === 'ENOTFOUND' || err.code === 'EHOSTUNREACH'
          ? new GatewayError('GW_ERR_UPSTREAM_CONNECT', [this.name])
          : new GatewayError('GW_ERR_UPSTREAM_RESET', [this.name]));
      });
      req.end(opts.body);
    });
  }
}

/** The error a send rejects with when its signal fired (the client is gone; nobody reads it). */
export class UpstreamAbortError extends Error {
  constructor() { super('aborted by client'); this.name = 'AbortError'; }
}
function abortError(): UpstreamAbortError { return new UpstreamAbortError(); }
