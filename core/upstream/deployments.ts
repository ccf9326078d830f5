/**
 * A logical model served by several deployments (units of capacity: an upstream, the model name
 * that upstream expects, a region, a weight, a priority, a concurrency cap), and the choice of one
 * for each attempt of a request.
 *
 * - **Selection.** The highest-priority group (lowest `priority` number) that has an available
 *   deployment is used, by weight within it (weighted random). Available: not tried yet by this
 *   request, below its concurrency cap, not ejected, not inside a `Retry-After` the model gave.
 * - **Passive outlier ejection** (only with two deployments or more: a model's only deployment has
 *   nowhere to fail over to, and its own errors say more than a 503). `consecutiveFailures` in a
 *   row, or an error rate of at least `errorRate` over `minRequests` or more within `windowMs`,
 *   eject the deployment for `baseMs`, doubling with each ejection up to `maxMs`. When the time is
 *   up, one real request (the probe) may go; its success lets the deployment back, its failure
 *   ejects it again for longer. The multiplier resets once the deployment has stayed healthy for
 *   `maxMs`.
 * - **Retry-After** from the model (a 429 or 503) keeps that deployment out until then (it is not
 *   a failure for ejection: the model is telling us its load).
 * - When none is available, `unavailableMs` says how long until one may be (for the 503's
 *   `Retry-After`).
 *
 * Synchronous and allocation-free on the request path: `pick` scans a small array once; `tried`
 * is a bit mask (at most 32 deployments per model).
 *
 * Why one file over 250 lines: selection, caps, Retry-After and ejection share one per-deployment state
 * record that `pick` scans in one pass; the parts are not useful apart.
 */
import type { DeploymentConfig, FailoverConfig } from '../config/model.ts';

/** What became of one attempt (or of the request that kept it), for health and counters. */
export type AttemptResult =
  /** The deployment answered well (status < 500, not 429), whatever the client then did. */
  | 'ok'
  /** Connect error, reset or refused stream, timeout, 5xx, or a failure mid-response. */
  | 'fail'
  /** 429: load, not failure (its Retry-After, if any, is given separately). */
  | 'throttled'
  /** Says nothing about the deployment (the client cancelled first). */
  | 'neutral';

export const MAX_DEPLOYMENTS = 32;
/** A Retry-After longer than this is cut to it. */
const MAX_RETRY_AFTER_MS = 300_000;

/**
 * What a deployment has learned and holds: shared by the Deployment objects of successive
 * runtimes while the deployment stays (same upstream and model name), so a reload keeps its
 * requests in flight, its ejection and its counters (and a runtime built and then discarded for
 * an invalid config changes nothing).
 */
export class DeploymentHealth {
  inflight = 0;
  consecutiveFailures = 0;
  windowStart = 0;
  windowRequests = 0;
  windowFailures = 0;
  /** Epoch ms until which it is ejected; 0 = not ejected. Past it and not probing: one probe may go. */
  ejectedUntil = 0;
  probing = false;
  /** Ejections in a row (the back-off multiplier), and when the last one started. */
  ejections = 0;
  lastEjectedAt = 0;
  /** Epoch ms until which the model asked not to be sent more (Retry-After). */
  retryAfterUntil = 0;
  requests = 0;
  failures = 0;
  ejectionsTotal = 0;
  /** Requests that came here after failing elsewhere / that left here for another deployment. */
  failoversIn = 0;
  failoversOut = 0;
}

export class Deployment {
  readonly model: string;
  readonly config: DeploymentConfig;
  /** `upstream` or, when one upstream serves several deployments of a model, `upstream/model`. */
  readonly name: string;
  readonly bit: number;
  readonly h: DeploymentHealth;
  /**
   * This process's share of `maxConcurrent` (0 = no cap): the whole of it with one process, and
   * ceil(maxConcurrent / workers) in each of `--workers N`, so the deployment as a whole never
   * gets more than its capacity plus at most N − 1 (the rounding).
   */
  readonly cap: number;

  constructor(model: string, config: DeploymentConfig, name: string, bit: number, h = new DeploymentHealth(), workers = 1) {
    this.model = model;
    this.config = config;
    this.name = name;
    this.bit = bit;
    this.h = h;
    this.cap = config.maxConcurrent > 0 ? Math.ceil(config.maxConcurrent / workers) : 0;
  }

