/**
 * What the README says of the facts conditions read: read-only to steps, but not frozen in
 * time. `claims` starts empty and is set by the auth step; `route` is the live route, so a later
 * condition sees what an earlier step changed; `body` stays the body the client sent while steps
 * edit the working body.
 */
import t from 'tap';
import { compileCondition } from '../../core/conditions.ts';
import { makeExchange } from '../helpers/exchange.ts';

t.test('facts: claims set later, the route live, the body as sent', async (t) => {
  const ex = makeExchange({ body: { model: 'ghost-small', prompt: 'x', max_tokens: 16 } });
  const pro = compileCondition({ '==': [{ var: 'claims.plan' }, 'pro'] });
  const large = compileCondition({ '==': [{ var: 'route.model' }, 'ghost-large'] });
  const asked16 = compileCondition({ '==': [{ var: 'body.max_tokens' }, 16] });
  t.same(ex.facts.claims, {}, 'claims start empty');
  t.notOk(pro(ex.facts));
  ex.setClaims({ sub: 'alice', plan: 'pro' });
  t.ok(pro(ex.facts), 'claims set by a step (auth) are seen by later conditions');
  ex.route.model = 'ghost-large';
  t.ok(large(ex.facts), 'a route change by a step (model-rewrite) is seen by later conditions');
  ex.setBody('/max_tokens', 64);
  t.equal(ex.body.max_tokens, 64, 'the working body changed');
  t.ok(asked16(ex.facts), 'facts.body is still the body as the client sent it');
});
