/**
 * Micro-benchmark of the per-request metrics (`core/hot-metrics.ts` vs prom-client): the four
 * updates one proxied request makes (requests counter, duration, TTFB and upstream TTFB
 * histograms, labelled as in `core/metrics.ts`), over 8 label sets in rotation. Prints the median
 * cost per request (ns) and GC runs per million requests, for:
 *   hot          HotCounter/HotHistogram: child found through nested maps, inc/observe add numbers
 *   prom labels  prom-client `m.labels(...values).inc()/observe(v)` (what the code would write)
 *   prom cached  prom-client children cached per label set (by the same nested maps);
 *                their inc/observe still hash the label object on every call
 *
 *   npx node bench/hot-metrics.ts [requests=200000] [runs=9]
 */
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { Counter, Histogram, Registry } from 'prom-client';
import { HotCounter, HotHistogram, HotRegistry } from '../core/hot-metrics.ts';

const N = Number(process.argv[2] ?? 200_000);
const RUNS = Number(process.argv[3] ?? 9);
const B = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30];
const REQ = ['route', 'model', 'upstream', 'outcome', 'status', 'arm'];
const DUR = ['route', 'model', 'upstream', 'outcome', 'arm'];
const TTFB = ['route', 'model', 'upstream', 'arm'];
const SETS = Array.from({ length: 8 }, (_, i) => ({
  route: i % 2 ? '/v1/completions' : '/v1/chat/completions', model: i % 4 < 2 ? 'ghost-small' : 'ghost-large',
  upstream: 'local', outcome: i === 7 ? 'cancelled' : 'ok', status: i === 7 ? '499' : '200', arm: i % 3 ? '' : 'canary',
}));

interface Impl { request(i: number): void; registry: Registry }

function hot(): Impl {
  const r = new HotRegistry();
  const o = { registers: [r] };
  const req = new HotCounter({ name: 'req', help: 'h', labelNames: REQ, ...o });
  const dur = new HotHistogram({ name: 'dur', help: 'h', labelNames: DUR, buckets: B, ...o });
  const tt = new HotHistogram({ name: 'tt', help: 'h', labelNames: TTFB, buckets: B, ...o });
  const up = new HotHistogram({ name: 'up', help: 'h', labelNames: ['upstream'], buckets: B, ...o });
  return {
    registry: r,
    request(i) {
      const s = SETS[i & 7]!;
      req.labels(s.route, s.model, s.upstream, s.outcome, s.status, s.arm).inc();
      dur.labels(s.route, s.model, s.upstream, s.outcome, s.arm).observe(0.012);
      tt.labels(s.route, s.model, s.upstream, s.arm).observe(0.004);
      up.labels(s.upstream).observe(0.003);
    },
  };
}

function prom(cached: boolean): Impl {
  const r = new Registry();
  const o = { registers: [r] };
  const req = new Counter({ name: 'req', help: 'h', labelNames: REQ, ...o });
  const dur = new Histogram({ name: 'dur', help: 'h', labelNames: DUR, buckets: B, ...o });
  const tt = new Histogram({ name: 'tt', help: 'h', labelNames: TTFB, buckets: B, ...o });
  const up = new Histogram({ name: 'up', help: 'h', labelNames: ['upstream'], buckets: B, ...o });
  if (!cached) {
    return {
      registry: r,
      request(i) {
        const s = SETS[i & 7]!;
        req.labels(s.route, s.model, s.upstream, s.outcome, s.status, s.arm).inc();
        dur.labels(s.route, s.model, s.upstream, s.outcome, s.arm).observe(0.012);
        tt.labels(s.route, s.model, s.upstream, s.arm).observe(0.004);
        up.labels(s.upstream).observe(0.003);
      },
    };
  }
  // The same nested-map lookup HotMetric uses, holding prom-client's own children.
  const cache = <C>(make: (v: string[]) => C) => {
    const root = new Map<string, unknown>();
    return (...v: string[]): C => {
      let m = root;
      for (let k = 0; k < v.length - 1; k++) { let n = m.get(v[k]!) as Map<string, unknown> | undefined; if (!n) m.set(v[k]!, n = new Map()); m = n; }
      let c = m.get(v[v.length - 1]!) as C | undefined;
      if (c === undefined) m.set(v[v.length - 1]!, c = make(v));
      return c;
    };
  };
  const reqC = cache((v) => req.labels(...v));
  const durC = cache((v) => dur.labels(...v));
  const ttC = cache((v) => tt.labels(...v));
  const upC = cache((v) => up.labels(...v));
  return {
    registry: r,
    request(i) {
      const s = SETS[i & 7]!;
      reqC(s.route, s.model, s.upstream, s.outcome, s.status, s.arm).inc();
      durC(s.route, s.model, s.upstream, s.outcome, s.arm).observe(0.012);
      ttC(s.route, s.model, s.upstream, s.arm).observe(0.004);
      upC(s.upstream).observe(0.003);
    },
  };
}

let gcs = 0;
new PerformanceObserver((l) => { gcs += l.getEntries().length; }).observe({ entryTypes: ['gc'] });
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

async function measure(name: string, impl: Impl): Promise<{ ns: number; gcPerM: number }> {
  for (let i = 0; i < N; i++) impl.request(i); // warm up (JIT, children created)
  const ns: number[] = [];
  let gc = 0;
  for (let r = 0; r < RUNS; r++) {
    await new Promise((res) => setImmediate(res)); // let GC entries of the last run arrive
    const g0 = gcs;
    const t0 = performance.now();
    for (let i = 0; i < N; i++) impl.request(i);
    ns.push(((performance.now() - t0) * 1e6) / N);
    await new Promise((res) => setImmediate(res));
    gc += gcs - g0;
  }
  const out = { ns: median(ns), gcPerM: (gc / (RUNS * N)) * 1e6 };
  const text = await impl.registry.metrics();
  if (!text.includes('req{route="/v1/completions"') || !text.includes('dur_bucket{')) throw new Error(`${name}: /metrics text is missing series`);
  console.log(`${name.padEnd(12)} ${out.ns.toFixed(0).padStart(6)} ns per request (4 updates)   ${out.gcPerM.toFixed(1).padStart(6)} GCs per million requests`);
  return out;
}

console.log(`per-request metrics: median of ${RUNS} runs × ${N} requests (node ${process.version})`);
const h = await measure('hot', hot());
const p = await measure('prom labels', prom(false));
const c = await measure('prom cached', prom(true));
console.log(`prom labels / hot = ${(p.ns / h.ns).toFixed(1)}×, prom cached / hot = ${(c.ns / h.ns).toFixed(1)}×; hot saves ${((p.ns - h.ns) / 1000).toFixed(2)} µs per request against prom labels`);
