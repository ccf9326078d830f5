/** `when` conditions: same answers as json-logic-js (the reference), compiled, and locked down. */
import jsonLogic from 'json-logic-js';
import t from 'tap';
import { compareSemver, compileCondition, parseSemver } from '../../core/conditions.ts';

const facts = {
  request: { method: 'POST', path: '/v1/completions', headers: { 'user-agent': 'vscode' }, protocol: 'h2', ip: '127.0.0.1' },
  client: { editor: 'vscode', editorVersion: '1.95.2', plugin: 'copilot', version: '1.199.0' },
  claims: { sub: 'alice', plan: 'pro', features: ['beta', 'fast'], org: null, quota: 7 },
  body: { model: 'ghost-small', max_tokens: 64, stream: true, prompt: 'def fib(' },
  route: { model: 'ghost-small', upstream: 'local', upstreamModel: 'ghost-small', arms: { exp1: 'b' } },
};

t.test('agrees with json-logic-js on the standard operators', async (t) => {
  const rules: unknown[] = [
    { '==': [{ var: 'claims.plan' }, 'pro'] },
    { '==': [{ var: 'claims.quota' }, '7'] },
    { '===': [{ var: 'claims.quota' }, '7'] },
    { '!=': [{ var: 'claims.sub' }, 'bob'] },
    { '!==': [{ var: 'claims.quota' }, 7] },
    { '!': [{ var: 'claims.missing' }] },
    { '!!': [{ var: 'claims.features' }] },
    { '!!': [[]] },
    { and: [{ var: 'body.stream' }, { '>': [{ var: 'body.max_tokens' }, 10] }] },
    { and: [true, 0, 'x'] },
    { or: [{ var: 'claims.missing' }, { var: 'claims.org' }, 'fallback'] },
    { or: [false, 0] },
    { if: [{ '<': [{ var: 'body.max_tokens' }, 32] }, 'small', { '<': [{ var: 'body.max_tokens' }, 128] }, 'medium', 'large'] },
    { '<': [1, { var: 'claims.quota' }, 10] },
    { '<=': [7, { var: 'claims.quota' }, 7] },
    { '>=': [{ var: 'body.max_tokens' }, 64] },
    { in: ['beta', { var: 'claims.features' }] },
    { in: ['fib', { var: 'body.prompt' }] },
    { in: ['x', { var: 'claims.quota' }] },
    { cat: [{ var: 'client.editor' }, '/', { var: 'client.editorVersion' }] },
    { '+': [{ var: 'claims.quota' }, 3] },
    { '-': [{ var: 'claims.quota' }] },
    { '*': [2, 3, 4] },
    { '/': [{ var: 'body.max_tokens' }, 8] },
    { '%': [{ var: 'claims.quota' }, 4] },
    { min: [3, { var: 'claims.quota' }] },
    { max: [3, { var: 'claims.quota' }] },
    { var: ['claims.nope', 'dflt'] },
    { var: 'route.arms.exp1' },
    { '==': [{ var: 'claims.org' }, null] },
    { '?:': [{ var: 'claims.sub' }, 1, 2] },
  ];
  for (const rule of rules) {
    const ours = compileCondition(rule);
    const ref = jsonLogic.truthy(jsonLogic.apply(rule as never, facts));
    t.equal(ours(facts), ref, JSON.stringify(rule));
  }
});

t.test('semver operators', async (t) => {
  const cases: Array<[string, string, string, boolean]> = [
    ['semver<', '1.199.0', '1.200.0', true],
    ['semver<', '1.200.0', '1.200.0', false],
    ['semver<=', '1.200.0', '1.200.0', true],
    ['semver>', '1.200.1', '1.200.0', true],
    ['semver>=', '2.0.0-beta.1', '2.0.0', false],
    ['semver<', '2.0.0-beta.1', '2.0.0', true],
    ['semver<', '2.0.0-alpha', '2.0.0-beta', true],
    ['semver<', '2.0.0-beta.2', '2.0.0-beta.11', true],
    ['semver==', 'v1.2', '1.2.0', true],
    ['semver<', '1.10.0', '1.9.0', false],
    ['semver<', 'not-a-version', '1.0.0', false],
    ['semver>=', 'not-a-version', '1.0.0', false],
  ];
  for (const [op, a, b, want] of cases) {
    t.equal(compileCondition({ [op]: [{ var: 'client.version' }, b] })({ ...facts, client: { ...facts.client, version: a } }), want, `${a} ${op} ${b}`);
  }
  t.equal(compileCondition({ 'semver<': [{ var: 'client.version' }, '1.200.0'] })({ ...facts, client: { ...facts.client, version: undefined } }), false, 'missing version compares false');
  t.same(parseSemver('1.2.3-rc.1+build.5'), [1, 2, 3, ['rc', 1]]);
  t.ok(compareSemver(parseSemver('1.0.0')!, parseSemver('1.0.0-rc.1')!) > 0);
});

t.test('compile errors: forbidden operators, var outside the fact roots, unsafe paths', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [{ eval: ['process.exit()'] }, /operator "eval" is not allowed/],
    [{ method: [{ var: 'claims.sub' }, 'toUpperCase'] }, /operator "method" is not allowed/],
    [{ '==': [{ var: 'process.env.SECRET' }, 1] }, /outside the fact roots/],
    [{ var: '' }, /needs a literal dotted path/],
    [{ var: { cat: ['claims', '.sub'] } }, /needs a literal dotted path/],
    [{ '==': [{ var: 'claims.__proto__.polluted' }, 1] }, /forbidden segment "__proto__"/],
    [{ '==': [{ var: 'body.constructor' }, 1] }, /forbidden segment "constructor"/],
    [{ '==': [1, 2], '!=': [1, 2] }, /exactly one operator/],
    [{ '==': [1] }, /takes 2 argument/],
    [{ and: [{ '==': [1, 1] }, { nope: [] }] }, /at and\[1\]/],
  ];
  for (const [rule, msg] of bad) t.throws(() => compileCondition(rule), msg, JSON.stringify(rule));
});

t.test('arithmetic values equal json-logic-js\'s (min, max, +, * included; NaN and empty lists)', async (t) => {
  // Speed is measured by bench/conditions.ts, not here.
  const exprs: unknown[] = [
    { min: [3, { var: 'claims.quota' }, -1] }, { max: [3, { var: 'claims.quota' }, 9.5] }, { min: [3, 'x'] }, { max: ['x', 3] },
    { min: [] }, { max: [] }, { min: [{ var: 'claims.missing' }, 2] }, { max: ['4', 2] },
    { '+': [{ var: 'claims.quota' }, '3', 1] }, { '+': [] }, { '+': ['x', 1] }, { '*': [2, '3', { var: 'claims.quota' }] }, { '*': [2, 'x'] },
  ];
  for (const e of exprs) {
    const ref = String(jsonLogic.apply(e as never, facts));
    t.equal(compileCondition({ '===': [{ cat: [e] }, ref] })(facts), true, `${JSON.stringify(e)} = ${ref}`);
  }
});
