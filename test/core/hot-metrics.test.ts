/**
 * The per-request metrics (core/hot-metrics.ts) read exactly as prom-client's own metrics would
 * for the same observations: /metrics text, getMetricsAsJSON (which cluster aggregation reads),
 * a single metric as text, and through AggregatorRegistry.aggregate.
 */
import t from 'tap';
import { AggregatorRegistry, Counter, Histogram, Registry } from 'prom-client';
import { HotCounter, HotHistogram, HotRegistry } from '../../core/hot-metrics.ts';

const BUCKETS = [0.001, 0.01, 0.1, 1];
const OBS: Array<[string, string, number]> = [['/v1/completions', 'ok', 0.0005], ['/v1/completions', 'ok', 0.02], ['/v1/completions', 'ok', 5], ['/v1/chat/completions', 'client_cancelled', 0.01], ['/v1/completions', 'ok', 0.1]];

/** The same metrics, fed the same observations, once with prom-client's types and once hot. */
function both(): { prom: Registry; hot: HotRegistry } {
  const prom = new Registry();
  const hot = new HotRegistry();
  for (const r of [prom, hot]) new Counter({ name: 'other_total', help: 'a plain prom-client counter', labelNames: ['code'], registers: [r] }).labels('X').inc(3);
  const pc = new Counter({ name: 'req_total', help: 'requests "by" outcome\\n', labelNames: ['route', 'outcome'], registers: [prom] });
  const ph = new Histogram({ name: 'dur_seconds', help: 'duration', labelNames: ['route'], buckets: BUCKETS, registers: [prom] });
  const hc = new HotCounter({ name: 'req_total', help: 'requests "by" outcome\\n', labelNames: ['route', 'outcome'], registers: [hot] });
  const hh = new HotHistogram({ name: 'dur_seconds', help: 'duration', labelNames: ['route'], buckets: BUCKETS, registers: [hot] });
  for (const [route, outcome, v] of OBS) {
    pc.labels(route, outcome).inc(); ph.labels(route).observe(v);
    hc.labels(route, outcome).inc(); hh.labels(route).observe(v);
  }
  return { prom, hot };
}

/**
 * Text exposition as a set of metric blocks (neither the order of blocks nor that of labels is
 * part of the format: prom-client puts `le` first, ours last, as before).
 */
const sortLabels = (line: string): string => line.replace(/\{([^}]*)\}/, (_m, l: string) => `{${l.split(/,(?=[a-z_]+=)/).sort().join(',')}}`);
const blocks = (text: string): string[] => text.split('\n\n').map((b) => b.trim().split('\n').map(sortLabels).join('\n')).filter(Boolean).sort();
/** JSON metrics as comparable lines: name, help, type, then each value (key order and prom-client's null exemplars aside). */
const lines = (j: Array<{ name: string; help: string; type: unknown; values: Array<{ value: number; labels: object; metricName?: string }> }>): string[] =>
  j.flatMap((m) => [`${m.name} ${m.help} ${String(m.type)}`, ...m.values.map((v) => `${v.metricName ?? m.name}${JSON.stringify(Object.entries(v.labels).sort())} ${v.value}`)]).sort();

t.test('/metrics text and JSON equal prom-client\'s for the same observations', async (t) => {
  const { prom, hot } = both();
  const text = await hot.metrics();
  t.same(blocks(text), blocks(await prom.metrics()), 'same HELP, TYPE and series lines');
  t.match(text, /^dur_seconds_bucket\{route="\/v1\/completions",le="0.01"\} 1$/m, 'cumulative buckets');
  t.match(text, /^dur_seconds_bucket\{route="\/v1\/completions",le="\+Inf"\} 4$/m);
  t.match(text, /^dur_seconds_sum\{route="\/v1\/completions"\} 5.1205$/m);
  t.match(text, /^req_total\{route="\/v1\/completions",outcome="ok"\} 4$/m);
  t.same(lines(await hot.getMetricsAsJSON()), lines(await prom.getMetricsAsJSON()), 'same JSON values');
  t.equal(await hot.getSingleMetricAsString('req_total'), await prom.getSingleMetricAsString('req_total'));
  t.equal(await hot.getSingleMetricAsString('other_total'), await prom.getSingleMetricAsString('other_total'));
  hot.setContentType(Registry.OPENMETRICS_CONTENT_TYPE as never);
  prom.setContentType(Registry.OPENMETRICS_CONTENT_TYPE as never);
  t.match(await hot.metrics(), /^req_total_total\{route="\/v1\/completions",outcome="ok"\} 4$/m, 'OpenMetrics names counters as prom-client does');
});

t.test('workers\' JSON aggregates (cluster mode) as prom-client\'s does', async (t) => {
  const a = both(); const b = both();
  const hot = AggregatorRegistry.aggregate([await a.hot.getMetricsAsJSON(), await b.hot.getMetricsAsJSON()]);
  const prom = AggregatorRegistry.aggregate([await a.prom.getMetricsAsJSON(), await b.prom.getMetricsAsJSON()]);
  const text = await hot.metrics();
  t.same(blocks(text), blocks(await prom.metrics()));
  t.match(text, /^req_total\{route="\/v1\/completions",outcome="ok"\} 8$/m, 'summed over workers');
});

t.test('a name is registered once', async (t) => {
  const r = new HotRegistry();
  new Counter({ name: 'x_total', help: 'x', registers: [r] });
  t.throws(() => new HotCounter({ name: 'x_total', help: 'x', labelNames: ['a'], registers: [r] }), /already been registered/);
  new HotCounter({ name: 'y_total', help: 'y', labelNames: ['a'], registers: [r] });
  t.throws(() => new HotHistogram({ name: 'y_total', help: 'y', labelNames: ['a'], buckets: [1], registers: [r] }), /already been registered/);
});
