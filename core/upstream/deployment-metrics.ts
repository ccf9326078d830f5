/**
 * Metrics of deployments, read at scrape time from the running runtime's models (nothing on the
 * request path): in flight vs cap, ejected (1/0), and counters of failovers in and out and of
 * ejections, labelled by model and deployment (names from config: bounded).
 */
import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { DeploymentSet } from './deployments.ts';

type Labels = 'model' | 'deployment';

export function registerDeploymentMetrics(registry: Registry, sets: () => Iterable<DeploymentSet>): void {
  if (registry.getSingleMetric('ghostgate_deployment_inflight') !== undefined) return;
  const r = [registry];
  const inflight = new Gauge<Labels>({ name: 'ghostgate_deployment_inflight', help: 'Requests in flight on a deployment', labelNames: ['model', 'deployment'], registers: r });
  const cap = new Gauge<Labels>({ name: 'ghostgate_deployment_capacity', help: 'This process\'s share of a deployment\'s maxConcurrent (0 = no cap; summed over --workers N: about the cap)', labelNames: ['model', 'deployment'], registers: r });
  const ejected = new Gauge<Labels>({ name: 'ghostgate_deployment_ejected', help: '1 while a deployment is ejected (outlier ejection), until a probe lets it back', labelNames: ['model', 'deployment'], registers: r });
  const failovers = new Counter<Labels | 'direction'>({ name: 'ghostgate_deployment_failovers_total', help: 'Requests that failed over away from (out) or onto (in) a deployment before their first byte', labelNames: ['model', 'deployment', 'direction'], registers: r });
  const ejections = new Counter<Labels>({ name: 'ghostgate_deployment_ejections_total', help: 'Times a deployment was ejected', labelNames: ['model', 'deployment'], registers: r });
  // Counters follow the deployments' own counts (kept across reloads): add what grew since the last scrape.
  const last = new Map<string, number>();
  const follow = (c: Counter<Labels | 'direction'> | Counter<Labels>, key: string, labels: Record<string, string>, value: number): void => {
    const prev = last.get(key) ?? 0;
    if (value > prev) (c as Counter<string>).inc(labels, value - prev);
    last.set(key, value);
  };
  // Gauges are set just before each scrape (prom-client calls `collect` on the first one read).
  const collect = (): void => {
    inflight.reset(); cap.reset(); ejected.reset();
    for (const set of sets()) {
      for (const d of set.list) {
        const l = { model: set.model, deployment: d.name };
        inflight.set(l, d.h.inflight);
        cap.set(l, d.cap);
        ejected.set(l, d.h.ejectedUntil > 0 ? 1 : 0);
        const k = `${set.model}\0${d.name}`;
        follow(failovers, `${k}\0in`, { ...l, direction: 'in' }, d.h.failoversIn);
        follow(failovers, `${k}\0out`, { ...l, direction: 'out' }, d.h.failoversOut);
        follow(ejections, `${k}\0ej`, l, d.h.ejectionsTotal);
      }
    }
  };
  (inflight as unknown as { collect: () => void }).collect = collect;
}

/** The deployment sets of a runtime's models, once each (aliases share their model's). */
export function deploymentSets(models: ReadonlyMap<string, { deployments?: DeploymentSet }>): DeploymentSet[] {
  const out = new Set<DeploymentSet>();
  for (const m of models.values()) if (m.deployments !== undefined) out.add(m.deployments);
  return [...out];
}
