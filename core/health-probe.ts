/**
 * The instance's own check while it has voted itself out (`health.probe`). With /_ping failing,
 * the load balancer sends it nothing, so its window held no evidence either way: once the
 * failures aged out ("too little traffic to judge") it passed /_ping again whether its model was
 * back or not, took users' requests, failed them and went out again: it flapped for as long as
 * the model was down. While out (and not draining), it now sends its default model's upstream a
 * one-token completion every `intervalMs` and records the outcome in the window like a request:
 * a failing probe keeps it out, and once the model answers again the failures age out and it
 * comes back (core/health.ts: out stays out while the window holds a failure).
 *
 * A model with deployments is up if any deployment answers (that is what failover serves).
 * Success: any answer below 500 other than 429. Failure: 5xx, 429, refused, reset, or no
 * response header within `timeoutMs`. test/core/health-probe.test.ts
 */
import { Cancellation } from './exchange.ts';
import type { HealthMonitor } from './health.ts';
import type { GatewayMetrics } from './metrics.ts';
import type { Runtime } from './runtime.ts';

export interface ProbeHost {
  readonly runtime: Runtime;
  readonly health: HealthMonitor;
  readonly metrics: GatewayMetrics;
}

export class HealthProbe {
  readonly #host: ProbeHost;
  #timer: NodeJS.Timeout | undefined = undefined;
  #intervalMs = 0;
  #running = false;

  constructor(host: ProbeHost) { this.#host = host; }

  /** Follow the running config's `health.probe.intervalMs` (0 = off); called at start and on reload. */
  configure(): void {
    const ms = this.#host.runtime.config.health.probe.intervalMs;
    if (ms === this.#intervalMs) return;
    this.stop();
    this.#intervalMs = ms;
    if (ms > 0) {
      this.#timer = setInterval(() => { void this.tick(); }, ms);
      this.#timer.unref();
    }
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#intervalMs = 0;
  }

  /** One probe, if the instance is voted out and no probe is still running. */
  async tick(): Promise<void> {
    const h = this.#host;
    if (this.#running || !h.health.votedOut()) return;
    this.#running = true;
    try {
      const ok = await this.#probe();
      h.health.record(ok);
      h.metrics.healthProbes.labels(ok ? 'ok' : 'fail').inc();
    } finally {
      this.#running = false;
    }
  }

  async #probe(): Promise<boolean> {
    const rt = this.#host.runtime;
    const route = rt.models.get(rt.config.defaultModel ?? '');
    if (route === undefined) return false;
    const targets = route.deployments
      ? route.deployments.list.map((d) => ({ upstream: d.config.upstream, model: d.config.model }))
      : [{ upstream: route.upstream, model: route.upstreamModel }];
    const timeoutMs = rt.config.health.probe.timeoutMs;
    for (const t of targets) {
      const up = rt.upstreams.get(t.upstream);
      if (up === undefined) continue;
      const signal = new Cancellation();
      const timer = setTimeout(() => signal.fire('probe timeout'), timeoutMs);
      try {
        const body = Buffer.from(JSON.stringify({ model: t.model, prompt: '', max_tokens: 1, stream: false }));
        const r = await up.send({ path: '/v1/completions', headers: { 'content-type': 'application/json' }, body, signal, firstByteTimeoutMs: timeoutMs });
        r.body.resume();
        if (r.status < 500 && r.status !== 429) return true;
      } catch {
        // refused, reset, timed out: this target failed; try the next
      } finally {
        clearTimeout(timer);
      }
    }
    return false;
  }
}