  /** For `/-/upstreams`. */
  state(now = Date.now()): DeploymentState {
    const ejected = this.h.ejectedUntil > 0;
    return {
      name: this.name, upstream: this.config.upstream, model: this.config.model, region: this.config.region,
      weight: this.config.weight, priority: this.config.priority,
      state: !ejected ? (this.h.retryAfterUntil > now ? 'retry-after' : 'healthy') : this.h.probing ? 'probing' : now < this.h.ejectedUntil ? 'ejected' : 'probe-ready',
      ejectedUntil: ejected ? new Date(this.h.ejectedUntil).toISOString() : null,
      retryAfterUntil: this.h.retryAfterUntil > now ? new Date(this.h.retryAfterUntil).toISOString() : null,
      inflight: this.h.inflight, cap: this.cap,
      requests: this.h.requests, failures: this.h.failures, consecutiveFailures: this.h.consecutiveFailures,
      ejections: this.h.ejectionsTotal, failoversIn: this.h.failoversIn, failoversOut: this.h.failoversOut,
    };
  }
}

export interface DeploymentState {
  name: string; upstream: string; model: string; region: string; weight: number; priority: number;
  state: 'healthy' | 'retry-after' | 'ejected' | 'probe-ready' | 'probing';
  ejectedUntil: string | null; retryAfterUntil: string | null;
  inflight: number; cap: number;
  requests: number; failures: number; consecutiveFailures: number; ejections: number; failoversIn: number; failoversOut: number;
}

export class DeploymentSet {
  readonly model: string;
  readonly policy: FailoverConfig;
  /** Sorted by priority (stable: config order within a priority). */
  readonly list: readonly Deployment[];
  readonly ejection: boolean;
  readonly #rng: () => number;

  /**
   * `previous`: the set this model had before a reload; deployments that stay (same upstream and
   * model name) keep their state: requests in flight, ejection, counters. `workers`: the processes
   * sharing each deployment's `maxConcurrent` (`--workers N`).
   */
  constructor(model: string, configs: readonly DeploymentConfig[], policy: FailoverConfig, previous?: DeploymentSet, rng: () => number = Math.random, workers = 1) {
    if (configs.length === 0 || configs.length > MAX_DEPLOYMENTS) throw new Error(`a model has 1 to ${MAX_DEPLOYMENTS} deployments (${model}: ${configs.length})`);
    this.model = model;
    this.policy = policy;
    this.#rng = rng;
    const perUpstream = new Map<string, number>();
    for (const c of configs) perUpstream.set(c.upstream, (perUpstream.get(c.upstream) ?? 0) + 1);
    const list = configs.map((c, i) => {
      const name = perUpstream.get(c.upstream)! > 1 ? `${c.upstream}/${c.model}` : c.upstream;
      const old = previous?.list.find((d) => d.config.upstream === c.upstream && d.config.model === c.model);
      return new Deployment(model, c, name, 1 << i, old?.h, workers);
    });
    this.list = list.sort((a, b) => a.config.priority - b.config.priority || a.bit - b.bit);
    this.ejection = list.length > 1;
  }

  /**
   * The deployment for the next attempt, or undefined if none is available. `tried`: bits of the
   * deployments this request already tried. A deployment whose ejection is over is picked for
   * one probe at a time.
   */
  pick(tried: number, now = Date.now()): Deployment | undefined {
    const list = this.list;
    let group = NaN;
    let sum = 0;
    let first = -1;
    let last = -1;
    for (let i = 0; i < list.length; i++) {
      const d = list[i]!;
      if (sum > 0 && d.config.priority !== group) break;
      if (!available(d, tried, now)) continue;
      if (sum === 0) { group = d.config.priority; first = i; }
      sum += d.config.weight;
      last = i;
    }
    if (sum === 0) return undefined;
    if (first === last) return list[first];
    let r = this.#rng() * sum;
    for (let i = first; i <= last; i++) {
      const d = list[i]!;
      if (d.config.priority !== group || !available(d, tried, now)) continue;
      r -= d.config.weight;
      if (r < 0) return d;
    }
    return list[last];
  }

  /** The attempt starts on `d` (it counts against its cap until `release`). */
  acquire(d: Deployment, failover: boolean): void {
    const c = d;
    c.h.inflight++;
    c.h.requests++;
    if (failover) c.h.failoversIn++;
    if (c.h.ejectedUntil > 0) c.h.probing = true;
  }

