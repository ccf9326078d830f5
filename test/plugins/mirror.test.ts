/**
 * mirror against real upstreams: two bundled model servers on loopback (primary and shadow),
 * spoken to through the core's HTTP/2 upstream client.
 */
import t from 'tap';
import type { Test } from 'tap';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { Registry } from 'prom-client';
import mirror from '../../plugins/mirror/index.ts';
import { GatewayError } from '../../core/errors.ts';
import type { GatewayExchange } from '../../core/exchange.ts';
import { GatewayMetrics } from '../../core/metrics.ts';
import { silentLogger } from '../../core/plugin-context.ts';
import { createUpstream } from '../../core/upstream/client.ts';
import type { ManagedUpstream } from '../../core/upstream/client.ts';
import type { UpstreamConfig } from '../../core/config/model.ts';
import type { OutboundRequest, Step, UpstreamClient } from '../../core/types.ts';
import { startModelServer } from '../../model-server/server.ts';
import type { ModelServerHandle, ModelServerOptions } from '../../model-server/server.ts';
import { makeExchange } from '../helpers/exchange.ts';
import { loadStep } from '../helpers/plugin-step.ts';
import { waitFor, within } from '../helpers/h2.ts';

const clientMetrics = new GatewayMetrics(undefined, { defaults: false });

function upstreamClient(name: string, url: string, credential?: string): ManagedUpstream {
  const config: UpstreamConfig = {
    url, protocol: 'h2c',
    pool: { size: 1, pingIntervalMs: 0, warm: false },
    timeouts: { connectMs: 2000, firstByteMs: 10_000, idleMs: 10_000 },
    credential: credential ? { header: 'authorization', prefix: 'Bearer ', secret: { env: 'UNUSED' } } : undefined,
    forwardHeaders: [], maxRetries: 1,
  };
  return createUpstream(name, config, { log: silentLogger, metrics: clientMetrics, readSecret: () => credential ?? '' }, name);
}

interface Rig {
  primary: ModelServerHandle; shadow: ModelServerHandle;
  clients: Map<string, ManagedUpstream>; reg: Registry;
  /** The gateway's store that outlives reloads. */
  store: Map<string, unknown>;
  close(): Promise<void>;
}
async function rig(t: Test, shadowOpts: ModelServerOptions, extra: { shadowKey?: string; clientKey?: string } = {}): Promise<Rig> {
  const primary = await startModelServer({ port: 0, ttftMs: 20, tokenMs: 2, tokens: 8 });
  const shadow = await startModelServer({ port: 0, key: extra.shadowKey, ...shadowOpts });
  const clients = new Map([
    ['primary', upstreamClient('primary', primary.url)],
    ['shadow', upstreamClient('shadow', shadow.url, extra.clientKey)],
  ]);
  const r: Rig = {
    primary, shadow, clients, reg: new Registry(), store: new Map(),
    async close() { for (const c of clients.values()) await c.close(); await primary.close(); await shadow.close(); },
  };
  t.teardown(() => r.close());
  return r;
}

async function makeStep(r: Rig, params: Record<string, unknown>): Promise<Step> {
  return (await loadStep(mirror, { upstream: 'shadow', ...params }, { upstreams: r.clients, metrics: r.reg, sharedStore: r.store })).step;
}
function outbound(ex: GatewayExchange, headers: Record<string, string> = {}): OutboundRequest {
  return { upstream: 'primary', path: '/v1/completions', headers: { 'content-type': 'application/json', 'x-request-id': ex.id, ...headers }, body: Buffer.from(JSON.stringify(ex.body)) };
}
/** Do what the core does for the primary: send, relay to the end (stamping the first byte), done. */
async function runPrimary(r: Rig, step: Step, ex: GatewayExchange, out: OutboundRequest): Promise<void> {
  const res = await r.clients.get('primary')!.send({ path: out.path, headers: { ...out.headers }, body: out.body, signal: ex.signal });
  for await (const _ of res.body) { if (ex.firstByteAt === 0) ex.firstByteAt = performance.now(); }
  step.done!(ex, 'ok');
}
async function value(reg: Registry, name: string, labels: Record<string, string>, suffix = ''): Promise<number> {
  const m = reg.getSingleMetric(name);
  if (!m) return 0;
  const data = await m.get();
  const hit = data.values.find((v) => (v as { metricName?: string }).metricName === (suffix ? name + suffix : (v as { metricName?: string }).metricName)
    && Object.entries(labels).every(([k, x]) => v.labels[k] === x));
  return hit?.value ?? 0;
}
const shadowOutcome = (r: Rig, outcome: string): Promise<number> => value(r.reg, 'ghostgate_mirror_requests_total', { side: 'shadow', upstream: 'shadow', outcome });

