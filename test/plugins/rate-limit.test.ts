import t from 'tap';
import { performance } from 'node:perf_hooks';
import rateLimit from '../../plugins/rate-limit/index.ts';
import { loadStep } from '../helpers/plugin-step.ts';
import { makeExchange } from '../helpers/exchange.ts';
import { GatewayExchange } from '../../core/exchange.ts';
import type { LocalReply, Step } from '../../core/types.ts';

const hit = async (step: Step, sub?: string, ip = '10.0.0.1') => {
  const ex = makeExchange(sub === undefined ? {} : { claims: { sub } });
  (ex.facts.request as { ip: string }).ip = ip;
  return (await step.request!(ex)) as LocalReply | undefined;
};
/**
 * Stop the clock the plugin reads (performance.now) for the rest of test `t`, and move it by hand:
 * refills are then exact however busy the machine is (a sleep(250) that overran 400 ms refilled
 * two tokens instead of one).
 */
function stopClock(t: { teardown(fn: () => void): void }): { advance(ms: number): void } {
  const real = Object.getOwnPropertyDescriptor(performance, 'now');
  let now = performance.now();
  Object.defineProperty(performance, 'now', { configurable: true, writable: true, value: () => now });
  t.teardown(() => {
    if (real) Object.defineProperty(performance, 'now', real);
    else delete (performance as { now?: unknown }).now;
  });
  return { advance(ms) { now += ms; } };
}

/** Total buckets held in a shared store (all bucket sets, subjects and IPs). */
const bucketCount = (store: Map<string, unknown>) => {
  let n = 0;
  for (const sets of store.values()) {
    for (const set of (sets as Map<string, { bySubject: Map<string, unknown>; byIp: Map<string, unknown> }>).values()) n += set.bySubject.size + set.byIp.size;
  }
  return n;
};

t.test('burst, then 429 with Retry-After, then refill over time', async (t) => {
  const clock = stopClock(t);
  const { step } = await loadStep(rateLimit, { ratePerSecond: 5, burst: 2 });
  t.equal(await hit(step, 'alice'), undefined);
  t.equal(await hit(step, 'alice'), undefined);
  const limited = await hit(step, 'alice');
  t.same(limited, {
    status: 429,
    headers: { 'retry-after': '1' },
    body: { error: { code: 'GW_ERR_POLICY_RATE_LIMITED', message: 'Rate limit exceeded; retry after 1 s', retry_after: 1 } },
  });
  t.equal(await hit(step, 'bob'), undefined, 'another subject has its own bucket');
  clock.advance(250); // 5/s: 1 token back after 200 ms, 2 only after 400 ms
  t.equal(await hit(step, 'alice'), undefined, 'refilled');
  t.equal((await hit(step, 'alice'))?.status, 429, 'but only what was refilled');
  clock.advance(700); // more than a burst's worth of time: still capped at burst
  t.equal(await hit(step, 'alice'), undefined);
  t.equal(await hit(step, 'alice'), undefined);
  t.equal((await hit(step, 'alice'))?.status, 429, 'refill is capped at burst');
});

t.test('Retry-After is whole seconds until one token is back (at least 1)', async (t) => {
  const { step } = await loadStep(rateLimit, { ratePerSecond: 0.25, burst: 1, status: 503 });
  t.equal(await hit(step, 's'), undefined);
  const r = await hit(step, 's');
  t.equal(r?.status, 503, 'configured status');
  t.equal(r?.headers?.['retry-after'], '4');
  t.equal((r?.body.error as { code: string }).code, 'GW_ERR_POLICY_RATE_LIMITED');
});

t.test('no subject: falls back to the client IP, apart from subjects', async (t) => {
  const { step } = await loadStep(rateLimit, { ratePerSecond: 0.001, burst: 1 });
  t.equal(await hit(step, undefined, '10.0.0.9'), undefined);
  t.equal((await hit(step, undefined, '10.0.0.9'))?.status, 429, 'same IP limited');
  t.equal(await hit(step, undefined, '10.0.0.8'), undefined, 'other IP');
  t.equal(await hit(step, '10.0.0.9', '10.0.0.9'), undefined, 'a subject equal to an IP string is a different bucket');
  t.equal(await hit(step, '', '10.0.0.7'), undefined, 'empty subject uses the IP');
  t.equal((await hit(step, '', '10.0.0.7'))?.status, 429);
});