  /**
   * The attempt on `d` ended (or the request it served did): its slot is free, and the result
   * counts for its health. `retryAfterMs`: the model asked for a pause (429/503 Retry-After).
   * `failedOver`: the request goes on to another deployment.
   */
  release(d0: Deployment, result: AttemptResult, opts: { retryAfterMs?: number; failedOver?: boolean } = {}, now = Date.now()): void {
    const d = d0;
    d.h.inflight--;
    if (opts.failedOver) d.h.failoversOut++;
    if (opts.retryAfterMs !== undefined && opts.retryAfterMs > 0) d.h.retryAfterUntil = Math.max(d.h.retryAfterUntil, now + Math.min(opts.retryAfterMs, MAX_RETRY_AFTER_MS));
    const wasProbe = d.h.probing;
    if (result === 'neutral' || result === 'throttled') {
      if (wasProbe) d.h.probing = false;
      return;
    }
    const e = this.policy.ejection;
    if (now - d.h.windowStart >= e.windowMs) { d.h.windowStart = now; d.h.windowRequests = 0; d.h.windowFailures = 0; }
    d.h.windowRequests++;
    if (result === 'ok') {
      d.h.consecutiveFailures = 0;
      if (d.h.ejectedUntil > 0) {
        // The probe came back well (or a request from before the ejection did): back in.
        d.h.ejectedUntil = 0;
        d.h.probing = false;
        d.h.windowStart = now; d.h.windowRequests = 0; d.h.windowFailures = 0;
      } else if (d.h.ejections > 0 && now - d.h.lastEjectedAt >= e.maxMs) {
        d.h.ejections = 0;
      }
      return;
    }
    d.h.failures++;
    d.h.consecutiveFailures++;
    d.h.windowFailures++;
    if (!this.ejection) return;
    if (d.h.ejectedUntil > 0) {
      // A failed probe: out again, for longer. (A late failure of a request sent before the
      // ejection changes nothing.)
      if (wasProbe) this.#eject(d, now);
      return;
    }
    const byCount = e.consecutiveFailures > 0 && d.h.consecutiveFailures >= e.consecutiveFailures;
    const byRate = e.errorRate > 0 && d.h.windowRequests >= e.minRequests && d.h.windowFailures >= e.errorRate * d.h.windowRequests;
    if (byCount || byRate) this.#eject(d, now);
  }

  /** The model asked for a pause (its answer was relayed, not failed over): keep it out until then. */
  noteRetryAfter(d0: Deployment, retryAfterMs: number, now = Date.now()): void {
    const d = d0;
    if (retryAfterMs > 0) d.h.retryAfterUntil = Math.max(d.h.retryAfterUntil, now + Math.min(retryAfterMs, MAX_RETRY_AFTER_MS));
  }

  #eject(d: Deployment, now: number): void {
    const e = this.policy.ejection;
    d.h.ejections++;
    d.h.ejectionsTotal++;
    d.h.lastEjectedAt = now;
    d.h.ejectedUntil = now + Math.min(e.baseMs * 2 ** (d.h.ejections - 1), e.maxMs);
    d.h.probing = false;
    d.h.consecutiveFailures = 0;
    d.h.windowStart = now; d.h.windowRequests = 0; d.h.windowFailures = 0;
  }

  /**
   * How long until a deployment not in `tried` may be available (for a 503's Retry-After), in ms:
   * the nearest end of an ejection or Retry-After; 1 s for a deployment that is only full.
   */
  unavailableMs(tried: number, now = Date.now()): number {
    let min = Infinity;
    for (const d of this.list) {
      if ((tried & d.bit) !== 0) continue;
      let wait = 1000;
      if (d.h.ejectedUntil > now) wait = d.h.ejectedUntil - now;
      if (d.h.retryAfterUntil > now) wait = Math.max(wait, d.h.retryAfterUntil - now);
      if (wait < min) min = wait;
    }
    return Number.isFinite(min) ? min : 1000;
  }

  /** Why nothing is available: for the error message. */
  why(now = Date.now()): string {
    let ejected = 0, full = 0, paused = 0;
    for (const d of this.list) {
      if (d.h.ejectedUntil > 0 && (now < d.h.ejectedUntil || d.h.probing)) ejected++;
      else if (d.h.retryAfterUntil > now) paused++;
      else if (d.cap > 0 && d.h.inflight >= d.cap) full++;
    }
    const parts: string[] = [];
    if (ejected) parts.push(`${ejected} ejected`);
    if (paused) parts.push(`${paused} asked to wait (Retry-After)`);
    if (full) parts.push(`${full} at capacity`);
    return parts.join(', ') || 'all tried';
  }
}

function available(d: Deployment, tried: number, now: number): boolean {
  if ((tried & d.bit) !== 0) return false;
  const c = d.cap;
  if (c > 0 && d.h.inflight >= c) return false;
  if (d.h.retryAfterUntil > now) return false;
  // Ejected: only once its time is up, and one probe at a time.
  if (d.h.ejectedUntil > 0 && (now < d.h.ejectedUntil || d.h.probing)) return false;
  return true;
}

/**
 * A `Retry-After` header value in ms (delta-seconds or an HTTP-date), or undefined if absent or
 * unreadable.
 */
export function parseRetryAfter(v: string | string[] | undefined, now = Date.now()): number | undefined {
  if (v === undefined) return undefined;
  const s = (Array.isArray(v) ? v[0] : v)?.trim();
  if (!s) return undefined;
  if (/^\d+$/.test(s)) return Number(s) * 1000;
  const t = Date.parse(s);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}
