/**
 * Prometheus metrics (prom-client). Distributions, not averages: latency, time to first byte,
 * and time-to-cancel are histograms with buckets fine enough at the low end (sub-millisecond)
 * to show what the proxy adds. Label values come from config (route, model, upstream, arm),
 * never from clients, so cardinality is bounded.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30];
const CANCEL_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1];

/**
 * Label children looked up by nested maps: no label hashing or key strings per request (prom-
 * client's `labels(...)` builds a key each call). Label values are bounded (they come from
 * config), so the maps stay small.
 */
export class ChildCache<C> {
  #root = new Map<string, unknown>();
  #make: (values: string[]) => C;
  constructor(make: (values: string[]) => C) { this.#make = make; }
  get(...values: string[]): C {
    let m = this.#root;
    const last = values.length - 1;
    for (let i = 0; i < last; i++) {
      let next = m.get(values[i]!) as Map<string, unknown> | undefined;
      if (next === undefined) { next = new Map(); m.set(values[i]!, next); }
      m = next;
    }
    let c = m.get(values[last]!) as C | undefined;
    if (c === undefined) { c = this.#make(values); m.set(values[last]!, c); }
    return c;
  }
}

export class GatewayMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'route' | 'model' | 'upstream' | 'outcome' | 'status' | 'arm'>;
  readonly duration: Histogram<'route' | 'model' | 'upstream' | 'outcome' | 'arm'>;
  readonly ttfb: Histogram<'route' | 'model' | 'upstream' | 'arm'>;
  readonly upstreamTtfb: Histogram<'upstream'>;
  readonly cancelPropagation: Histogram<'phase'>;
  readonly cancelledBeforeForward: Counter;
  readonly errors: Counter<'code'>;
  readonly upstreamSessionsOpened: Counter<'upstream'>;
  readonly upstreamSessionsActive: Gauge<'upstream'>;
  readonly upstreamGoaways: Counter<'upstream'>;
  readonly upstreamRetries: Counter<'upstream' | 'reason'>;
  readonly clientSessions: Counter<'protocol'>;
  readonly inflight: Gauge;
  readonly reloads: Counter<'result'>;
  readonly configVersion: Gauge;
  readonly healthy: Gauge;
  /** Hot-path children (route, model, upstream, outcome, status|arm...). */
  readonly requestsChild: ChildCache<{ inc(): void }>;
  readonly durationChild: ChildCache<{ observe(v: number): void }>;
  readonly ttfbChild: ChildCache<{ observe(v: number): void }>;
  readonly upstreamTtfbChild: ChildCache<{ observe(v: number): void }>;

  constructor(registry = new Registry(), { defaults = true } = {}) {
    this.registry = registry;
    const r = [registry];
    if (defaults) collectDefaultMetrics({ register: registry, prefix: 'ghostgate_process_' });
    this.requests = new Counter({ name: 'ghostgate_requests_total', help: 'Completed exchanges by outcome', labelNames: ['route', 'model', 'upstream', 'outcome', 'status', 'arm'], registers: r });
    this.duration = new Histogram({ name: 'ghostgate_request_duration_seconds', help: 'Request arrival to last byte (or cancel)', labelNames: ['route', 'model', 'upstream', 'outcome', 'arm'], buckets: LATENCY_BUCKETS, registers: r });
    this.ttfb = new Histogram({ name: 'ghostgate_time_to_first_byte_seconds', help: 'Request arrival to first response body byte relayed to the client', labelNames: ['route', 'model', 'upstream', 'arm'], buckets: LATENCY_BUCKETS, registers: r });
    this.upstreamTtfb = new Histogram({ name: 'ghostgate_upstream_time_to_first_byte_seconds', help: 'Request sent upstream to its response headers', labelNames: ['upstream'], buckets: LATENCY_BUCKETS, registers: r });
    this.cancelPropagation = new Histogram({ name: 'ghostgate_cancel_propagation_seconds', help: 'Client reset noticed to upstream stream reset sent', labelNames: ['phase'], buckets: CANCEL_BUCKETS, registers: r });
    this.cancelledBeforeForward = new Counter({ name: 'ghostgate_cancelled_before_forward_total', help: 'Requests whose client was gone before they were sent upstream (never sent)', registers: r });
    this.errors = new Counter({ name: 'ghostgate_errors_total', help: 'Error replies by code', labelNames: ['code'], registers: r });
    this.upstreamSessionsOpened = new Counter({ name: 'ghostgate_upstream_sessions_opened_total', help: 'Upstream connections opened', labelNames: ['upstream'], registers: r });
    this.upstreamSessionsActive = new Gauge({ name: 'ghostgate_upstream_sessions', help: 'Upstream connections open now', labelNames: ['upstream'], registers: r });
    this.upstreamGoaways = new Counter({ name: 'ghostgate_upstream_goaways_total', help: 'GOAWAY frames received from upstreams', labelNames: ['upstream'], registers: r });
    this.upstreamRetries = new Counter({ name: 'ghostgate_upstream_retries_total', help: 'Streams retried on a fresh session because the upstream did not process them', labelNames: ['upstream', 'reason'], registers: r });
    this.clientSessions = new Counter({ name: 'ghostgate_client_connections_total', help: 'Client connections accepted', labelNames: ['protocol'], registers: r });
    this.inflight = new Gauge({ name: 'ghostgate_inflight_requests', help: 'Requests in flight', registers: r });
    this.reloads = new Counter({ name: 'ghostgate_config_reloads_total', help: 'Config reloads by result', labelNames: ['result'], registers: r });
    this.configVersion = new Gauge({ name: 'ghostgate_config_version', help: 'Version of the running config', registers: r });
    this.healthy = new Gauge({ name: 'ghostgate_healthy', help: '1 when /_ping reports healthy', registers: r });
    this.requestsChild = new ChildCache((v) => this.requests.labels(...(v as [string, string, string, string, string, string])));
    this.durationChild = new ChildCache((v) => this.duration.labels(...(v as [string, string, string, string, string])));
    this.ttfbChild = new ChildCache((v) => this.ttfb.labels(...(v as [string, string, string, string])));
    this.upstreamTtfbChild = new ChildCache((v) => this.upstreamTtfb.labels(v[0]!));
  }
}
