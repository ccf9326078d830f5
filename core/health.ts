/**
 * Success rate over a sliding window, against the SLO. `/_ping` fails while the rate is below
 * the SLO (the instance votes itself out of DNS / the load balancer) and passes again only once
 * it is back above `recoverAt` (hysteresis, so it does not flap on the line), or the window holds
 * too few requests to judge and no failure. Client cancels are
 * neither successes nor failures; local policy replies (426, 429…) are successes of the gateway.
 */
import type { HealthConfig } from './config/model.ts';

/** What the window needs of `health` (the probe's settings are core/health-probe.ts's). */
type WindowConfig = Pick<HealthConfig, 'slo' | 'recoverAt' | 'windowSeconds' | 'minRequests'>;

export interface HealthStatus { healthy: boolean; successRate: number | null; requests: number; failures: number; slo: number; windowSeconds: number }

export class HealthMonitor {
  #cfg: WindowConfig;
  #ok: Uint32Array;
  #fail: Uint32Array;
  #slotSecond: Float64Array;
  #healthy = true;
  #draining = false;

  constructor(cfg: WindowConfig) {
    this.#cfg = cfg;
    this.#ok = new Uint32Array(cfg.windowSeconds);
    this.#fail = new Uint32Array(cfg.windowSeconds);
    this.#slotSecond = new Float64Array(cfg.windowSeconds).fill(-1);
  }

  /** Adopt new settings on reload (the window restarts if its length changed). */
  configure(cfg: WindowConfig): void {
    if (cfg.windowSeconds !== this.#cfg.windowSeconds) {
      this.#ok = new Uint32Array(cfg.windowSeconds);
      this.#fail = new Uint32Array(cfg.windowSeconds);
      this.#slotSecond = new Float64Array(cfg.windowSeconds).fill(-1);
    }
    this.#cfg = cfg;
  }

  record(success: boolean, nowMs = Date.now()): void {
    const sec = Math.floor(nowMs / 1000);
    const i = sec % this.#cfg.windowSeconds;
    if (this.#slotSecond[i] !== sec) { this.#slotSecond[i] = sec; this.#ok[i] = 0; this.#fail[i] = 0; }
    if (success) this.#ok[i]!++; else this.#fail[i]!++;
  }

  /** Out of rotation on its success rate (not counting draining): what the probe watches. */
  votedOut(nowMs = Date.now()): boolean {
    this.status(nowMs);
    return !this.#healthy && !this.#draining;
  }

  /** Mark the instance as draining (shutdown): health fails so traffic moves away. */
  drain(): void { this.#draining = true; }

  status(nowMs = Date.now()): HealthStatus {
    const sec = Math.floor(nowMs / 1000);
    const w = this.#cfg.windowSeconds;
    let ok = 0, fail = 0;
    for (let i = 0; i < w; i++) {
      if (this.#slotSecond[i]! > sec - w) { ok += this.#ok[i]!; fail += this.#fail[i]!; }
    }
    const total = ok + fail;
    const rate = total === 0 ? null : ok / total;
    const recoverAt = this.#cfg.recoverAt ?? this.#cfg.slo + (1 - this.#cfg.slo) / 2;
    if (rate !== null && total >= this.#cfg.minRequests) {
      if (this.#healthy && rate < this.#cfg.slo) this.#healthy = false;
      else if (!this.#healthy && rate >= recoverAt) this.#healthy = true;
    } else if (!this.#healthy && total < this.#cfg.minRequests && fail === 0) {
      // Too little traffic to judge, and nothing failed within the window: back in. A voted-out
      // instance gets no traffic; its own probes (core/health-probe.ts) are what fails here while
      // the model is still down, so it stays out instead of coming back to fail users again.
      this.#healthy = true;
    }
    return { healthy: this.#healthy && !this.#draining, successRate: rate, requests: total, failures: fail, slo: this.#cfg.slo, windowSeconds: w };
  }
}
