/** /metrics: the per-request metrics are exposed in Prometheus format, with the right values. */
import http2 from 'node:http2';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, open, post, until } from '../helpers/h2.ts';

t.test('requests, latency and TTFB histograms, cancel propagation, sessions', async (t) => {
  const g = await startGateway(t, { modelArgs: ['--ttft-ms', '30', '--token-ms', '2', '--tokens', '4'] });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  for (let i = 0; i < 5; i++) await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true });
  // The one to cancel waits a minute for its first token, so it is surely still before its
  // first byte whenever the wait below sees it at the model (under load that may take seconds).
  const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { 'x-ttft-ms': '60000' });
  st.on('error', () => {});
  await until(async () => (await g.modelStats()).inFlight === 1);
  st.close(http2.constants.NGHTTP2_CANCEL);
  await until(() => g.gw.runtime.inflight === 0);
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  const value = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
  t.equal(value(/^ghostgate_requests_total\{route="\/v1\/completions",model="ghost-small",upstream="local",outcome="ok",status="200",arm=""\} (\d+)$/m), 5);
  t.equal(value(/^ghostgate_requests_total\{[^}]*outcome="client_cancelled"[^}]*\} (\d+)$/m), 1);
  t.match(text, /# TYPE ghostgate_time_to_first_byte_seconds histogram/);
  const inf = value(/^ghostgate_time_to_first_byte_seconds_bucket\{[^}]*le="\+Inf"\} (\d+)$/m);
  t.equal(inf, 5, 'TTFB observed for the 5 completed streams');
  t.equal(value(/^ghostgate_time_to_first_byte_seconds_count\{[^}]*\} (\d+)$/m), inf, '+Inf bucket equals _count');
  const fast = value(/^ghostgate_time_to_first_byte_seconds_bucket\{[^}]*le="0.025"\} (\d+)$/m);
  const slow = value(/^ghostgate_time_to_first_byte_seconds_bucket\{[^}]*le="0.1"\} (\d+)$/m);
  t.ok(fast <= slow && slow <= inf, 'buckets are cumulative');
  t.equal(fast, 0, 'no TTFB below the model\'s 30 ms time to first token');
  t.ok(value(/^ghostgate_time_to_first_byte_seconds_sum\{[^}]*\} ([\d.e-]+)$/m) >= 5 * 0.03, 'sum in seconds');
  t.equal(value(/^ghostgate_cancel_propagation_seconds_count\{phase="before_first_byte"\} (\d+)$/m), 1, 'the cancel is timed');
  t.equal(value(/^ghostgate_upstream_time_to_first_byte_seconds_count\{upstream="local"\} (\d+)$/m), 6);
  t.equal(value(/^ghostgate_client_connections_total\{protocol="h2"\} (\d+)$/m), 1, 'one client session for all of it');
});
