import t from 'tap';
import type { Test } from 'tap';
import abTest from '../../plugins/ab-test/index.ts';
import { compileCondition } from '../../core/conditions.ts';
import { GatewayError } from '../../core/errors.ts';
import type { Step, UpstreamClient } from '../../core/types.ts';
import { makeExchange } from '../helpers/exchange.ts';
import { loadStep } from '../helpers/plugin-step.ts';

const fakeClient = (name: string): UpstreamClient => ({ name, send: () => Promise.reject(new Error('not used')) });
const upstreams = new Map(['local', 'canary'].map((n) => [n, fakeClient(n)]));

async function make(params: unknown): Promise<Step> {
  return (await loadStep(abTest, params, { upstreams })).step;
}
function run(step: Step, sub: string | undefined, init: Parameters<typeof makeExchange>[0] = {}) {
  const ex = makeExchange({ ...init, claims: sub === undefined ? undefined : { sub } });
  step.request!(ex);
  return ex;
}
async function rejects(t: Test, params: unknown, path: RegExp): Promise<void> {
  const err = await loadStep(abTest, params, { upstreams }).then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof GatewayError, 'a GatewayError');
  t.equal((err as GatewayError).code, 'GW_ERR_CONFIG_PLUGIN_PARAMS');
  t.match((err as GatewayError).message, path);
}

const twoArms = {
  experiment: 'fim-prompt',
  arms: [
    { name: 'control', weight: 50 },
    { name: 'long-ctx', weight: 50, upstream: 'canary', model: 'ghost-long-v2', set: { '/max_tokens': 64, '/extra/ctx': { lines: 400 } }, remove: ['/logprobs'] },
  ],
};

t.test('bad params are refused at load', async (t) => {
  await rejects(t, { experiment: 'e', arms: [{ name: 'a', weight: 0 }, { name: 'b', weight: 0 }] }, /arms: weights sum to zero/);
  await rejects(t, { experiment: 'e', arms: [{ name: 'a', weight: 1, upstream: 'nowhere' }] }, /arms\[0\]\.upstream: unknown upstream "nowhere"/);
  await rejects(t, { experiment: 'e', arms: [{ name: 'a', weight: 1 }, { name: 'a', weight: 1 }] }, /arms\[1\]\.name: arm "a" is listed twice/);
  await rejects(t, { experiment: '__proto__', arms: [{ name: 'a', weight: 1 }] }, /experiment/);
  await rejects(t, { experiment: 'e', arms: [{ name: 'constructor', weight: 1 }] }, /arms\[0\]\.name/);
  await rejects(t, { experiment: 'e', arms: [{ name: 'a', weight: 1, set: { '/a/__proto__/x': 1 } }] }, /forbidden segment/);
  await rejects(t, { experiment: 'e', arms: [{ name: 'a', weight: 1, set: { nope: 1 } }] }, /pattern|property name/);
  await rejects(t, { experiment: 'e', arms: [{ name: 'a', weight: 1, remove: ['x'] }] }, /pattern/);
  await rejects(t, { experiment: 'has space', arms: [{ name: 'a', weight: 1 }] }, /pattern/);
  await rejects(t, { experiment: 'e', header: 'content-type', arms: [{ name: 'a', weight: 1 }] }, /header/);
  await rejects(t, { experiment: 'e', stickyOn: 'nope.x', arms: [{ name: 'a', weight: 1 }] }, /stickyOn/);
  await rejects(t, { experiment: 'e', arms: [] }, /arms/);
  await rejects(t, { experiment: 'e', arms: [{ name: 'a', weight: 1 }], extra: true }, /unknown property/);
});

t.test('the arm is recorded in route.arms, labels and a response header', async (t) => {
  const step = await make(twoArms);
  const ex = run(step, 'alice');
  const arm = ex.route.arms['fim-prompt']!;
  t.ok(arm === 'control' || arm === 'long-ctx');
  t.equal(ex.labels.arm, arm);
  t.equal(ex.responseHeaders['x-ghostgate-experiment'], `fim-prompt=${arm}`);
  for (let i = 0; i < 20; i++) t.equal(run(step, 'alice', { id: `r${i}` }).route.arms['fim-prompt'], arm, 'sticky per user');
});

