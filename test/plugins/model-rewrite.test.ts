import t from 'tap';
import modelRewrite from '../../plugins/model-rewrite/index.ts';
import { loadStep } from '../helpers/plugin-step.ts';
import { makeExchange } from '../helpers/exchange.ts';
import type { UpstreamClient } from '../../core/types.ts';

const small = { model: 'ghost-small', upstream: 'local', upstreamModel: 'ghost-small-v3' };
const large = { model: 'ghost-large', upstream: 'east', upstreamModel: 'ghost-large-2025-01' };
// As the runtime builds it: logical names and their aliases (`large`) → the logical model's route.
const models = new Map([['ghost-small', small], ['small', small], ['ghost-large', large], ['large', large]]);
const fakeUpstream = (name: string): UpstreamClient => ({ name, send: () => Promise.reject(new Error('not used')) });
const upstreams = new Map(['local', 'east', 'west'].map((n) => [n, fakeUpstream(n)] as const));
const load = (params: unknown) => loadStep(modelRewrite, params, { models, upstreams });

t.test('maps a requested model to a logical model and its default route', async (t) => {
  const { step } = await load({ map: { 'ghost-small': 'ghost-large' } });
  const ex = makeExchange({ body: { model: 'ghost-small', prompt: 'x' }, route: { upstream: 'local', upstreamModel: 'ghost-small-v3', arms: { a: 'b' } } });
  await step.request!(ex);
  t.same(ex.route, { model: 'ghost-large', upstream: 'east', upstreamModel: 'ghost-large-2025-01', arms: { a: 'b' } });
  t.equal(ex.body.model, 'ghost-small', 'body untouched: the core sends route.upstreamModel');
});

t.test('a target that is an alias sets the logical model it stands for', async (t) => {
  const { step } = await load({ map: { 'ghost-small': 'large' } });
  const ex = makeExchange({ body: { model: 'ghost-small', prompt: 'x' } });
  await step.request!(ex);
  t.same(ex.route, { model: 'ghost-large', upstream: 'east', upstreamModel: 'ghost-large-2025-01', arms: {} }, 'route.model is the logical name (metrics, later steps), not the alias');
});

t.test('maps to a deployment: upstream + upstream model, logical model kept', async (t) => {
  const { step } = await load({ map: { 'ghost-small': { upstream: 'west', model: 'ghost-small-canary' } } });
  const ex = makeExchange({ body: { model: 'ghost-small' } });
  await step.request!(ex);
  t.same(ex.route, { model: 'ghost-small', upstream: 'west', upstreamModel: 'ghost-small-canary', arms: {} });
});

t.test('matches the name the client wrote first, then the logical model (aliases)', async (t) => {
  const { step } = await load({ map: { 'gpt-4o-copilot': 'ghost-large', 'ghost-small': { upstream: 'west', model: 'w' } } });
  const byAlias = makeExchange({ body: { model: 'gpt-4o-copilot' }, route: { model: 'ghost-small' } });
  await step.request!(byAlias);
  t.equal(byAlias.route.model, 'ghost-large', 'raw requested name wins');
  const otherAlias = makeExchange({ body: { model: 'small' }, route: { model: 'ghost-small' } });
  await step.request!(otherAlias);
  t.same([otherAlias.route.upstream, otherAlias.route.upstreamModel], ['west', 'w'], 'logical model matched');
});

t.test('unmapped models pass through unchanged', async (t) => {
  const { step } = await load({ map: { 'ghost-small': 'ghost-large' } });
  const ex = makeExchange({ body: { model: 'ghost-large' }, route: { upstream: 'east', upstreamModel: 'ghost-large-2025-01' } });
  await step.request!(ex);
  t.same(ex.route, { model: 'ghost-large', upstream: 'east', upstreamModel: 'ghost-large-2025-01', arms: {} });
  const noModel = makeExchange({ body: { prompt: 'x' }, route: { model: 'ghost-large' } });
  await step.request!(noModel);
  t.equal(noModel.route.upstream, 'local');
});

t.test('bad params are refused at load with GW_ERR_CONFIG_PLUGIN_PARAMS', async (t) => {
  const bad: unknown[] = [
    {},
    { map: {} },
    { map: { a: '' } },
    { map: { a: 5 } },
    { map: { a: { upstream: 'east' } } },
    { map: { a: { upstream: 'east', model: 'x', extra: 1 } } },
    { map: { a: 'ghost-small' }, other: 1 },
  ];
  for (const params of bad) {
    await t.rejects(load(params), { code: 'GW_ERR_CONFIG_PLUGIN_PARAMS' }, JSON.stringify(params));
  }
  await t.rejects(load({ map: { a: 'ghost-huge' } }),
    { code: 'GW_ERR_CONFIG_PLUGIN_PARAMS', message: /ghost-huge/, location: { path: 'params.map.a' } }, 'unknown logical model');
  await t.rejects(load({ map: { a: { upstream: 'north', model: 'x' } } }),
    { code: 'GW_ERR_CONFIG_PLUGIN_PARAMS', message: /north/, location: { path: 'params.map.a.upstream' } }, 'unknown upstream');
});
