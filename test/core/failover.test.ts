/**
 * Logical models over deployments, end to end (#9.1): real model-server processes as deployments,
 * a real gateway, real HTTP/2. A request that fails before its first byte reached the client is
 * retried on the next deployment; Retry-After and caps steer traffic; all deployments down gives a
 * fast coded 503 with Retry-After; a client cancel stops the retries.
 */
import http2 from 'node:http2';
import t from 'tap';
import type { Test } from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import type { TestGateway } from '../helpers/gateway.ts';
import { collect, connect, open, post, waitFor } from '../helpers/h2.ts';
import { startRawH2 } from '../helpers/raw-h2-upstream.ts';
import { spawnModelServer } from '../model-server/fixtures/spawn.ts';
import type { SpawnedModelServer } from '../model-server/fixtures/spawn.ts';

const { NGHTTP2_CANCEL } = http2.constants;
const BODY = { model: 'code', prompt: 'x', stream: true };
const FAST = ['--ttft-ms', '5', '--token-ms', '1', '--tokens', '4'];

async function model(t: Test, args: string[] = []): Promise<SpawnedModelServer> {
  const m = await spawnModelServer([...FAST, ...args]);
  t.teardown(() => m.stop());
  return m;
}
const upstream = (name: string, url: string, timeouts = '{ connectMs: 1000, firstByteMs: 10000 }'): string =>
  `  ${name}:\n    url: ${url}\n    protocol: h2c\n    pool: { size: 1 }\n    timeouts: ${timeouts}\n    forwardHeaders: [user-agent, x-ttft-ms]`;
/** gateway.config.yaml upstreams + a model `code` over the given deployments. */
function config(ups: string[], deployments: string, failover = ''): string {
  return ['upstreams:', ...ups, 'models:', '  code:', '    deployments:', deployments, failover, '  ghost-small: { upstream: a }'].filter(Boolean).join('\n');
}
const requestsAt = async (m: SpawnedModelServer): Promise<string[]> =>
  ((await (await fetch(`${m.url}/_requests`)).json()) as Array<{ body: { model?: string } }>).map((r) => r.body.model ?? '');
async function deployments(g: TestGateway): Promise<Record<string, Record<string, unknown>>> {
  const u = (await (await fetch(`${g.adminUrl}/-/upstreams`)).json()) as Record<string, { deployments?: Array<Record<string, unknown>> }>;
  const out: Record<string, Record<string, unknown>> = {};
  for (const v of Object.values(u)) for (const d of v.deployments ?? []) out[d.name as string] = d;
  return out;
}

t.test('a deployment answering 429 with Retry-After: the other serves until then, with the model name it expects', async (t) => {
  const a = await model(t, ['--fail-status', '429', '--retry-after', '2']);
  const b = await model(t);
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => config(
    [upstream('a', a.url), upstream('b', b.url)],
    '      - { upstream: a, model: code-a }\n      - { upstream: b, model: code-b, priority: 1 }') });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', BODY);
  t.equal(r.status, 200, r.text);
  t.equal(r.events.at(-1), '[DONE]');
  t.same(await requestsAt(a), ['code-a'], 'tried a first (its model name)');
  t.same(await requestsAt(b), ['code-b'], 'then b, with its own model name and the same request');
  for (let i = 0; i < 5; i++) t.equal((await post(s, '/v1/completions', BODY)).status, 200);
  t.equal((await requestsAt(a)).length, 1, 'a is not sent more inside its Retry-After');
  const st = await deployments(g);
  t.equal(st.a!.state, 'retry-after');
  t.equal(st.a!.failoversOut, 1);
  t.equal(st.b!.failoversIn, 1);
  // a recovers; once its Retry-After is over it is preferred again.
  await fetch(`${a.url}/_fail?status=0`, { method: 'POST' });
  await waitFor('a\'s Retry-After to end', async () => (await deployments(g)).a!.state === 'healthy', 15_000);
  t.equal((await post(s, '/v1/completions', BODY)).status, 200);
  t.equal((await requestsAt(a)).length, 2, 'a serves again');
  const metrics = await (await fetch(`${g.adminUrl}/metrics`)).text();
  t.match(metrics, /ghostgate_deployment_failovers_total\{model="code",deployment="a",direction="out"\} 1/);
  t.match(metrics, /ghostgate_deployment_failovers_total\{model="code",deployment="b",direction="in"\} 1/);
});

t.test('a deployment at its cap: the next request goes to the other', async (t) => {
  const a = await model(t);
  const b = await model(t);
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => config(
    [upstream('a', a.url), upstream('b', b.url)],
    '      - { upstream: a, maxConcurrent: 1 }\n      - { upstream: b, priority: 1 }') });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  // One long request holds a's only slot.
  const held = open(s, '/v1/completions', BODY, { 'x-ttft-ms': '60000' });
  const heldDone = collect(held);
  await waitFor('the long request to reach a', async () => (await requestsAt(a)).length === 1, 15_000);
  const st = await deployments(g);
  t.equal(st.a!.inflight, 1);
  t.equal(st.a!.cap, 1);
  const r = await post(s, '/v1/completions', BODY);
  t.equal(r.status, 200, r.text);
  t.equal((await requestsAt(b)).length, 1, 'served by b');
  t.equal((await requestsAt(a)).length, 1, 'a got nothing more');
  t.equal((await deployments(g)).b!.failoversIn, 0, 'not a failover: a was never tried');
  held.close(NGHTTP2_CANCEL);
  await heldDone;
  await waitFor('a\'s slot to free', async () => (await deployments(g)).a!.inflight === 0, 15_000);
  t.equal((await post(s, '/v1/completions', BODY)).status, 200);
  t.equal((await requestsAt(a)).length, 2, 'a serves again once its slot is free');
});

