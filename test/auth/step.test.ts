/** The `auth` policy step: verifies the bearer token, records claims for `when` conditions, copies nothing. */
import t from 'tap';
import { Registry } from 'prom-client';
import authPlugin from '../../plugins/auth/index.ts';
import { builtinPlugins } from '../../plugins/index.ts';
import { compileCondition } from '../../core/conditions.ts';
import { GatewayError } from '../../core/errors.ts';
import type { GatewayExchange } from '../../core/exchange.ts';
import { makeExchange } from '../helpers/exchange.ts';
import { loadStep } from '../helpers/plugin-step.ts';
import { caught, harness } from './helpers.ts';

/** An exchange carrying the raw Authorization header the way the core hands it to the step. */
function withAuthorization(value: string | string[] | undefined): GatewayExchange {
  const ex = makeExchange();
  Object.defineProperty(ex, 'authorization', { value, enumerable: false });
  return ex;
}

async function run(step: Awaited<ReturnType<typeof loadStep>>['step'], ex: GatewayExchange): Promise<void> {
  await step.request!(ex);
}

t.test('registered in the built-in plugins', async (t) => {
  t.ok(builtinPlugins.includes(authPlugin));
  t.equal(authPlugin.name, 'auth');
});

t.test('valid token → claims readable by when conditions', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const auth = await h.compile({ dev: true });
  const metrics = new Registry();
  const { step } = await loadStep(authPlugin, {}, { auth, metrics });
  const { token } = await auth.mint({ sub: 'alice', plan: 'pro', features: ['fim'] });
  const first = withAuthorization(`Bearer ${token}`);
  const pending = step.request!(first);
  t.ok(pending instanceof Promise, "a token's first sight waits for the signature check");
  await pending;
  t.match(first.facts.claims, { sub: 'alice', plan: 'pro' });
  const ex = withAuthorization(`Bearer ${token}`);
  const r = step.request!(ex);
  t.equal(r, undefined, 'synchronous once cached: no promise on the hot path');
  t.match(ex.facts.claims, { sub: 'alice', plan: 'pro', features: ['fim'] });
  t.ok(compileCondition({ '==': [{ var: 'claims.plan' }, 'pro'] })(ex.facts), 'claims.plan');
  t.ok(compileCondition({ in: ['fim', { var: 'claims.features' }] })(ex.facts), 'claims.features');
  // nothing copied: not in headers, labels, locals, body, facts
  const seen = JSON.stringify([ex.upstreamHeaders, ex.responseHeaders, ex.labels, [...ex.locals], ex.body, ex.facts]);
  t.notOk(seen.includes(token), 'the token is not copied anywhere');
  t.notOk(seen.includes(token.split('.')[2]), 'not even its signature');
});

t.test('bad requests', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const auth = await h.compile({ dev: true });
  const metrics = h.metrics; // the gateway hands the auth service and the steps one registry
  const { step } = await loadStep(authPlugin, {}, { auth, metrics });
  const count = async (code: string) => (await metrics.getSingleMetric('ghostgate_auth_failures_total')?.get())?.values.find((v) => v.labels.code === code)?.value ?? 0;

  const missing = await caught(() => run(step, withAuthorization(undefined)));
  t.equal(missing.code, 'GW_ERR_AUTH_MISSING_TOKEN');
  t.equal(missing.status, 401);
  t.same(missing.headers, { 'www-authenticate': 'Bearer realm="ghostgate"' });
  t.same(missing.toJSON(), { error: { code: 'GW_ERR_AUTH_MISSING_TOKEN', message: 'Missing bearer token' } });
  t.equal((await caught(() => run(step, withAuthorization('Basic dXNlcjpwYXNz')))).code, 'GW_ERR_AUTH_MISSING_TOKEN', 'other scheme');
  t.equal((await caught(() => run(step, withAuthorization(['Bearer a', 'Bearer b'])))).code, 'GW_ERR_AUTH_MALFORMED_TOKEN', 'two headers');
  t.equal((await caught(() => run(step, withAuthorization('Bearer nope')))).code, 'GW_ERR_AUTH_MALFORMED_TOKEN');
  t.equal((await caught(() => run(step, withAuthorization(`Bearer ${'a'.repeat(10_000)}`)))).code, 'GW_ERR_AUTH_TOKEN_TOO_LARGE');
  t.equal(await count('GW_ERR_AUTH_MISSING_TOKEN'), 2, 'missing tokens counted by the step');
  const ex = withAuthorization(undefined);
  await caught(() => run(step, ex));
  t.same(ex.facts.claims, {}, 'no claims after a failure');
});

t.test('optional: no token passes with empty claims; a bad token is still refused', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const auth = await h.compile({ dev: true });
  const { step } = await loadStep(authPlugin, { optional: true }, { auth });
  const ex = withAuthorization(undefined);
  t.equal(step.request!(ex), undefined);
  t.same(ex.facts.claims, {});
  t.equal((await caught(() => run(step, withAuthorization('Bearer x.y.z')))).code, 'GW_ERR_AUTH_MALFORMED_TOKEN');
  const { token } = await auth.mint({ sub: 'bob' });
  const ok = withAuthorization(`Bearer ${token}`);
  await run(step, ok);
  t.equal(ok.facts.claims.sub, 'bob');
});

t.test('config errors', async (t) => {
  const noAuth = await caught(() => loadStep(authPlugin, {}, {}));
  t.equal(noAuth.code, 'GW_ERR_CONFIG_PLUGIN_PARAMS');
  t.match(noAuth.message, /auth is not configured/);
  const h = harness();
  t.teardown(() => h.dir.remove());
  const auth = await h.compile({ dev: true });
  const bad = await caught(() => loadStep(authPlugin, { optinal: true }, { auth }));
  t.ok(bad instanceof GatewayError && bad.code === 'GW_ERR_CONFIG_PLUGIN_PARAMS');
});