t.test('bad params are refused at load', async (t) => {
  const upstreams = new Map<string, UpstreamClient>([['shadow', { name: 'shadow', send: () => Promise.reject(new Error('x')) }]]);
  for (const [params, msg] of [
    [{ upstream: 'nowhere' }, /upstream: unknown upstream "nowhere"/],
    [{ upstream: 'shadow', percent: 101 }, /percent/],
    [{ upstream: 'shadow', percent: -1 }, /percent/],
    [{ upstream: 'shadow', maxConcurrent: 0 }, /maxConcurrent/],
    [{ upstream: 'shadow', timeoutMs: 0 }, /timeoutMs/],
    [{ upstream: 'shadow', extra: 1 }, /unknown property/],
    [{}, /upstream/],
  ] as const) {
    const err = await loadStep(mirror, params, { upstreams }).then(() => undefined, (e: unknown) => e);
    t.ok(err instanceof GatewayError, JSON.stringify(params));
    t.equal((err as GatewayError).code, 'GW_ERR_CONFIG_PLUGIN_PARAMS');
    t.match((err as GatewayError).message, msg);
  }
});

t.test('a 10× slower shadow never delays the primary; it finishes after the primary and is recorded side by side', async (t) => {
  // The shadow's first token is 2 s away: every ordering below holds by a wide margin on a busy
  // machine, and the order is asserted by events (the shadow's token count), not stopwatches.
  const r = await rig(t, { ttftMs: 2000, tokenMs: 20, tokens: 8 }, { shadowKey: 'shadow-key', clientKey: 'shadow-key' });
  const step = await makeStep(r, {});
  const ex = makeExchange({ id: 'mirror-1', body: { model: 'ghost-small', prompt: 'def fib(', stream: true, max_tokens: 8 } });
  const out = outbound(ex, { authorization: 'Bearer client-or-primary-key', 'x-api-key': 'primary-key' });

  const t0 = performance.now();
  step.forwarding!(ex, out);
  const forwardingMs = performance.now() - t0;
  t.ok(forwardingMs < 500, `forwarding returns at once (${forwardingMs.toFixed(2)} ms) although the shadow takes ≥2 s`);

  await runPrimary(r, step, ex, out);
  t.equal(r.shadow.stats().tokensSent, 0, 'the primary completed before the shadow sent its first token');
  t.equal(r.primary.stats().completed, 1);
  t.equal(r.shadow.stats().completed, 0, 'shadow still running when the primary is done');

  await waitFor('shadow outcome', async () => (await shadowOutcome(r, 'ok')) === 1);
  t.equal(r.shadow.stats().completed, 1, 'the shadow ran to completion (a normal primary end does not cancel it)');
  t.equal(r.shadow.stats().aborted, 0);
  const seen = r.shadow.requests()[0]!;
  t.same(seen.body, ex.body, 'the shadow got the final request body');
  t.equal(seen.headers['x-request-id'], 'mirror-1', 'same request id, to correlate');
  t.equal(seen.headers['x-ghostgate-mirror'], '1', 'marked as a mirror copy');
  t.equal(seen.headers.authorization, 'Bearer shadow-key', "the shadow's own credential, never the primary's");
  t.equal(seen.headers['x-api-key'], undefined, 'primary credential headers are stripped');

  const ttfb = (side: string, upstream: string) => value(r.reg, 'ghostgate_mirror_ttfb_seconds', { side, upstream }, '_sum');
  const count = (side: string, upstream: string) => value(r.reg, 'ghostgate_mirror_ttfb_seconds', { side, upstream }, '_count');
  t.equal(await count('primary', 'primary'), 1, 'primary ttfb recorded');
  t.equal(await count('shadow', 'shadow'), 1, 'shadow ttfb recorded');
  t.ok(await ttfb('shadow', 'shadow') > await ttfb('primary', 'primary'), 'the slow shadow shows a higher ttfb than its primary');
  t.ok(await ttfb('shadow', 'shadow') >= 1.99, 'shadow ttfb ≥ its 2 s prefill');
  t.ok(await ttfb('primary', 'primary') < 1, 'primary ttfb well below the shadow\'s 2 s prefill (its own is 20 ms)');
  t.equal(await value(r.reg, 'ghostgate_mirror_requests_total', { side: 'primary', upstream: 'primary', outcome: 'ok' }), 1);
  t.equal(await value(r.reg, 'ghostgate_mirror_duration_seconds', { side: 'shadow', upstream: 'shadow' }, '_count'), 1);
});

