/**
 * Unit tests of the deployment choice (core/upstream/deployments.ts): priority, weight, caps,
 * Retry-After, passive outlier ejection with a growing back-off, one probe at a time, and state
 * kept across a reload. Time is passed in (`now`), so nothing here waits.
 */
import t from 'tap';
import type { DeploymentConfig, FailoverConfig } from '../../core/config/model.ts';
import { DeploymentSet, parseRetryAfter } from '../../core/upstream/deployments.ts';

const POLICY: FailoverConfig = { attempts: 3, budgetMs: 30_000, ejection: { consecutiveFailures: 3, errorRate: 0.5, minRequests: 10, windowMs: 10_000, baseMs: 1000, maxMs: 8000 } };
const dep = (upstream: string, o: Partial<DeploymentConfig> = {}): DeploymentConfig => ({ upstream, model: 'm', region: '', weight: 1, priority: 0, maxConcurrent: 0, ...o });
/** A fixed sequence of "random" numbers. */
const seq = (...xs: number[]) => { let i = 0; return () => xs[i++ % xs.length]!; };

t.test('the highest priority with an available deployment is used; lower ones only when it has none', async (t) => {
  const set = new DeploymentSet('m', [dep('backup', { priority: 1 }), dep('a'), dep('b')], POLICY, undefined, seq(0.1, 0.9));
  t.equal(set.pick(0)!.name, 'a', 'weight 1:1, r=0.1 → first of priority 0');
  t.equal(set.pick(0)!.name, 'b', 'r=0.9 → second');
  const a = set.list.find((d) => d.name === 'a')!;
  const b = set.list.find((d) => d.name === 'b')!;
  t.equal(set.pick(a.bit | b.bit)!.name, 'backup', 'both of priority 0 tried → priority 1');
  t.equal(set.pick(a.bit | b.bit | set.list.find((d) => d.name === 'backup')!.bit), undefined, 'all tried → none');
});

t.test('weights split the traffic', async (t) => {
  let x = 0;
  const set = new DeploymentSet('m', [dep('a', { weight: 3 }), dep('b', { weight: 1 })], POLICY, undefined, () => (x = (x + 0.01) % 1));
  const n = { a: 0, b: 0 } as Record<string, number>;
  for (let i = 0; i < 1000; i++) n[set.pick(0)!.name]!++;
  t.ok(n.a! > 700 && n.a! < 800, `about 3:1 (${n.a}:${n.b})`);
});

t.test('a deployment at its cap is skipped until a request on it ends', async (t) => {
  const set = new DeploymentSet('m', [dep('a', { maxConcurrent: 2 }), dep('b', { priority: 1 })], POLICY);
  const a = set.list[0]!;
  set.acquire(a, false); set.acquire(a, false);
  t.equal(set.pick(0)!.name, 'b', 'a full → b');
  set.release(a, 'ok');
  t.equal(set.pick(0)!.name, 'a', 'a has room again');
  set.acquire(a, false);
  const solo = new DeploymentSet('m', [dep('a', { maxConcurrent: 1 })], POLICY);
  solo.acquire(solo.list[0]!, false);
  t.equal(solo.pick(0), undefined, 'its only deployment full → none');
  t.match(solo.why(), /1 at capacity/);
  t.equal(solo.unavailableMs(0), 1000, 'full: try again in 1 s');
});

t.test('Retry-After keeps a deployment out until then; a 429 is not a failure', async (t) => {
  const set = new DeploymentSet('m', [dep('a'), dep('b', { priority: 1 })], POLICY);
  const a = set.list[0]!;
  const now = 1_000_000;
  set.acquire(a, false);
  set.release(a, 'throttled', { retryAfterMs: 5000, failedOver: true }, now);
  t.equal(set.pick(0, now + 4999)!.name, 'b', 'inside Retry-After → b');
  t.equal(set.pick(0, now + 5000)!.name, 'a', 'after it → a again');
  t.equal(a.h.failures, 0, 'not counted as a failure');
  t.equal(a.h.failoversOut, 1);
  t.equal(set.unavailableMs(set.list[1]!.bit, now + 1000), 4000, 'b tried, a waits 4 s more');
});

t.test('consecutive failures eject for a back-off that doubles; one probe at a time lets it back', async (t) => {
  const set = new DeploymentSet('m', [dep('a'), dep('b')], POLICY, undefined, () => 0);
  const a = set.list[0]!;
  let now = 1_000_000;
  const fail = (): void => { set.acquire(a, false); set.release(a, 'fail', {}, now); };
  fail(); fail();
  t.equal(a.h.ejectedUntil, 0, '2 failures: still in');
  fail();
  t.equal(a.h.ejectedUntil, now + 1000, '3 in a row: ejected for baseMs');
  t.equal(set.pick(0, now + 999)!.name, 'b', 'ejected → b');
  t.equal(a.state(now).state, 'ejected');
  now += 1000;
  t.equal(set.pick(0, now)!.name, 'a', 'time up: a may take a probe');
  set.acquire(a, false);
  t.equal(a.state(now).state, 'probing');
  t.equal(set.pick(0, now)!.name, 'b', 'one probe at a time');
  set.release(a, 'fail', {}, now);
  t.equal(a.h.ejectedUntil, now + 2000, 'failed probe: out again for twice as long');
  now += 2000;
  set.acquire(a, false); set.release(a, 'fail', {}, now);
  t.equal(a.h.ejectedUntil, now + 4000, 'and again: 4 s');
  now += 4000;
  set.acquire(a, false); set.release(a, 'fail', {}, now);
  now += 8000;
  set.acquire(a, false); set.release(a, 'fail', {}, now);
  t.equal(a.h.ejectedUntil, now + 8000, 'capped at maxMs');
  now += 8000;
  set.acquire(a, false); set.release(a, 'ok', {}, now);
  t.equal(a.h.ejectedUntil, 0, 'a good probe: back in');
  t.equal(a.state(now).state, 'healthy');
  t.equal(a.h.ejectionsTotal, 5);
  t.equal(set.pick(0, now)!.name, 'a');
  // Healthy for maxMs: the back-off starts again from baseMs.
  now += 8000;
  set.acquire(a, false); set.release(a, 'ok', {}, now);
  fail(); fail(); fail();
  t.equal(a.h.ejectedUntil, now + 1000, 'after a healthy spell, the next ejection is baseMs again');
});

