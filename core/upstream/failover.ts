/**
 * The attempt loop of one request to a model with deployments, as state the request path's Call
 * keeps (core/request/call.ts): the loop goes around the ONE attempt of the request path. Before
 * each attempt, `next()` picks a deployment (core/upstream/deployments.ts); an attempt that fails
 * before any response byte reached the client (connect error, refused or reset stream,
 * time-to-first-byte timeout, a 5xx or 429 answer) goes on to the next deployment, within the
 * model's budget of attempts and time, with the same body (only the model name changes to what
 * that deployment expects). A response is judged here before any byte of it is relayed, so a
 * failover never follows a byte the client saw.
 *
 * A cancelled request stops at once: no attempt starts once its signal fired (the Call checks),
 * and the attempt in flight is reset upstream by the upstream client itself.
 *
 * No deployment available (all ejected, at their cap, or inside a Retry-After) before any attempt:
 * a 503 GW_ERR_UPSTREAM_NO_DEPLOYMENT with `Retry-After`, at once.
 *
 * Cost on the request path: one object per request of such a model, a scan of its deployments
 * per attempt; nothing for models with one `upstream`.
 */
import http2 from 'node:http2';
import { performance } from 'node:perf_hooks';
import { GatewayError } from '../errors.ts';
import type { UpstreamResponse } from '../types.ts';
import type { ManagedUpstream } from './client.ts';
import type { AttemptResult, Deployment, DeploymentSet } from './deployments.ts';
import { parseRetryAfter } from './deployments.ts';

const { NGHTTP2_CANCEL } = http2.constants;

export class Failover {
  readonly set: DeploymentSet;
  /** The deployment of the attempt in flight (or of the response being relayed). */
  current: Deployment | undefined = undefined;
  /** Attempts started. */
  attempts = 0;
  #tried = 0;
  readonly #t0 = performance.now();

  constructor(set: DeploymentSet) { this.set = set; }

  /**
   * The deployment for the next attempt (counted against its cap from now on), or the error to
   * answer: no deployment left to try, or the budget spent. `last`: the previous attempt's error.
   */
  next(last?: unknown): Deployment | GatewayError {
    const policy = this.set.policy;
    if (this.attempts >= policy.attempts || (this.attempts > 0 && this.#left() <= 0)) return asError(last, this.set, this.#tried);
    const d = this.set.pick(this.#tried);
    if (d === undefined) return asError(last, this.set, this.#tried);
    this.#tried |= d.bit;
    this.set.acquire(d, this.attempts > 0);
    this.attempts++;
    this.current = d;
    return d;
  }

  /** The first-byte timeout for an attempt on `upstream`: its own, cut to what the budget leaves. */
  firstByteTimeoutMs(upstream: ManagedUpstream): number | undefined {
    const left = this.#left();
    if (!Number.isFinite(left)) return undefined;
    const own = upstream.config.timeouts.firstByteMs;
    return Math.max(1, Math.ceil(own > 0 ? Math.min(own, left) : left));
  }

  /**
   * The attempt failed before response headers. True: try the next deployment (the current one
   * is released as failed). False: answer `e` (the Call does; `done` releases the deployment).
   */
  retryOnError(e: unknown, cancelled: boolean): boolean {
    const d = this.current;
    if (d === undefined || cancelled) return false;
    // Only the upstream's failures; a request the gateway itself refuses goes no further.
    if (!(e instanceof GatewayError) || !e.code.startsWith('GW_ERR_UPSTREAM_')) return false;
    if (!this.#more()) return false;
    this.current = undefined;
    this.set.release(d, 'fail', { failedOver: true });
    return true;
  }

  /**
   * Response headers arrived. A 5xx or 429 with somewhere else to go: the response is dropped
   * (its stream reset upstream) and true is returned (try the next). Otherwise false: relay it.
   * A Retry-After on a 429/503 keeps that deployment out until then, either way.
   */
  retryOnResponse(r: UpstreamResponse, cancelled: boolean): boolean {
    const d = this.current;
    const status = r.status;
    if (d === undefined || (status !== 429 && status < 500)) return false;
    const retryAfterMs = parseRetryAfter(r.headers['retry-after']);
    if (cancelled || !this.#more()) {
      if (retryAfterMs !== undefined) this.set.noteRetryAfter(d, retryAfterMs);
      return false;
    }
    discard(r);
    this.current = undefined;
    this.set.release(d, status === 429 ? 'throttled' : 'fail', { retryAfterMs, failedOver: true });
    return true;
  }

  /** The request ended: the deployment that served it is free again, and learns how it went. */
  done(outcome: string, status: number): void {
    const d = this.current;
    if (d === undefined) return;
    this.current = undefined;
    this.set.release(d, resultOf(outcome, status));
  }

  /** Another attempt is allowed and a deployment is there for it. */
  #more(): boolean {
    return this.attempts < this.set.policy.attempts && this.#left() > 0 && this.set.pick(this.#tried) !== undefined;
  }

  #left(): number {
    const b = this.set.policy.budgetMs;
    return b > 0 ? b - (performance.now() - this.#t0) : Infinity;
  }
}

/** What a request that a deployment answered means for that deployment's health. */
export function resultOf(outcome: string, status: number): AttemptResult {
  if (outcome === 'ok') return status === 429 ? 'throttled' : status >= 500 ? 'fail' : 'ok';
  if (outcome === 'upstream_aborted' || outcome === 'upstream_error') return 'fail';
  return 'neutral';
}

function asError(last: unknown, set: DeploymentSet, tried: number): GatewayError {
  if (last instanceof GatewayError) return last;
  const secs = Math.max(1, Math.ceil(set.unavailableMs(tried) / 1000));
  return new GatewayError('GW_ERR_UPSTREAM_NO_DEPLOYMENT', [set.model, set.why()], { headers: { 'retry-after': String(secs) } });
}

/** Drop a response we do not relay: reset its stream upstream (CANCEL) and free it. */
function discard(r: UpstreamResponse): void {
  const h2 = r.body as unknown as { close?: (code: number) => void; rstCode?: number };
  if (typeof h2.close === 'function' && 'rstCode' in h2) h2.close(NGHTTP2_CANCEL);
  r.body.destroy();
}