t.test('cancelling the primary aborts the mirror stream; the shadow server records the reset', async (t) => {
  const r = await rig(t, { ttftMs: 50, tokenMs: 20, tokens: 200 });
  const step = await makeStep(r, {});
  const ex = makeExchange({ id: 'cancel-me', body: { model: 'ghost-small', prompt: 'x', stream: true } });
  const gotRequest = new Promise((res) => r.shadow.events.once('request', res));
  step.forwarding!(ex, outbound(ex));
  await within('the shadow request', gotRequest);
  await waitFor('the shadow\'s first token (mid-stream)', () => r.shadow.stats().tokensSent >= 1);
  const aborted = new Promise<{ rstCode: number | null; phase: string }>((res) => r.shadow.events.once('abort', res));
  ex.clientGone();
  const rec = await within('the shadow to see the reset', aborted);
  t.equal(rec.rstCode, 8, 'shadow stream reset with CANCEL');
  t.equal(rec.phase, 'streaming');
  step.done!(ex, 'client_cancelled');
  await waitFor('cancelled outcome', async () => (await shadowOutcome(r, 'cancelled')) === 1);
  t.equal(r.shadow.stats().aborted, 1);
  t.equal(r.shadow.stats().completed, 0, 'no wasted shadow inference');
  t.equal(await value(r.reg, 'ghostgate_mirror_requests_total', { side: 'primary', upstream: 'primary', outcome: 'cancelled' }), 1);

  // Superseded primary (ex.cancel) before the shadow even answered.
  // Its first token a minute away (the shadow honours x-ttft-ms): the cancel is surely before it.
  const ex2 = makeExchange({ id: 'superseded', body: { model: 'ghost-small', prompt: 'x', stream: true } });
  const got2 = new Promise((res) => r.shadow.events.once('request', res));
  step.forwarding!(ex2, outbound(ex2, { 'x-ttft-ms': '60000' }));
  await within('the second shadow request', got2);
  const aborted2 = new Promise<{ phase: string }>((res) => r.shadow.events.once('abort', res));
  ex2.cancel('GW_ERR_POLICY_SUPERSEDED');
  t.equal((await within('the shadow to see the second reset', aborted2)).phase, 'before-first-token');
  step.done!(ex2, 'superseded');
  await waitFor('second cancel', async () => (await shadowOutcome(r, 'cancelled')) === 2);
});

t.test('at most maxConcurrent copies in flight; the rest are dropped and counted', async (t) => {
  // Copies that take 2 s: the two admitted are surely still in flight when the reloaded step looks.
  const r = await rig(t, { ttftMs: 2000, tokenMs: 0, tokens: 4 });
  const step = await makeStep(r, { maxConcurrent: 2 });
  const exs = Array.from({ length: 5 }, (_, i) => makeExchange({ id: `c${i}` }));
  for (const ex of exs) step.forwarding!(ex, outbound(ex));
  t.equal(await shadowOutcome(r, 'dropped'), 3, '3 of 5 dropped');
  await waitFor('2 shadow requests', () => r.shadow.stats().requests === 2);
  // A reload creates a new step: the bound is shared, and metrics are not registered twice.
  const reloaded = await makeStep(r, { maxConcurrent: 2 });
  const late = makeExchange({ id: 'late' });
  reloaded.forwarding!(late, outbound(late));
  t.equal(await shadowOutcome(r, 'dropped'), 4, 'the reloaded step sees the copies still in flight');
  for (const ex of exs) step.done!(ex, 'ok');
  await waitFor('both complete', async () => (await shadowOutcome(r, 'ok')) === 2);
  const after = makeExchange({ id: 'after' });
  reloaded.forwarding!(after, outbound(after));
  await waitFor('slot freed', async () => (await shadowOutcome(r, 'ok')) === 3);
  t.equal(r.shadow.stats().requests, 3, 'the shadow never saw the dropped copies');
});