t.test('every deployment down: the first request fails over and answers the last error; once ejected, a fast coded 503 with Retry-After', async (t) => {
  // Nothing listens on these ports.
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => config(
    [upstream('a', 'http://127.0.0.1:9'), upstream('b', 'http://127.0.0.1:7')],
    '      - { upstream: a }\n      - { upstream: b }',
    '    failover: { ejection: { consecutiveFailures: 1, baseMs: 30000, maxMs: 60000 } }') });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const first = await post(s, '/v1/completions', BODY);
  t.equal(first.status, 502, first.text);
  t.equal(JSON.parse(first.text).error.code, 'GW_ERR_UPSTREAM_CONNECT');
  const st = await deployments(g);
  t.equal(st.a!.state, 'ejected', 'a tried and ejected');
  t.equal(st.b!.state, 'ejected', 'b tried and ejected');
  const t0 = performance.now();
  const r = await post(s, '/v1/completions', BODY);
  const ms = performance.now() - t0;
  t.equal(r.status, 503, r.text);
  t.equal(JSON.parse(r.text).error.code, 'GW_ERR_UPSTREAM_NO_DEPLOYMENT');
  t.match(JSON.parse(r.text).error.message, /2 ejected/);
  const ra = Number(r.headers['retry-after']);
  t.ok(ra >= 1 && ra <= 30, `Retry-After: seconds until one is back (${ra})`);
  t.ok(ms < 5000, `answered at once, not after a connect budget (${ms.toFixed(0)} ms)`);
});

t.test('a client cancel during the retries stops them: no further deployment sees the request', async (t) => {
  const a = await model(t, ['--fail-status', '503']);
  let bStreams = 0;
  const b = await startRawH2(t, { onRequest: () => { bStreams++; } }); // b holds every request
  const c = await model(t);
  const g = await startGateway(t, { noModel: true, upstreamsYaml: () => config(
    [upstream('a', a.url), upstream('b', b.url), upstream('c', c.url)],
    '      - { upstream: a }\n      - { upstream: b, priority: 1 }\n      - { upstream: c, priority: 2 }') });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const st = open(s, '/v1/completions', BODY);
  const done = collect(st);
  await waitFor('the request to fail over from a to b', () => bStreams === 1, 15_000);
  st.close(NGHTTP2_CANCEL);
  await done;
  await waitFor('b to get RST_STREAM(CANCEL)', () => b.conns.some((x) => x.resets.some((r) => r.code === NGHTTP2_CANCEL)), 15_000);
  await waitFor('the gateway to finish the request', async () => /^ghostgate_inflight_requests 0$/m.test(await (await fetch(`${g.adminUrl}/metrics`)).text()), 15_000);
  t.equal((await requestsAt(a)).length, 1, 'a: one attempt (503)');
  t.equal(bStreams, 1, 'b: one attempt, cancelled');
  t.same(await requestsAt(c), [], 'c never saw it');
  const d = await deployments(g);
  t.equal(d.b!.inflight, 0, 'b\'s slot released');
  t.equal(d.b!.failures, 0, 'a cancel is not b\'s failure');
});

t.test('steps on top: model-rewrite to a model with deployments fails over; a step that routes to an upstream pins it', async (t) => {
  const a = await model(t, ['--fail-status', '503']);
  const b = await model(t);
  const g = await startGateway(t, {
    noModel: true,
    upstreamsYaml: () => config([upstream('a', a.url), upstream('b', b.url)], '      - { upstream: a }\n      - { upstream: b, priority: 1 }'),
    policies: {
      'p.yaml': 'name: p\nsteps:\n  - use: model-rewrite\n    params:\n      map:\n        old-code: code\n        pinned: { upstream: a, model: code }\n',
    },
  });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', { ...BODY, model: 'old-code' });
  t.equal(r.status, 200, 'rewritten to code: a answered 503, b served');
  t.equal((await requestsAt(b)).length, 1);
  const pinned = await post(s, '/v1/completions', { ...BODY, model: 'pinned' });
  t.equal(pinned.status, 503, 'pinned to upstream a: its 503 is relayed, no failover');
  t.equal((await requestsAt(b)).length, 1, 'b not tried');
  t.equal((await requestsAt(a)).length, 2);
});

t.test('a forwarding step (mirror) sees the request once, not once per attempt', async (t) => {
  const a = await model(t, ['--fail-status', '503']);
  const b = await model(t);
  const shadow = await model(t);
  const g = await startGateway(t, {
    noModel: true,
    upstreamsYaml: () => config([upstream('a', a.url), upstream('b', b.url), upstream('shadow', shadow.url)], '      - { upstream: a }\n      - { upstream: b, priority: 1 }'),
    policies: { 'p.yaml': 'name: p\nsteps:\n  - use: mirror\n    params: { upstream: shadow, percent: 100 }\n' },
  });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', BODY);
  t.equal(r.status, 200, 'a answered 503, b served');
  t.equal((await requestsAt(a)).length, 1);
  // Copies leave when an attempt is made, and both attempts were made before b's response: once
  // a copy has arrived and the shadow has nothing in flight, every copy has arrived.
  const shadowStats = async (): Promise<{ inFlight: number; requests: number }> => (await fetch(`${shadow.url}/_stats`)).json() as never;
  await waitFor('the shadow copies to be answered', async () => { const st = await shadowStats(); return st.requests >= 1 && st.inFlight === 0; }, 15_000);
  t.equal((await requestsAt(shadow)).length, 1, 'one copy for two attempts');
});
