/**
 * rate-limit and supersede with a shared store, step by step, against a scripted store (what the
 * Redis store answers is tested in redis-store.test.ts): who decides, and when the store is asked.
 */
import t from 'tap';
import { Registry } from 'prom-client';
import rateLimit from '../../plugins/rate-limit/index.ts';
import { LEASE_TIMING, nextSize } from '../../plugins/rate-limit/lease.ts';
import supersede from '../../plugins/supersede/index.ts';
import type { LeaseResult, SharedStore, TakeResult } from '../../core/store/types.ts';
import type { LocalReply, OutboundRequest } from '../../core/types.ts';
import { loadStep } from '../helpers/plugin-step.ts';
import { makeExchange } from '../helpers/exchange.ts';

/**
 * A store whose `take` and `lease` answer from queues: a result, 'down' (sync undefined) or
 * 'timeout' (async undefined). A lease with no answer queued grants what it asks for.
 */
function scripted() {
  const answers: Array<TakeResult | 'down' | 'timeout'> = [];
  const takes: Array<{ key: string; force: boolean }> = [];
  const leaseAnswers: Array<LeaseResult | 'down' | 'timeout'> = [];
  const leases: Array<{ key: string; want: number; held: number }> = [];
  const givenBack: Array<{ key: string; n: number }> = [];
  const claims: Array<[string, string]> = [];
  const handlers: Array<(tok: string) => void> = [];
  const soonCalls = { n: 0, hurried: 0 };
  let n = 0;
  const store: SharedStore = {
    take(key, _perMs, _burst, force = false) {
      takes.push({ key, force });
      const a = answers.shift() ?? { taken: true, tokens: 0 };
      if (a === 'down') return undefined;
      return Promise.resolve(a === 'timeout' ? undefined : a);
    },
    lease(key, _perMs, _burst, want, held) {
      leases.push({ key, want, held });
      const a = leaseAnswers.shift() ?? { granted: want, tokens: 100 };
      if (a === 'down') return undefined;
      return Promise.resolve(a === 'timeout' ? undefined : a);
    },
    giveBack(key, _perMs, _burst, n) { givenBack.push({ key, n }); },
    leaseTtlMs: 10_000,
    claim(key, token) { claims.push([key, token]); },
    claimTtlMs: 600_000,
    epoch: 1,
    soon(fn) { soonCalls.n++; setImmediate(fn); },
    hurry() { soonCalls.hurried++; },
    newToken: () => `me ${++n}`,
    onSuperseded(fn) { handlers.push(fn); },
  };
  return { store, soonCalls, answers, takes, leaseAnswers, leases, givenBack, claims, supersededElsewhere: (tok: string) => { for (const h of handlers) h(tok); } };
}

const hit = async (step: { request?: (ex: never) => unknown }, sub: string) =>
  (await step.request!(makeExchange({ claims: { sub } }) as never)) as LocalReply | undefined;
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