t.test('an arm changes upstream, model and body; the other arm leaves them alone', async (t) => {
  const step = await make(twoArms);
  let sawLong = false, sawControl = false;
  for (let i = 0; i < 200 && !(sawLong && sawControl); i++) {
    const ex = run(step, `user-${i}`, { body: { model: 'ghost-small', prompt: 'x', logprobs: 2, extra: { doc: 'a.py' } } });
    if (ex.route.arms['fim-prompt'] === 'long-ctx') {
      sawLong = true;
      t.equal(ex.route.upstream, 'canary');
      t.equal(ex.route.upstreamModel, 'ghost-long-v2');
      t.same(ex.body, { model: 'ghost-small', prompt: 'x', max_tokens: 64, extra: { doc: 'a.py', ctx: { lines: 400 } } });
      t.same(ex.originalBody, { model: 'ghost-small', prompt: 'x', logprobs: 2, extra: { doc: 'a.py' } }, 'the original body is intact');
      ex.setBody('/extra/ctx/lines', 1); // a later step editing the arm's value must not leak into the next request
    } else {
      sawControl = true;
      t.equal(ex.route.upstream, 'local');
      t.equal(ex.route.upstreamModel, 'ghost-small');
      t.notOk(ex.bodyChanged, 'control arm forwards the client bytes unchanged');
    }
  }
  t.ok(sawLong && sawControl, 'both arms seen');
  for (let i = 0; i < 200; i++) {
    const ex = run(step, `user-${i}`);
    if (ex.route.arms['fim-prompt'] === 'long-ctx') { t.same((ex.body.extra as { ctx: unknown }).ctx, { lines: 400 }, 'arm values are not shared mutable state'); break; }
  }
});

t.test('later steps can read route.arms.<experiment> in their when', async (t) => {
  const step = await make(twoArms);
  const when = compileCondition({ '==': [{ var: 'route.arms.fim-prompt' }, 'long-ctx'] });
  let matched = 0, total = 0;
  for (let i = 0; i < 1000; i++) {
    const ex = run(step, `user-${i}`);
    total++;
    if (when(ex.facts)) { matched++; t.equal(ex.route.arms['fim-prompt'], 'long-ctx'); }
  }
  t.ok(matched > 400 && matched < 600, `≈half match (${matched}/${total})`);
});

t.test('two experiments are independent and share the header', async (t) => {
  const a = await make({ experiment: 'exp-a', arms: [{ name: 'on', weight: 1 }, { name: 'off', weight: 1 }] });
  const b = await make({ experiment: 'exp-b', arms: [{ name: 'on', weight: 1 }, { name: 'off', weight: 1 }] });
  let bothOn = 0;
  const N = 20_000;
  for (let i = 0; i < N; i++) {
    const ex = makeExchange({ claims: { sub: `u${i}` } });
    a.request!(ex); b.request!(ex);
    if (ex.route.arms['exp-a'] === 'on' && ex.route.arms['exp-b'] === 'on') bothOn++;
    if (i === 0) t.equal(ex.responseHeaders['x-ghostgate-experiment'], `exp-a=${ex.route.arms['exp-a']}, exp-b=${ex.route.arms['exp-b']}`);
  }
  t.ok(Math.abs(bothOn / N - 0.25) < 0.015, `experiments are not correlated (${bothOn / N})`);
});

t.test('arm shares follow weights; changing weights moves only the share it must', async (t) => {
  const N = 100_000;
  const v1 = await make({ experiment: 'e', arms: [{ name: 'a', weight: 90 }, { name: 'b', weight: 10 }] });
  const v2 = await make({ experiment: 'e', arms: [{ name: 'a', weight: 80 }, { name: 'b', weight: 20 }] });
  let b1 = 0, moved = 0;
  for (let i = 0; i < N; i++) {
    const s = `subject-${i}`;
    const x = run(v1, s).route.arms.e, y = run(v2, s).route.arms.e;
    if (x === 'b') b1++;
    if (x !== y) { moved++; if (x === 'b') t.fail('moved from b to a'); }
  }
  t.ok(Math.abs(b1 / N - 0.1) <= 0.02, `b share ${b1 / N}`);
  t.ok(moved / N > 0.09 && moved / N < 0.11, `moved ${moved / N}`);
});

t.test('custom header; no sticky fact falls back to the request id', async (t) => {
  const step = await make({ experiment: 'e', header: 'X-Exp', stickyOn: 'request.headers.x-user', arms: [{ name: 'a', weight: 1 }, { name: 'b', weight: 1 }] });
  const ex = run(step, undefined, { headers: { 'x-user': 'u1' } });
  t.equal(ex.responseHeaders['x-exp'], `e=${ex.route.arms.e}`);
  const arms = new Set<string>();
  for (let i = 0; i < 100; i++) arms.add(run(step, undefined, { id: `id-${i}` }).route.arms.e!);
  t.equal(arms.size, 2, 'no key: spread by request id');
});