t.test('shadow failures and timeouts never reach the client', async (t) => {
  // A generous timeout here: the shadow's 401 must be what ends the copy (a 100 ms timeout could
  // win the race against a first connection on a busy machine and record 'timeout' instead).
  const r = await rig(t, { ttftMs: 400, tokenMs: 0, tokens: 4 }, { shadowKey: 'needs-a-key' });
  const step = await makeStep(r, { timeoutMs: 10_000 });
  const ex = makeExchange({ id: 'e1' });
  t.doesNotThrow(() => step.forwarding!(ex, outbound(ex)));
  await runPrimary(r, step, ex, outbound(ex));
  t.notOk(ex.signal.aborted, 'the primary is unaffected');
  await waitFor('error outcome', async () => (await shadowOutcome(r, 'error')) === 1);
  t.equal(r.shadow.stats().errors, 1, 'shadow answered 401 (no credential): counted as error');

  // A shadow that dies mid-response (RST_STREAM INTERNAL_ERROR after 2 tokens) is an error, not ok.
  const dying = await rig(t, { ttftMs: 10, tokenMs: 5, tokens: 20 });
  const dyingStep = await makeStep(dying, {});
  const ex3 = makeExchange({ id: 'dies', body: { model: 'ghost-small', prompt: 'x', stream: true } });
  dyingStep.forwarding!(ex3, outbound(ex3, { 'x-fail-after-tokens': '2' }));
  await waitFor('error outcome for the dying shadow', async () => (await shadowOutcome(dying, 'error')) === 1);
  t.equal(await shadowOutcome(dying, 'ok'), 0);
  t.equal(dying.shadow.stats().failedInjected, 1);

  const keyed = await rig(t, { ttftMs: 10_000, tokenMs: 0, tokens: 4 }); // the 100 ms timeout surely ends it
  const slow = await makeStep(keyed, { timeoutMs: 100 });
  const ex2 = makeExchange({ id: 'slow' });
  slow.forwarding!(ex2, outbound(ex2));
  await waitFor('timeout outcome', async () => (await shadowOutcome(keyed, 'timeout')) === 1);
  await waitFor('shadow saw the reset', () => keyed.shadow.stats().aborted === 1);
});

t.test('sampling is deterministic per request id and follows percent', async (t) => {
  let sent = 0;
  const fake: UpstreamClient = {
    name: 'shadow',
    send: async () => { sent++; return { status: 200, headers: {}, body: Readable.from([]), ttfbMs: 0, complete: () => true }; },
  };
  const upstreams = new Map([['shadow', fake]]);
  const step = (await loadStep(mirror, { upstream: 'shadow', percent: 30, maxConcurrent: 10_000 }, { upstreams })).step;
  const chosen = (s: Step) => {
    const picked: string[] = [];
    const before = sent;
    for (let i = 0; i < 2000; i++) {
      const ex = makeExchange({ id: `req-${i}` });
      const n = sent;
      s.forwarding!(ex, { upstream: 'p', path: '/v1/completions', headers: {}, body: Buffer.from('{}') });
      if (sent > n) picked.push(ex.id);
    }
    return { picked, n: sent - before };
  };
  const a = chosen(step);
  t.ok(a.n > 2000 * 0.27 && a.n < 2000 * 0.33, `≈30% mirrored (${a.n}/2000)`);
  const step2 = (await loadStep(mirror, { upstream: 'shadow', percent: 30, maxConcurrent: 10_000 }, { upstreams })).step;
  t.same(chosen(step2).picked, a.picked, 'same ids, same decision');
  const off = (await loadStep(mirror, { upstream: 'shadow', percent: 0 }, { upstreams })).step;
  t.equal(chosen(off).n, 0, 'percent 0 mirrors nothing');
});