t.test('rate-limit with a store (default, exact): the first request waits for a lease; held tokens allow at once; the next lease is sent after the turn, growing', async (t) => {
  const s = scripted();
  // Every lease after the first doubles the size and no answer goes stale, however slow this
  // machine is between turns (the real timings are tested against Redis in redis-store.test.ts).
  const timing = { ...LEASE_TIMING };
  Object.assign(LEASE_TIMING, { growMs: Infinity, idleMs: Infinity });
  t.teardown(() => { Object.assign(LEASE_TIMING, timing); });
  // 1 token per 1000 s (no refill during the test); burst 40: at most 10 held.
  const { step } = await loadStep(rateLimit, { ratePerSecond: 0.001, burst: 40 }, { store: s.store });
  const req = () => step.request!(makeExchange({ claims: { sub: 'erin' } })) as LocalReply | undefined | Promise<LocalReply | undefined>;
  const first = req();
  t.ok(first instanceof Promise, 'nothing held yet: waits for the store');
  t.same(s.leases.map((l) => [l.want, l.held]), [[2, 0]], 'one lease: 1 for this request, 1 to hold');
  t.equal(await first, undefined, 'allowed with a leased token');
  t.equal(req(), undefined, 'the held one: allowed at once, no promise');
  t.equal(s.leases.length, 1, 'held ran out: the next lease is not written in the request\'s turn');
  t.equal(s.soonCalls.n, 1, 'it is handed to the store for the turn\'s one write (soon)');
  await tick();
  t.same(s.leases.map((l) => [l.want, l.held]), [[2, 0], [2, 0]], 'but after it (size 2: it followed the previous lease at once)');
  await tick();
  t.same([req(), req()], [undefined, undefined], 'two held: two requests allowed at once');
  await tick();
  t.same(s.leases.slice(2).map((l) => [l.want, l.held]), [[4, 0]], 'held ran out again: size 4');
  await tick();
  t.same([req(), req(), req()], [undefined, undefined, undefined]);
  await tick();
  t.same(s.leases.slice(3).map((l) => [l.want, l.held]), [[7, 1]], 'below half the size (1 of 4 left): size 8, reporting the 1 still held');
  await tick();
  s.leaseAnswers.push({ granted: 0, tokens: 0.2 }); // the store has nothing left for this subject
  for (let i = 0; i < 8; i++) {
    t.equal(req(), undefined, `held token ${i + 1} of 8`);
    await tick();
  }
  t.equal(s.leases.length, 5, 'one lease sent meanwhile (held below 4), which granted nothing');
  const denied = req() as LocalReply | undefined;
  t.equal(denied?.status, 429, 'nothing held and the store said 0.2 left: denied at once');
  t.equal(denied?.headers?.['retry-after'], '800', 'Retry-After from what is left: (1 - 0.2) tokens at 0.001/s');
  t.equal(s.leases.length, 5, 'without a store call');
  t.same(s.takes, [], 'exact never takes');
});

t.test('rate-limit (exact): concurrent requests with nothing held wait on one lease; a grant that runs out leaves the others waiting on the next', async (t) => {
  const s = scripted();
  const { step } = await loadStep(rateLimit, { ratePerSecond: 0.001, burst: 8 }, { store: s.store });
  s.leaseAnswers.push({ granted: 1, tokens: 5 }, { granted: 2, tokens: 0.5 });
  const three = [0, 1, 2].map(() => step.request!(makeExchange({ claims: { sub: 'fay' } })));
  t.ok(three.every((x) => x instanceof Promise), 'all three wait');
  t.equal(s.leases.length, 1, 'on one lease');
  t.equal(s.soonCalls.hurried, 2, 'the two that found a lease in flight hurry the store (a queued prefetch would go out at once)');
  const out = (await Promise.all(three)) as Array<LocalReply | undefined>;
  t.same(out.map((x) => x?.status), [undefined, undefined, undefined], 'the first on the grant of 1, the other two on the next lease (5 were left)');
  t.same(s.leases.map((l) => l.want), [2, 4], 'which asked for the size (2: demand outran the first) plus the two waiting');
  const last = step.request!(makeExchange({ claims: { sub: 'fay' } })) as LocalReply | undefined;
  t.equal(last?.status, 429, 'then nothing held and 0.5 left: 429 at once');
  t.equal(s.leases.length, 2);
});

t.test('rate-limit with a store, shared: fast: no wait with headroom, wait near the limit, deny from what it said', async (t) => {
  const s = scripted();
  // 1 token per 1000 s: no refill during the test. burst 8 → headroom 2.
  const { step } = await loadStep(rateLimit, { ratePerSecond: 0.001, burst: 8, shared: 'fast' }, { store: s.store });
  s.answers.push({ taken: true, tokens: 7 });
  const first = step.request!(makeExchange({ claims: { sub: 'alice' } }));
  t.ok(first instanceof Promise, 'a subject not seen yet: the step waits for the store');
  t.equal(await first, undefined, 'which took a token');
  t.same(s.takes.at(-1), { key: s.takes[0]!.key, force: false });
  s.answers.push({ taken: true, tokens: 2 }); // meanwhile, other processes took 4
  const fast = step.request!(makeExchange({ claims: { sub: 'alice' } }));
  t.equal(fast, undefined, '7 left, more than 1 + headroom: allowed at once, no promise');
  t.same(s.takes.at(-1)?.force, true, 'and the token is taken in the store without waiting (forced)');
  await tick();
  s.answers.push({ taken: false, tokens: 0.5 });
  const near = step.request!(makeExchange({ claims: { sub: 'alice' } }));
  t.ok(near instanceof Promise, 'the store said 2 left: near the limit, the step waits for the store');
  const denied = (await near) as LocalReply | undefined;
  t.equal(denied?.status, 429, 'the store said no');
  t.equal(denied?.headers?.['retry-after'], '500', 'Retry-After from what is left: (1 - 0.5) tokens at 0.001/s');
  const calls = s.takes.length;
  const again = step.request!(makeExchange({ claims: { sub: 'alice' } })) as LocalReply | undefined;
  t.equal(again?.status, 429, 'below one token left: denied at once');
  t.equal(s.takes.length, calls, 'without asking the store (others can only take tokens)');
  t.ok((await hit(step, 'bob')) === undefined && s.takes.length === calls + 1, 'another subject is asked about');
  t.not(s.takes.at(-1)!.key, s.takes[0]!.key, 'in its own bucket');
});

