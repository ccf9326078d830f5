import t from 'tap';
import logitBias from '../../plugins/logit-bias/index.ts';
import { loadStep } from '../helpers/plugin-step.ts';
import { makeExchange } from '../helpers/exchange.ts';
import type { JsonValue } from '../../core/types.ts';

async function run(params: unknown, clientBias?: JsonValue) {
  const { step } = await loadStep(logitBias, params);
  const ex = makeExchange({ body: clientBias === undefined ? { model: 'm' } : { model: 'm', logit_bias: clientBias } });
  await step.request!(ex);
  // Compare as the upstream will see it (the serialized body).
  return JSON.parse(JSON.stringify(ex.body)).logit_bias as unknown;
}

t.test('no client bias: the policy bias is sent', async (t) => {
  t.same(await run({ bias: { 50256: -100, 13: 5 } }), { 50256: -100, 13: 5 });
  t.same(await run({ bias: { 50256: -100 } }, null), { 50256: -100 }, 'null is absent');
});

t.test('merge rules on a token both sides biased', async (t) => {
  const client = { 50256: 20, 42: 3 };
  t.same(await run({ bias: { 50256: -100, 7: 1 } }, client), { 50256: -100, 42: 3, 7: 1 }, 'default is policy-wins');
  t.same(await run({ bias: { 50256: -100, 7: 1 }, merge: 'policy-wins' }, client), { 50256: -100, 42: 3, 7: 1 });
  t.same(await run({ bias: { 50256: -100, 7: 1 }, merge: 'client-wins' }, client), { 50256: 20, 42: 3, 7: 1 });
  t.same(await run({ bias: { 50256: -30, 7: 1 }, merge: 'sum' }, client), { 50256: -10, 42: 3, 7: 1 });
});

t.test('results are clamped to [-100, 100]', async (t) => {
  t.same(await run({ bias: { 1: -80, 2: 90 }, merge: 'sum' }, { 1: -50, 2: 40 }), { 1: -100, 2: 100 }, 'sums');
  t.same(await run({ bias: { 1: 0 } }, { 5: 500, 6: -1e9 }), { 1: 0, 5: 100, 6: -100 }, 'client values out of range');
});

t.test('a client logit_bias that is not an object of numbers is replaced by the policy bias', async (t) => {
  for (const bad of [[1, 2], 'x', 7, { 1: 'a' }, { 1: 5, 2: null }, { 1: { x: 1 } }]) {
    t.same(await run({ bias: { 50256: -100 } }, bad as JsonValue), { 50256: -100 }, JSON.stringify(bad));
  }
});

t.test('client keys are data, never prototype tricks; the client body is untouched', async (t) => {
  const { step } = await loadStep(logitBias, { bias: { 1: -1 } });
  const src = '{"logit_bias":{"__proto__":5,"2":3}}';
  const ex = makeExchange({ body: JSON.parse(src) });
  await step.request!(ex);
  const sent = JSON.parse(JSON.stringify(ex.body.logit_bias)) as Record<string, unknown>;
  t.same(Object.keys(sent).sort(), ['1', '2', '__proto__']);
  t.equal(Object.getOwnPropertyDescriptor(sent, '__proto__')?.value, 5, '"__proto__" kept as an ordinary key');
  t.equal(JSON.stringify(ex.originalBody), JSON.stringify(JSON.parse(src)));
});

t.test('bad params are refused at load with GW_ERR_CONFIG_PLUGIN_PARAMS', async (t) => {
  const bad: unknown[] = [
    {},
    { bias: {} },
    { bias: { abc: 1 } },
    { bias: { '-1': 1 } },
    { bias: { 1: 101 } },
    { bias: { 1: -100.5 } },
    { bias: { 1: '5' } },
    { bias: { 1: 5 }, merge: 'max' },
    { bias: { 1: 5 }, clamp: false },
  ];
  for (const params of bad) {
    await t.rejects(loadStep(logitBias, params), { code: 'GW_ERR_CONFIG_PLUGIN_PARAMS' }, JSON.stringify(params));
  }
});
