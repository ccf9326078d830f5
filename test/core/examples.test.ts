/** The shipped example policies load, and `explain` shows what they do. */
import path from 'node:path';
import t from 'tap';
import { explain, formatExplanation } from '../../core/cli/explain.ts';

const config = path.resolve(import.meta.dirname, '../../policies/examples/gateway.yaml');
const req = { model: 'ghost', prompt: 'def f(', logprobs: 3 };

t.test('a current client on the pro plan: fixes applied, split, experiment, mirror', async (t) => {
  const e = await explain(config, '/v1/completions', req, { 'editor-plugin-version': 'copilot/1.230.0' }, { sub: 'alice', plan: 'pro' });
  t.notOk(e.reply, 'forwarded');
  t.equal(e.route!.model, 'ghost-small');
  t.ok(['east-a', 'east-b'].includes(e.route!.upstream));
  t.ok(e.route!.arms['fim-context']);
  const changes = Object.fromEntries(e.upstream!.changes.map((c) => [c.pointer, c]));
  t.equal(changes['/logprobs']?.op, 'remove', 'poison pill stripped for clients below 1.240.0');
  t.same(changes['/logit_bias']?.to, { 50256: -100 });
  t.equal(changes['/max_tokens']?.to, 128);
  t.match(formatExplanation(e), /mirror\s+would run at forwarding/);
});

t.test('an old extension gets a 426 and nothing is forwarded', async (t) => {
  const e = await explain(config, '/v1/completions', req, { 'editor-plugin-version': 'copilot/1.150.0' }, { sub: 'bob', plan: 'pro' });
  t.equal(e.reply!.status, 426);
  t.match(e.reply!.body, { error: { code: 'GW_ERR_POLICY_UPGRADE_REQUIRED' } });
  t.notOk(e.upstream);
  t.ok(e.steps.filter((s) => s.result === 'not reached').length >= 5, 'later steps never ran');
});

t.test('a beta user is rewritten to the large model, which the fixes policy does not touch', async (t) => {
  const e = await explain(config, '/v1/completions', { model: 'ghost-small', prompt: 'x' }, { 'editor-plugin-version': 'copilot/1.250.0' }, { sub: 'carol', plan: 'beta' });
  t.equal(e.route!.model, 'ghost-large');
  t.equal(e.route!.upstream, 'large');
  t.notOk(e.route!.arms['fim-context'], 'the experiment is only for ghost-small');
});

t.test('without claims, the auth step answers 401', async (t) => {
  const e = await explain(config, '/v1/completions', req, {});
  t.equal(e.reply!.status, 401);
  t.match(e.reply!.body, { error: { code: 'GW_ERR_AUTH_MISSING_TOKEN' } });
});
