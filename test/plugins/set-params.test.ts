import t from 'tap';
import setParams from '../../plugins/set-params/index.ts';
import { loadStep } from '../helpers/plugin-step.ts';
import { makeExchange } from '../helpers/exchange.ts';
import type { JsonObject } from '../../core/types.ts';

async function run(params: unknown, body: JsonObject) {
  const { step } = await loadStep(setParams, params);
  const ex = makeExchange({ body });
  await step.request!(ex);
  return ex;
}

t.test('sets top-level and deep fields, creating objects on the way', async (t) => {
  const ex = await run({ set: { '/temperature': 0.2, '/extra/a/b': 'x', '/n': null } }, { model: 'm', temperature: 1 });
  t.same(ex.body, { model: 'm', temperature: 0.2, extra: { a: { b: 'x' } }, n: null });
  t.same(ex.originalBody, { model: 'm', temperature: 1 }, 'client body untouched');
});

t.test('arrays: replace by index, append with -', async (t) => {
  const ex = await run({ set: { '/stop/0': '\n\n', '/stop/-': '<END>', '/messages/0/role': 'system' } },
    { stop: ['x', 'y'], messages: [{ role: 'developer', content: 'c' }] });
  t.same(ex.body.stop, ['\n\n', 'y', '<END>']);
  t.same(ex.body.messages, [{ role: 'system', content: 'c' }]);
});

t.test('onlyIfAbsent keeps what the client sent; null counts as absent', async (t) => {
  const params = { set: { '/max_tokens': 64, '/temperature': 0, '/opts/top_p': 0.9 }, onlyIfAbsent: true };
  const ex = await run(params, { max_tokens: 500, temperature: null, opts: {} });
  t.same(ex.body, { max_tokens: 500, temperature: 0, opts: { top_p: 0.9 } });
  const ex2 = await run(params, { max_tokens: 500, temperature: 0.7, opts: { top_p: 1 } });
  t.equal(ex2.bodyChanged, false, 'everything present: nothing copied');
});

t.test('without onlyIfAbsent the policy overrides the client', async (t) => {
  const ex = await run({ set: { '/max_tokens': 64 } }, { max_tokens: 500 });
  t.equal(ex.body.max_tokens, 64);
});

t.test('a configured object value is shared safely across requests', async (t) => {
  const { step } = await loadStep(setParams, { set: { '/opts': { a: 1 } } });
  const ex1 = makeExchange({ body: {} });
  await step.request!(ex1);
  ex1.setBody('/opts/a', 2); // a later step edits inside the value
  const ex2 = makeExchange({ body: {} });
  await step.request!(ex2);
  t.same(ex1.body, { opts: { a: 2 } });
  t.same(ex2.body, { opts: { a: 1 } }, 'the next request still gets the configured value');
});

t.test('bad params are refused at load with GW_ERR_CONFIG_PLUGIN_PARAMS', async (t) => {
  const bad: unknown[] = [
    {},
    { set: {} },
    { set: { temperature: 1 } },
    { set: { '/__proto__': 1 } },
    { set: { '/a/prototype/b': 1 } },
    { set: { '/a': 1 }, onlyIfAbsent: 'yes' },
    { set: { '/stop/-': 'x' }, onlyIfAbsent: true },
    { set: { '/a': 1 }, other: true },
  ];
  for (const params of bad) {
    await t.rejects(loadStep(setParams, params), { code: 'GW_ERR_CONFIG_PLUGIN_PARAMS' }, JSON.stringify(params));
  }
});