t.test('rate-limit, shared: fast, burst 1: every allowed request is counted by the store first (no headroom)', async (t) => {
  const s = scripted();
  const { step } = await loadStep(rateLimit, { ratePerSecond: 1000, burst: 1, shared: 'fast' }, { store: s.store });
  for (let i = 0; i < 3; i++) {
    s.answers.push({ taken: true, tokens: 1 });
    const r = step.request!(makeExchange({ claims: { sub: 'carl' } }));
    t.ok(r instanceof Promise, `request ${i}: waits for the store`);
    await r;
  }
  t.same(s.takes.map((x) => x.force), [false, false, false]);
});

t.test('rate-limit: store down or over budget → this process\'s bucket decides (fail open, as without a store)', async (t) => {
  const s = scripted();
  const { step } = await loadStep(rateLimit, { ratePerSecond: 0.001, burst: 2 }, { store: s.store });
  s.leaseAnswers.push('down', 'timeout', 'down');
  const r = [await hit(step, 'carol'), await hit(step, 'carol'), await hit(step, 'carol')];
  t.same(r.map((x) => x?.status), [undefined, undefined, 429], 'the local bucket (burst 2) limits');
  s.leaseAnswers.push('down');
  const sync = step.request!(makeExchange({ claims: { sub: 'dave' } }));
  t.notOk(sync instanceof Promise, 'store down: decided synchronously, no wait at all');
  t.equal(sync, undefined, 'and allowed by dave\'s own bucket');
});

t.test('supersede: claims a key once and holds it; a claim elsewhere cancels its request in flight for the key; it claims again after that, in a new store epoch, or when the claim would lapse', async (t) => {
  const s = scripted();
  const reg = new Registry();
  const { step } = await loadStep(supersede, { keyFrom: { bodyPointer: '/doc' } }, { store: s.store, metrics: reg });
  const out: OutboundRequest = { upstream: 'local', path: '/v1/completions', headers: {}, body: Buffer.from('{}') };
  const req = (sub: string, doc: string) => makeExchange({ claims: { sub }, body: { model: 'm', prompt: 'x', doc } });
  const count = async () => /ghostgate_superseded_total (\d+)/.exec(await reg.getSingleMetricAsString('ghostgate_superseded_total'))?.[1];
  const a = req('alice', 'a.py');
  step.forwarding!(a, out);
  t.equal(s.claims.length, 1, 'a forwarded request claims its key');
  const [key, token] = s.claims[0]!;
  t.match(key, /alice/);
  s.supersededElsewhere('me 999');
  t.notOk(a.signal.aborted, 'an unknown token cancels nothing');
  step.done!(a, 'ok');
  const a2 = req('alice', 'a.py');
  step.forwarding!(a2, out);
  t.equal(s.claims.length, 1, 'the next request for the key claims nothing: this process holds it');
  step.forwarding!(a2, out);
  t.equal(s.claims.length, 1, 'nor does a second attempt of the same request');
  s.supersededElsewhere(token);
  t.ok(a2.signal.aborted, 'a claim elsewhere took the key: the request in flight for it here is cancelled, though it never claimed itself');
  t.equal(a2.signal.reason, 'GW_ERR_POLICY_SUPERSEDED');
  t.equal(await count(), '1');
  s.supersededElsewhere(token);
  t.equal(await count(), '1', 'told twice: counted once');
  step.done!(a2, 'superseded');
  const a3 = req('alice', 'a.py');
  step.forwarding!(a3, out);
  t.equal(s.claims.length, 2, 'the next request claims again (the key is no longer this process\'s)');
  const token3 = s.claims[1]![1];
  t.not(token3, token);
  step.done!(a3, 'ok');
  s.supersededElsewhere(token3);
  t.equal(await count(), '1', 'told of a key with no request in flight here: nothing cancelled, nothing counted');
  const a4 = req('alice', 'a.py');
  step.forwarding!(a4, out);
  t.equal(s.claims.length, 3, 'and claimed again after that');
  const a5 = req('alice', 'a.py');
  step.forwarding!(a5, out);
  t.ok(a4.signal.aborted, 'in one process, the newer request cancels the older at once (no store round trip)');
  t.equal(s.claims.length, 3, 'without a claim: the key is held');
  (s.store as { epoch: number }).epoch = 2; // the store came back up: what it held may be gone
  const a6 = req('alice', 'a.py');
  step.forwarding!(a6, out);
  t.equal(s.claims.length, 4, 'a new store epoch: claimed again');
  (s.store as { claimTtlMs: number }).claimTtlMs = 0; // every claim would lapse at once
  step.forwarding!(req('alice', 'a.py'), out);
  t.equal(s.claims.length, 5, 'a claim half-way to lapsing in the store: renewed');
  (s.store as { claimTtlMs: number }).claimTtlMs = 600_000;
  step.forwarding!(req('bob', 'a.py'), out);
  t.equal(s.claims.length, 6, 'another identity\'s key: its own claim');
});

