/**
 * `explain` dry-runs the production loop (`CompiledPipeline.run`) with a trace hook, not a copy
 * of it: the run is observed here, and what the hook reports matches what production decides
 * (a step's `when`, the claims standing in for `auth`, a local reply that stops the loop).
 */
import path from 'node:path';
import t from 'tap';
import { explain } from '../../core/cli/explain.ts';
import { CompiledPipeline } from '../../core/pipeline.ts';
import type { PipelineTrace } from '../../core/pipeline.ts';

const config = path.resolve(import.meta.dirname, '../../policies/examples/gateway.yaml');
const req = { model: 'ghost', prompt: 'def f(', logprobs: 3 };

t.test('explain runs CompiledPipeline.run with a trace, once per dry run', async (t) => {
  const run = CompiledPipeline.prototype.run;
  const traces: Array<PipelineTrace | undefined> = [];
  CompiledPipeline.prototype.run = function (this: CompiledPipeline, ex, trace) { traces.push(trace); return run.call(this, ex, trace); };
  t.teardown(() => { CompiledPipeline.prototype.run = run; });

  const ok = await explain(config, '/v1/completions', req, { 'editor-plugin-version': 'copilot/1.230.0' }, { sub: 'alice', plan: 'pro' });
  t.equal(traces.length, 1, 'one run of the production loop');
  t.ok(traces[0], 'with a trace hook');
  const auth = ok.steps.find((s) => s.step === 'auth')!;
  t.same(auth.reads, { claims: { sub: 'alice', plan: 'pro' } }, 'the hook stood in for auth with the claims');
  t.notOk(ok.reply, 'forwarded');
  t.notOk(ok.steps.some((s) => s.result === 'not reached'), 'every step was reached');

  const old = await explain(config, '/v1/completions', req, { 'editor-plugin-version': 'copilot/1.150.0' }, { sub: 'bob', plan: 'pro' });
  t.equal(traces.length, 2);
  const replied = old.steps.findIndex((s) => s.result === 'replied');
  t.ok(replied > 0, 'a step replied');
  t.ok(old.steps.slice(replied + 1).every((s) => s.result === 'not reached'), 'the loop stopped there, as in production');
  t.ok(old.steps.slice(0, replied).every((s) => s.result !== 'not reached'), 'every step before it was reached');

  const noClaims = await explain(config, '/v1/completions', req, {});
  t.equal(traces.length, 3);
  t.equal(noClaims.reply!.status, 401, 'without claims the real auth step runs and refuses');
  const a = noClaims.steps.find((s) => s.step === 'auth')!;
  t.equal(a.result, 'failed', 'it threw its coded error, which production answers');
  t.match(a.reply, { status: 401, body: { error: { code: 'GW_ERR_AUTH_MISSING_TOKEN' } } });
  t.ok(noClaims.steps.slice(1).every((s) => s.result === 'not reached'));
});
