/** Body edits by JSON Pointer: deep, arrays, copy-on-write (the client's body is never touched). */
import t from 'tap';
import { parsePointer } from '../../core/json-pointer.ts';
import { makeExchange } from '../helpers/exchange.ts';

t.test('set and remove, deep and in arrays, without touching the original', async (t) => {
  const original = { model: 'm', prompt: 'p', extra: { a: { b: 1, c: 2 } }, stop: ['x', 'y', 'z'], messages: [{ role: 'user', name: 'n', content: 'c' }] };
  const snapshot = JSON.stringify(original);
  const ex = makeExchange({ body: original });
  ex.setBody('/extra/a/b', 10);
  ex.setBody('/extra/new/deep', true);
  ex.removeBody('/extra/a/c');
  ex.removeBody('/messages/0/name');
  ex.removeBody('/stop/1');
  ex.setBody('/stop/-', 'w');
  t.equal(ex.removeBody('/nope/x'), false, 'removing what is not there says so');
  t.same(ex.body, { model: 'm', prompt: 'p', extra: { a: { b: 10 }, new: { deep: true } }, stop: ['x', 'z', 'w'], messages: [{ role: 'user', content: 'c' }] });
  t.equal(JSON.stringify(original), snapshot, 'the original body is untouched');
  t.equal(ex.originalBody, original);
  t.ok(ex.bodyChanged);
  t.equal((ex.body as { prompt: string }).prompt, original.prompt, 'unchanged branches are shared, not copied');
  t.equal(Object.keys(ex.body)[0], 'model', 'key order is kept');
});

t.test('removing a top-level key keeps the rest and the order', async (t) => {
  const ex = makeExchange({ body: { model: 'm', logprobs: 5, prompt: 'p' } });
  t.equal(ex.removeBody('/logprobs'), true);
  t.same(Object.keys(ex.body), ['model', 'prompt']);
  t.notOk(ex.removeBody('/logprobs'));
});

t.test('pointer syntax: escapes, and unsafe segments refused', async (t) => {
  t.same(parsePointer('/a~1b/c~0d'), ['a/b', 'c~d']);
  t.same(parsePointer(''), []);
  t.throws(() => parsePointer('a/b'), /must start with/);
  t.throws(() => parsePointer('/__proto__/x'), /forbidden/);
  t.throws(() => parsePointer('/a/constructor'), /forbidden/);
});