t.test('a probe cancelled by its client lets another probe go', async (t) => {
  const set = new DeploymentSet('m', [dep('a'), dep('b')], POLICY, undefined, () => 0);
  const a = set.list[0]!;
  const now = 1_000_000;
  for (let i = 0; i < 3; i++) { set.acquire(a, false); set.release(a, 'fail', {}, now); }
  set.acquire(a, false);
  t.equal(set.pick(0, now + 1000)!.name, 'b');
  set.release(a, 'neutral', {}, now + 1000);
  t.equal(set.pick(0, now + 1000)!.name, 'a', 'probe again');
});

t.test('an error rate over the threshold ejects, even without failures in a row', async (t) => {
  const set = new DeploymentSet('m', [dep('a'), dep('b')], { ...POLICY, ejection: { ...POLICY.ejection, consecutiveFailures: 0 } });
  const a = set.list[0]!;
  const now = 1_000_000;
  for (let i = 0; i < 9; i++) { set.acquire(a, false); set.release(a, i % 2 === 0 ? 'fail' : 'ok', {}, now); }
  t.equal(a.h.ejectedUntil, 0, '5 of 9: under minRequests');
  set.acquire(a, false); set.release(a, 'ok', {}, now);
  set.acquire(a, false); set.release(a, 'fail', {}, now);
  t.ok(a.h.ejectedUntil > now, '6 of 11 ≥ 50%: ejected');
});

t.test('a model with one deployment is never ejected', async (t) => {
  const set = new DeploymentSet('m', [dep('a')], POLICY);
  const a = set.list[0]!;
  for (let i = 0; i < 10; i++) { set.acquire(a, false); set.release(a, 'fail'); }
  t.equal(a.h.ejectedUntil, 0);
  t.equal(set.pick(0)!.name, 'a');
});

t.test('all ejected: none, and how long until one is back', async (t) => {
  const set = new DeploymentSet('m', [dep('a'), dep('b')], POLICY);
  const now = 1_000_000;
  for (const d of set.list) for (let i = 0; i < 3; i++) { set.acquire(d, false); set.release(d, 'fail', {}, now); }
  t.equal(set.pick(0, now + 10), undefined);
  t.equal(set.unavailableMs(0, now + 10), 990);
  t.match(set.why(now + 10), /2 ejected/);
});

t.test('a reload keeps the state of deployments that stay; requests in flight release it in the new runtime too', async (t) => {
  const old = new DeploymentSet('m', [dep('a', { maxConcurrent: 1 }), dep('b')], POLICY);
  const a0 = old.list[0]!;
  old.acquire(a0, false);
  for (let i = 0; i < 3; i++) { old.acquire(old.list[1]!, false); old.release(old.list[1]!, 'fail', {}, 1_000_000); }
  const next = new DeploymentSet('m', [dep('a', { maxConcurrent: 1 }), dep('b'), dep('c')], POLICY, old);
  const a1 = next.list[0]!;
  t.equal(a1.h.inflight, 1, 'in flight carried over');
  t.ok(next.list[1]!.h.ejectedUntil > 0, 'ejection carried over');
  t.equal(next.pick(next.list[1]!.bit, 1_000_000)!.name, 'c', 'a full, b ejected → c');
  old.release(a0, 'ok');
  t.equal(a1.h.inflight, 0, 'the old request released it in the new runtime');
  const discarded = new DeploymentSet('m', [dep('a', { maxConcurrent: 1 })], POLICY, next);
  t.equal(discarded.list[0]!.h, a1.h, 'one health object per deployment, whichever runtime');
});

t.test('deployments of one upstream with different model names are told apart', async (t) => {
  const set = new DeploymentSet('m', [dep('a', { model: 'x' }), dep('a', { model: 'y' }), dep('b')], POLICY);
  t.same(set.list.map((d) => d.name), ['a/x', 'a/y', 'b']);
});

t.test('Retry-After: seconds or an HTTP date', async (t) => {
  const now = Date.parse('2026-12-02T06:00:00Z');
  t.equal(parseRetryAfter('7', now), 7000);
  t.equal(parseRetryAfter('Wed, 02 Dec 2026 06:00:30 GMT', now), 30_000);
  t.equal(parseRetryAfter('soon', now), undefined);
  t.equal(parseRetryAfter(undefined, now), undefined);
});
