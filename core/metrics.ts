/**
 * Prometheus metrics (prom-client). Distributions, not averages: latency, time to first byte,
 * and time-to-cancel are histograms with buckets fine enough at the low end (sub-millisecond)
 * to show what the proxy adds. Label values come from config (route, model, upstream, arm),
 * never from clients, so cardinality is bounded.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { HotCounter, HotHistogram, HotRegistry } from './hot-metrics.ts';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30];
const CANCEL_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1];

export class GatewayMetrics {
  /** A prom-client Registry that also exposes the per-request metrics (see hot-metrics.ts). */
  readonly registry: HotRegistry;
  /** Per-request metrics: children that only add to numbers (see hot-metrics.ts). */
  readonly requests: HotCounter;
  readonly duration: HotHistogram;
  readonly ttfb: HotHistogram;
  readonly upstreamTtfb: HotHistogram;
  readonly cancelPropagation: Histogram<'phase'>;
  readonly cancelledBeforeForward: Counter;
  readonly errors: Counter<'code'>;
  readonly pluginFailures: Counter<'plugin' | 'phase' | 'reason'>;
  readonly upstreamSessionsOpened: Counter<'upstream'>;
  readonly upstreamSessionsActive: Gauge<'upstream'>;
  readonly upstreamGoaways: Counter<'upstream'>;
  readonly upstreamRetries: Counter<'upstream' | 'reason'>;
  readonly clientSessions: Counter<'protocol'>;
  readonly clientSessionsCut: Counter<'reason'>;
  readonly clientConnectionsOpen: Gauge;
  readonly clientConnectionsRefused: Counter<'reason'>;
  readonly clientTimeouts: Counter<'phase'>;
  readonly inflight: Gauge;
  readonly reloads: Counter<'result'>;
  readonly configVersion: Gauge;
  readonly healthy: Gauge;
  readonly healthProbes: Counter;

  constructor(registry = new HotRegistry(), { defaults = true } = {}) {
    this.registry = registry;
    const r = [registry];
    if (defaults) collectDefaultMetrics({ register: registry, prefix: 'ghostgate_process_' });
    this.requests = new HotCounter({ name: 'ghostgate_requests_total', help: 'Completed exchanges by outcome', labelNames: ['route', 'model', 'upstream', 'outcome', 'status', 'arm'], registers: r });
    this.duration = new HotHistogram({ name: 'ghostgate_request_duration_seconds', help: 'Request arrival to last byte (or cancel)', labelNames: ['route', 'model', 'upstream', 'outcome', 'arm'], buckets: LATENCY_BUCKETS, registers: r });
    this.ttfb = new HotHistogram({ name: 'ghostgate_time_to_first_byte_seconds', help: 'Request arrival to first response body byte relayed to the client', labelNames: ['route', 'model', 'upstream', 'arm'], buckets: LATENCY_BUCKETS, registers: r });
    this.upstreamTtfb = new HotHistogram({ name: 'ghostgate_upstream_time_to_first_byte_seconds', help: 'Request sent upstream to its response headers', labelNames: ['upstream'], buckets: LATENCY_BUCKETS, registers: r });
    this.cancelPropagation = new Histogram({ name: 'ghostgate_cancel_propagation_seconds', help: 'Client reset noticed to upstream stream reset sent', labelNames: ['phase'], buckets: CANCEL_BUCKETS, registers: r });
    this.cancelledBeforeForward = new Counter({ name: 'ghostgate_cancelled_before_forward_total', help: 'Requests whose client was gone before they were sent upstream (never sent)', registers: r });
    this.errors = new Counter({ name: 'ghostgate_errors_total', help: 'Error replies by code', labelNames: ['code'], registers: r });
    this.pluginFailures = new Counter({ name: 'ghostgate_plugin_failures_total', help: 'Policy step phases that failed, by plugin, phase and reason (threw, bad_result, bad_header, timeout)', labelNames: ['plugin', 'phase', 'reason'], registers: r });
    this.upstreamSessionsOpened = new Counter({ name: 'ghostgate_upstream_sessions_opened_total', help: 'Upstream connections opened', labelNames: ['upstream'], registers: r });
    this.upstreamSessionsActive = new Gauge({ name: 'ghostgate_upstream_sessions', help: 'Upstream connections open now', labelNames: ['upstream'], registers: r });
    this.upstreamGoaways = new Counter({ name: 'ghostgate_upstream_goaways_total', help: 'GOAWAY frames received from upstreams', labelNames: ['upstream'], registers: r });
    this.upstreamRetries = new Counter({ name: 'ghostgate_upstream_retries_total', help: 'Streams retried on a fresh session because the upstream did not process them', labelNames: ['upstream', 'reason'], registers: r });
    this.clientSessions = new Counter({ name: 'ghostgate_client_connections_total', help: 'Client connections accepted', labelNames: ['protocol'], registers: r });
    this.clientSessionsCut = new Counter({ name: 'ghostgate_client_sessions_cut_total', help: 'Client HTTP/2 sessions the gateway closed with GOAWAY(ENHANCE_YOUR_CALM), by reason', labelNames: ['reason'], registers: r });
    this.clientConnectionsOpen = new Gauge({ name: 'ghostgate_client_connections', help: 'Client connections open now on the data plane (both ports)', registers: r });
    this.clientConnectionsRefused = new Counter({ name: 'ghostgate_client_connections_refused_total', help: 'Client connections closed on accept: limits.maxConnections or limits.maxConnectionsPerIp reached', labelNames: ['reason'], registers: r });
    this.clientTimeouts = new Counter({ name: 'ghostgate_client_timeouts_total', help: 'Client connections or streams cut by a deadline (h1_headers, h1_body, h2_stream_body) or closed for idleness (h2_session_idle)', labelNames: ['phase'], registers: r });
    this.inflight = new Gauge({ name: 'ghostgate_inflight_requests', help: 'Requests in flight', registers: r });
    this.reloads = new Counter({ name: 'ghostgate_config_reloads_total', help: 'Config reloads by result', labelNames: ['result'], registers: r });
    this.configVersion = new Gauge({ name: 'ghostgate_config_version', help: 'Version of the running config', registers: r });
    this.healthy = new Gauge({ name: 'ghostgate_healthy', help: '1 when /_ping reports healthy', registers: r });
    this.healthProbes = new Counter({ name: 'ghostgate_health_probes_total', help: 'Probes of the default model sent while voted out (health.probe), by result', labelNames: ['result'], registers: r });
  }
}
