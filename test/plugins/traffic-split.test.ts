import t from 'tap';
import type { Test } from 'tap';
import trafficSplit from '../../plugins/traffic-split/index.ts';
import type { TrafficSplitParams } from '../../plugins/traffic-split/index.ts';
import { GatewayError } from '../../core/errors.ts';
import type { ErrorCode } from '../../core/errors.ts';
import type { Step, UpstreamClient } from '../../core/types.ts';
import { makeExchange } from '../helpers/exchange.ts';
import { loadStep } from '../helpers/plugin-step.ts';

const fakeClient = (name: string): UpstreamClient => ({ name, send: () => Promise.reject(new Error('not used')) });
const upstreams = new Map(['east-a', 'east-b', 'west', 'local'].map((n) => [n, fakeClient(n)]));

async function make(params: Partial<TrafficSplitParams> & { targets: TrafficSplitParams['targets'] }): Promise<Step> {
  return (await loadStep(trafficSplit, params, { upstreams })).step;
}
/** Route one request for `sub` (undefined: no claims) and return the chosen upstream/model. */
function route(step: Step, sub: string | undefined, id = 'req'): { upstream: string; upstreamModel: string } {
  const ex = makeExchange({ id, claims: sub === undefined ? undefined : { sub } });
  step.request!(ex);
  return { upstream: ex.route.upstream, upstreamModel: ex.route.upstreamModel };
}
async function rejects(t: Test, params: unknown, code: ErrorCode, path: RegExp | string): Promise<void> {
  const err = await loadStep(trafficSplit, params, { upstreams }).then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof GatewayError, 'a GatewayError');
  t.equal((err as GatewayError).code, code);
  t.match((err as GatewayError).message, path);
}

const N = 100_000;
const subjects = Array.from({ length: N }, (_, i) => `user-${i}@example.com`);

t.test('bad params are refused at load', async (t) => {
  await rejects(t, { targets: [{ upstream: 'east-a', weight: 0 }, { upstream: 'east-b', weight: 0 }] }, 'GW_ERR_CONFIG_PLUGIN_PARAMS', /targets: weights sum to zero/);
  await rejects(t, { targets: [{ upstream: 'east-a', weight: 1 }, { upstream: 'nowhere', weight: 1 }] }, 'GW_ERR_CONFIG_PLUGIN_PARAMS', /targets\[1\]\.upstream: unknown upstream "nowhere"/);
  await rejects(t, { targets: [{ upstream: 'east-a', weight: 1 }, { upstream: 'east-a', weight: 2 }] }, 'GW_ERR_CONFIG_PLUGIN_PARAMS', /listed twice/);
  await rejects(t, { stickyOn: 'secrets.key', targets: [{ upstream: 'east-a', weight: 1 }] }, 'GW_ERR_CONFIG_PLUGIN_PARAMS', /stickyOn/);
  await rejects(t, { stickyOn: 'claims.__proto__', targets: [{ upstream: 'east-a', weight: 1 }] }, 'GW_ERR_CONFIG_PLUGIN_PARAMS', /forbidden/);
  await rejects(t, { targets: [{ upstream: 'east-a', weight: -1 }] }, 'GW_ERR_CONFIG_PLUGIN_PARAMS', /minimum|>= 0/);
  await rejects(t, { targets: [] }, 'GW_ERR_CONFIG_PLUGIN_PARAMS', /fewer than 1|minItems/);
  await rejects(t, {}, 'GW_ERR_CONFIG_PLUGIN_PARAMS', /targets/);
  await rejects(t, { targets: [{ upstream: 'east-a', weight: 1, bogus: 1 }] }, 'GW_ERR_CONFIG_PLUGIN_PARAMS', /unknown property/);
});

t.test('sets route.upstream and route.upstreamModel; a user stays on one target', async (t) => {
  const step = await make({ targets: [{ upstream: 'east-a', model: 'ghost-a-v1', weight: 50 }, { upstream: 'east-b', weight: 50 }] });
  const seen = new Set<string>();
  for (const sub of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) {
    const first = route(step, sub, 'r0');
    seen.add(first.upstream);
    for (let i = 1; i < 20; i++) t.same(route(step, sub, `r${i}`), first, `${sub} is sticky`);
    if (first.upstream === 'east-a') t.equal(first.upstreamModel, 'ghost-a-v1', 'target model is sent upstream');
    else t.equal(first.upstreamModel, 'ghost-small', 'no target model: the route keeps its upstream model');
  }
  t.equal(seen.size, 2, 'both targets get users');
});

