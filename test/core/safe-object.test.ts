/** One forbidden-key list and one deepFreeze, used by every part that needs them. */
import t from 'tap';
import { compileCondition } from '../../core/conditions.ts';
import { compileFactPath } from '../../core/fact-path.ts';
import { parsePointer } from '../../core/json-pointer.ts';
import { deepFreeze, FORBIDDEN_KEYS, isForbiddenKey } from '../../core/plugin-api.ts';

t.test('every path language refuses every forbidden key', async (t) => {
  t.same([...FORBIDDEN_KEYS].sort(), ['__proto__', 'constructor', 'prototype']);
  for (const k of FORBIDDEN_KEYS) {
    t.ok(isForbiddenKey(k), k);
    t.throws(() => parsePointer(`/a/${k}`), /forbidden segment/, `JSON Pointer /a/${k}`);
    t.throws(() => compileFactPath(`claims.${k}`), /forbidden/, `fact path claims.${k}`);
    t.throws(() => compileCondition({ var: `body.${k}` }), /forbidden segment/, `when var body.${k}`);
  }
  t.notOk(isForbiddenKey('proto'));
  t.same(parsePointer('/a/proto'), ['a', 'proto']);
});

t.test('deepFreeze freezes in depth and returns its argument', async (t) => {
  const v = { a: [1, { b: 'x' }], c: { d: { e: null } } };
  t.equal(deepFreeze(v), v);
  t.ok(Object.isFrozen(v) && Object.isFrozen(v.a) && Object.isFrozen(v.a[1]) && Object.isFrozen(v.c.d));
  // A frozen parent does not stop the walk: a child left mutable is frozen too.
  const inner = { x: 1 };
  const outer = Object.freeze({ inner });
  deepFreeze(outer);
  t.ok(Object.isFrozen(inner));
  t.equal(deepFreeze('s'), 's');
  t.equal(deepFreeze(null), null);
});
