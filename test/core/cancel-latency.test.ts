/**
 * `ghostgate_cancel_propagation_seconds` ("client reset noticed to upstream stream reset sent",
 * #8.4) times the cancel up to the upstream reset, not only to the moment the gateway noticed.
 * An extra abort listener on the upstream request that takes 30 ms (standing in for a slow
 * reset) must show in every observation: recorded before the upstream's reset, the histogram
 * would hold ~0 ms values. A second gateway without it checks the plain values: above 0,
 * bounded, and sum and count consistent.
 */
import http2 from 'node:http2';
import t from 'tap';
import type { Test } from 'tap';
import type { CancelSignal } from '../../core/types.ts';
import { startGateway } from '../helpers/gateway.ts';
import type { TestGateway } from '../helpers/gateway.ts';
import { collect, connect, firstData, open, waitFor } from '../helpers/h2.ts';

const SLOW_RESET_MS = 30;
const N = 4;

interface Series { count: number; sum: number; buckets: Map<number, number> }

async function histogram(g: TestGateway, phase: string): Promise<Series> {
  const m = await g.gw.metrics.cancelPropagation.get();
  const s: Series = { count: 0, sum: 0, buckets: new Map() };
  for (const v of m.values) {
    if (v.labels.phase !== phase) continue;
    if (v.metricName?.endsWith('_count')) s.count = v.value;
    else if (v.metricName?.endsWith('_sum')) s.sum = v.value;
    else if (v.metricName?.endsWith('_bucket')) {
      const le = (v.labels as { le?: string | number }).le;
      s.buckets.set(le === '+Inf' ? Infinity : Number(le), v.value);
    }
  }
  return s;
}

/** N cancels before the first token and N mid-stream, each once the model has the request. */
async function cancelBoth(t: Test, g: TestGateway): Promise<void> {
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  for (let i = 0; i < N; i++) {
    const id = `pre-${i}`;
    const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { 'x-request-id': id, 'x-ttft-ms': '20000' });
    const done = collect(st);
    await waitFor('the model to have the request', async () => (await g.modelRequests()).some((r) => r.id === id));
    st.close(http2.constants.NGHTTP2_CANCEL);
    await done;
  }
  for (let i = 0; i < N; i++) {
    const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { 'x-ttft-ms': '0', 'x-token-ms': '200', 'x-tokens': '100' });
    const done = collect(st);
    await firstData(st);
    st.close(http2.constants.NGHTTP2_CANCEL);
    await done;
  }
  await waitFor('every cancel timed', async () => (await histogram(g, 'before_first_byte')).count === N && (await histogram(g, 'streaming')).count === N);
}

t.test('the histogram includes the time to the upstream reset', async (t) => {
  const g = await startGateway(t);
  const up = g.gw.runtime.upstreams.get('local')!;
  const send = up.send.bind(up);
  // Another abort listener on the upstream request, after the upstream client's own: 30 ms of work.
  (up as { send: typeof send }).send = (opts) => {
    const p = send(opts);
    (opts.signal as CancelSignal).addEventListener('abort', () => { const end = performance.now() + SLOW_RESET_MS; while (performance.now() < end) { /* a slow reset */ } });
    return p;
  };
  await cancelBoth(t, g);
  for (const phase of ['before_first_byte', 'streaming']) {
    const h = await histogram(g, phase);
    t.equal(h.count, N, `${phase}: every cancel counted once`);
    t.equal(h.buckets.get(0.01), 0, `${phase}: no value under 10 ms (each includes the ${SLOW_RESET_MS} ms listener)`);
    t.ok(h.sum >= N * SLOW_RESET_MS / 1000, `${phase}: sum ${h.sum.toFixed(4)} s ≥ ${N} × ${SLOW_RESET_MS} ms`);
    t.ok(h.sum < N * 5, `${phase}: bounded (under 5 s each)`);
  }
});

t.test('plain values: above 0, bounded, sum consistent with count', async (t) => {
  const g = await startGateway(t);
  await cancelBoth(t, g);
  for (const phase of ['before_first_byte', 'streaming']) {
    const h = await histogram(g, phase);
    t.equal(h.count, N, `${phase}: count`);
    t.equal(h.buckets.get(Infinity), N, `${phase}: +Inf bucket equals the count`);
    t.ok(h.sum > 0, `${phase}: sum > 0`);
    t.ok(h.sum / h.count < 1, `${phase}: mean ${(h.sum / h.count * 1000).toFixed(3)} ms under 1 s`);
  }
});