t.test('supersede: the keys a process holds are bounded by maxEntries (the oldest is forgotten and claimed again at its next request)', async (t) => {
  const s = scripted();
  const { step } = await loadStep(supersede, { keyFrom: { bodyPointer: '/doc' }, maxEntries: 2 }, { store: s.store, metrics: new Registry() });
  const out: OutboundRequest = { upstream: 'local', path: '/v1/completions', headers: {}, body: Buffer.from('{}') };
  const fwd = (doc: string): void => { const ex = makeExchange({ claims: { sub: 'alice' }, body: { model: 'm', prompt: 'x', doc } }); step.forwarding!(ex, out); step.done!(ex, 'ok'); };
  fwd('a'); fwd('b'); fwd('b');
  t.equal(s.claims.length, 2, 'two keys, two claims');
  fwd('c');
  t.equal(s.claims.length, 3);
  fwd('b');
  t.equal(s.claims.length, 3, 'b is still held');
  fwd('a');
  t.equal(s.claims.length, 4, 'a, forgotten to make room for c, is claimed again');
});

t.test('rate-limit lease size (nextSize): doubles when outrun, else fits about targetMs of the recent rate, one step at a time', async (t) => {
  const { growMs, targetMs } = LEASE_TIMING;
  t.equal(growMs, 100);
  t.equal(targetMs, 500);
  t.equal(nextSize(1, 10, false, 0, Infinity), 1, 'a subject\'s first lease: 1');
  t.equal(nextSize(2, 10, true, 0, 400), 4, 'a request found nothing held while a lease was in flight: doubles');
  t.equal(nextSize(2, 10, false, 2, 50), 4, 'the block lasted less than growMs: doubles');
  t.equal(nextSize(1, 10, false, 2, 250), 2, 'a typing user, 2 requests in 250 ms: 2 for the next 500 ms (not one lease per request)');
  t.equal(nextSize(2, 10, false, 2, 500), 2, 'steady at that rate: stays 2');
  t.equal(nextSize(2, 10, false, 20, 200), 4, 'much faster: at most one doubling per lease');
  t.equal(nextSize(8, 10, false, 1, 1200), 4, 'much slower: at most one halving per lease');
  t.equal(nextSize(8, 10, false, 8, 1000), 4, 'half as fast as the target: halves');
  t.equal(nextSize(8, 10, true, 0, 0), 10, 'never above the cap');
  t.equal(nextSize(1, 10, false, 0, 5000), 1, 'never below 1');
});