t.test('without the sticky fact, the request id decides (spread, not sticky)', async (t) => {
  const step = await make({ targets: [{ upstream: 'east-a', weight: 1 }, { upstream: 'east-b', weight: 1 }] });
  const counts = new Map<string, number>();
  for (let i = 0; i < 2000; i++) {
    const u = route(step, undefined, `req-${i}`).upstream;
    counts.set(u, (counts.get(u) ?? 0) + 1);
  }
  t.ok(counts.get('east-a')! > 850 && counts.get('east-b')! > 850, `spread by request id: ${JSON.stringify([...counts])}`);
  t.equal(route(step, undefined, 'same-id').upstream, route(step, undefined, 'same-id').upstream, 'same id, same target');
});

t.test(`proportions match weights within ±2% over ${N} subjects`, async (t) => {
  const targets = [{ upstream: 'east-a', weight: 70 }, { upstream: 'east-b', weight: 20 }, { upstream: 'west', weight: 10 }];
  const step = await make({ targets });
  const counts = new Map<string, number>();
  for (const s of subjects) { const u = route(step, s).upstream; counts.set(u, (counts.get(u) ?? 0) + 1); }
  for (const tg of targets) {
    const share = (counts.get(tg.upstream) ?? 0) / N;
    const want = tg.weight / 100;
    t.comment(`${tg.upstream}: ${(share * 100).toFixed(2)}% (weight ${tg.weight}%)`);
    t.ok(Math.abs(share - want) <= 0.02, `${tg.upstream} share ${share} within ±0.02 of ${want}`);
  }
  const zero = await make({ targets: [{ upstream: 'east-a', weight: 1 }, { upstream: 'east-b', weight: 0 }] });
  t.notOk(subjects.slice(0, 10_000).some((s) => route(zero, s).upstream === 'east-b'), 'weight 0 drains a target');
});

t.test('changing weights on reload moves only the share it must', async (t) => {
  const before = await make({ targets: [{ upstream: 'east-a', weight: 90 }, { upstream: 'east-b', weight: 10 }] });
  const after = await make({ targets: [{ upstream: 'east-a', weight: 80 }, { upstream: 'east-b', weight: 20 }] });
  let moved = 0, wrongWay = 0;
  for (const s of subjects) {
    const a = route(before, s).upstream, b = route(after, s).upstream;
    if (a !== b) { moved++; if (a !== 'east-a') wrongWay++; }
  }
  t.comment(`90/10 → 80/20 moved ${(moved / N * 100).toFixed(2)}% of users`);
  t.ok(moved / N > 0.09 && moved / N < 0.11, `≈10% moved (${moved / N})`);
  t.equal(wrongWay, 0, 'nobody moves from east-b to east-a');

  const reordered = await make({ targets: [{ upstream: 'east-b', weight: 10 }, { upstream: 'east-a', weight: 90 }] });
  t.notOk(subjects.some((s) => route(before, s).upstream !== route(reordered, s).upstream), 'reordering targets moves nobody');

  const added = await make({ targets: [{ upstream: 'east-a', weight: 90 }, { upstream: 'east-b', weight: 10 }, { upstream: 'west', weight: 10 }] });
  let toWest = 0, elsewhere = 0;
  for (const s of subjects) {
    const a = route(before, s).upstream, b = route(added, s).upstream;
    if (a !== b) { if (b === 'west') toWest++; else elsewhere++; }
  }
  t.comment(`adding a 10/110 target moved ${(toWest / N * 100).toFixed(2)}% of users, all to it`);
  t.ok(Math.abs(toWest / N - 10 / 110) < 0.01, 'adding a target moves only its share');
  t.equal(elsewhere, 0, 'and only to the new target');
});

t.test('splits with different seeds are independent; the same seed is reproducible', async (t) => {
  const targets = [{ upstream: 'east-a', weight: 50 }, { upstream: 'east-b', weight: 50 }];
  const one = await make({ seed: 'ghost-small', targets });
  const two = await make({ seed: 'ghost-large', targets });
  const again = await make({ seed: 'ghost-small', targets });
  let both = 0;
  for (const s of subjects) {
    if (route(one, s).upstream === 'east-a' && route(two, s).upstream === 'east-a') both++;
  }
  t.ok(Math.abs(both / N - 0.25) < 0.01, `P(a in split 1 and a in split 2) ≈ 0.25 (${both / N})`);
  t.notOk(subjects.slice(0, 10_000).some((s) => route(one, s).upstream !== route(again, s).upstream), 'same seed, same assignment');
});