t.test('key: any fact path, deep or not', async (t) => {
  const { step } = await loadStep(rateLimit, { key: 'request.headers.x-team', ratePerSecond: 0.001, burst: 1 });
  const req = (team: string | undefined, ip: string) => {
    const ex = new GatewayExchange({
      id: 'r', method: 'POST', path: '/v1/completions', protocol: 'h2', ip, headers: team ? { 'x-team': team } : {},
      client: { editor: undefined, editorVersion: undefined, plugin: undefined, version: undefined }, body: {},
      route: { model: 'm', upstream: 'u', upstreamModel: 'm', arms: {} },
    });
    return step.request!(ex) as LocalReply | undefined;
  };
  t.equal(req('red', '1.1.1.1'), undefined);
  t.equal(req('red', '2.2.2.2')?.status, 429, 'same team from another IP is limited');
  t.equal(req('blue', '1.1.1.1'), undefined);
  t.equal(req(undefined, '3.3.3.3'), undefined, 'no header: by IP');
  const deep = (await loadStep(rateLimit, { key: 'claims.org.id', ratePerSecond: 0.001, burst: 1 })).step;
  const org = (id: unknown) => deep.request!(makeExchange({ claims: { org: { id } } })) as LocalReply | undefined;
  t.equal(org(42), undefined, 'numeric subject');
  t.equal(org(42)?.status, 429);
});

t.test('buckets survive a reload (a second create with the same shared store)', async (t) => {
  const sharedStore = new Map<string, unknown>();
  const closers: Array<() => void | Promise<void>> = [];
  const limit = { ratePerSecond: 0.001, burst: 2 };
  const first = await loadStep(rateLimit, limit, { sharedStore, closers, where: 'p.yaml:4' });
  t.equal(await hit(first.step, 'carol'), undefined);
  t.equal(await hit(first.step, 'carol'), undefined);
  // The reload builds the new step first, then retires the old one. The step moved down a line.
  const second = await loadStep(rateLimit, limit, { sharedStore, closers, where: 'p.yaml:9' });
  for (const c of closers.splice(0, 1)) await c();
  t.equal((await hit(second.step, 'carol'))?.status, 429, 'the reloaded step sees the spent bucket');

  const other = await loadStep(rateLimit, { ratePerSecond: 0.001, burst: 3 }, { sharedStore, closers });
  t.equal(await hit(other.step, 'carol'), undefined, 'a different limit has its own buckets');
  const named = await loadStep(rateLimit, { ratePerSecond: 0.001, burst: 1, bucketSet: 'team' }, { sharedStore, closers });
  t.equal(await hit(named.step, 'carol'), undefined, 'a named bucket set has its own buckets');
  const sameName = await loadStep(rateLimit, { ratePerSecond: 0.002, burst: 1, bucketSet: 'team' }, { sharedStore, closers });
  t.equal((await hit(sameName.step, 'carol'))?.status, 429, 'steps naming the same set share it');

  for (const c of closers.splice(0)) await c(); // a reload that drops every rate-limit step
  t.equal(bucketCount(sharedStore), 0, 'bucket sets no step uses are freed');
  const fresh = await loadStep(rateLimit, limit, { sharedStore, closers });
  t.equal(await hit(fresh.step, 'carol'), undefined, 'so a later step starts with full buckets');
  for (const c of closers.splice(0)) await c();
});

t.test('memory is bounded: refilled buckets are dropped, and maxKeys is a hard cap', async (t) => {
  const clock = stopClock(t);
  const sharedStore = new Map<string, unknown>();
  const fast = await loadStep(rateLimit, { ratePerSecond: 1000, burst: 1, maxKeys: 2 }, { sharedStore, where: 'a' });
  await hit(fast.step, 's1');
  await hit(fast.step, 's2');
  t.equal(bucketCount(sharedStore), 2);
  clock.advance(20); // both buckets full again
  await hit(fast.step, 's3');
  t.equal(bucketCount(sharedStore), 1, 'refilled buckets swept when making room');

  const store2 = new Map<string, unknown>();
  const slow = await loadStep(rateLimit, { ratePerSecond: 0.001, burst: 1, maxKeys: 3 }, { sharedStore: store2, where: 'b' });
  for (let i = 0; i < 10; i++) await hit(slow.step, `s${i}`);
  t.equal(bucketCount(store2), 3, 'never more than maxKeys');
  t.equal((await hit(slow.step, 's9'))?.status, 429, 'the newest buckets are kept');
});

t.test('bad params are refused at load with GW_ERR_CONFIG_PLUGIN_PARAMS', async (t) => {
  const bad: unknown[] = [
    {},
    { burst: 1 },
    { ratePerSecond: 1 },
    { ratePerSecond: 0, burst: 1 },
    { ratePerSecond: -1, burst: 1 },
    { ratePerSecond: 1, burst: 0 },
    { ratePerSecond: 1, burst: 1.5 },
    { ratePerSecond: '1', burst: 1 },
    { ratePerSecond: 1, burst: 1, status: 200 },
    { ratePerSecond: 1, burst: 1, key: 'user.sub' },
    { ratePerSecond: 1, burst: 1, key: 'claims' },
    { ratePerSecond: 1, burst: 1, key: 'claims..sub' },
    { ratePerSecond: 1, burst: 1, key: 'claims.__proto__' },
    { ratePerSecond: 1, burst: 1, extra: true },
  ];
  for (const params of bad) {
    await t.rejects(loadStep(rateLimit, params), { code: 'GW_ERR_CONFIG_PLUGIN_PARAMS' }, JSON.stringify(params));
  }
});
