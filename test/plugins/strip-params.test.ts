import t from 'tap';
import stripParams from '../../plugins/strip-params/index.ts';
import { loadStep } from '../helpers/plugin-step.ts';
import { makeExchange } from '../helpers/exchange.ts';
import type { JsonObject } from '../../core/types.ts';

async function run(remove: string[], body: JsonObject) {
  const { step } = await loadStep(stripParams, { remove });
  const ex = makeExchange({ body });
  await step.request!(ex);
  return ex;
}

t.test('removes top-level and deep fields, leaves the rest and the original body', async (t) => {
  const body = { model: 'm', prompt: 'p', logprobs: 5, extra: { debug: true, keep: 1 } };
  const ex = await run(['/logprobs', '/extra/debug'], body);
  t.same(ex.body, { model: 'm', prompt: 'p', extra: { keep: 1 } });
  t.same(ex.originalBody, { model: 'm', prompt: 'p', logprobs: 5, extra: { debug: true, keep: 1 } }, 'client body untouched');
  t.ok(ex.bodyChanged);
});

t.test('array indices refer to the body as the client sent it', async (t) => {
  const ex = await run(['/stop/0', '/stop/1'], { stop: ['a', 'b', 'c', 'd'] });
  t.same(ex.body.stop, ['c', 'd']);
  const ex2 = await run(['/stop/1', '/stop/3', '/stop/10'], { stop: ['a', 'b', 'c', 'd'] });
  t.same(ex2.body.stop, ['a', 'c'], 'order in params does not matter; out-of-range is a no-op');
});

t.test('fields inside array elements', async (t) => {
  const ex = await run(['/messages/1/name', '/messages/0/x/y'], {
    messages: [{ role: 'system', x: { y: 1, z: 2 } }, { role: 'user', name: 'bob', content: 'hi' }],
  });
  t.same(ex.body.messages, [{ role: 'system', x: { z: 2 } }, { role: 'user', content: 'hi' }]);
});

t.test('escaped pointer segments (~1 is "/", ~0 is "~")', async (t) => {
  const ex = await run(['/a~1b', '/c~0d'], { 'a/b': 1, 'c~d': 2, e: 3 });
  t.same(ex.body, { e: 3 });
});

t.test('nothing to remove: the body is not copied', async (t) => {
  const ex = await run(['/logprobs', '/a/b/c', '/prompt/0'], { model: 'm', prompt: 'x' });
  t.equal(ex.bodyChanged, false);
  t.equal(ex.body, ex.originalBody);
});

t.test('bad params are refused at load with GW_ERR_CONFIG_PLUGIN_PARAMS', async (t) => {
  const bad: unknown[] = [
    {},
    { remove: [] },
    { remove: 'logprobs' },
    { remove: ['logprobs'] },
    { remove: ['/'] },
    { remove: ['/__proto__/x'] },
    { remove: ['/a/constructor'] },
    { remove: ['/a'], extra: 1 },
  ];
  for (const params of bad) {
    await t.rejects(loadStep(stripParams, params), { code: 'GW_ERR_CONFIG_PLUGIN_PARAMS' }, JSON.stringify(params));
  }
  await t.rejects(loadStep(stripParams, { remove: ['/ok', '/x/__proto__'] }),
    { code: 'GW_ERR_CONFIG_PLUGIN_PARAMS', location: { path: 'params.remove[1]' } }, 'the error names the bad pointer');
});
