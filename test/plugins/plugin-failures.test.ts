/**
 * A plugin author's bugs at request time, in a real gateway over real HTTP/2 and HTTP/1.1: a
 * `request` phase that throws, rejects, returns something that is not a LocalReply, returns a
 * reply Node cannot send, or never settles its promise. Each gives the client a coded
 * `{error: {code, message}}`, the author a log line naming the plugin, its file and the step's
 * file:line, and `ghostgate_plugin_failures_total` a count; the gateway keeps serving, and no
 * request stays in flight (a hung step used to hold its request, and its runtime, for ever).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, open, post, post1, until } from '../helpers/h2.ts';
import { ROOT } from '../helpers/proc.ts';

const API = pathToFileURL(path.join(ROOT, 'core/plugin-api.ts')).href;

/** An out-of-tree JS plugin whose request phase misbehaves as the x-mode header says. */
const MISBEHAVE = `import { GatewayError } from '${API}';
export default {
  name: 'misbehave', description: 'Break on purpose, as x-mode says.', paramsSchema: { type: 'object' },
  create() {
    const reply = (extra) => ({ status: 403, body: { error: { code: 'GW_ERR_POLICY_REJECTED', message: 'no' } }, ...extra });
    return { request: function misbehave(ex) {
      switch (ex.facts.request.headers['x-mode']) {
        case 'throw': throw new Error('boom per request');
        case 'reject': return Promise.reject(new Error('async boom'));
        case 'gateway-error': throw new GatewayError('GW_ERR_POLICY_REJECTED', ['on purpose']);
        case 'string': return 'hello';
        case 'null': return null;
        case 'empty': return {};
        case 'bad-status': return reply({ status: 'x' });
        case 'bad-headers': return reply({ headers: 'x-a: b' });
        case 'resolve-null': return Promise.resolve(null);
        case 'bad-header-value': return reply({ headers: { 'x-a': 'a\\nb' } });
        case 'hang': return new Promise(() => {});
        case 'late': return new Promise((resolve) => { globalThis.__ggLate = resolve; });
        default: return undefined;
      }
    } };
  },
};
`;
/** Counts the requests that reach the step after misbehave. */
const AFTER = `export default { name: 'after', description: 'Count.', paramsSchema: { type: 'object' },
  create() { return { request: function after() { globalThis.__ggAfter = (globalThis.__ggAfter ?? 0) + 1; } }; } };
`;
const POLICY = 'name: bad\nsteps:\n  - use: misbehave\n  - use: after\n';
const g2 = globalThis as { __ggLate?: (v: unknown) => void; __ggAfter?: number };

t.test('a plugin that fails at request time: coded errors, a log line and a metric naming it; the gateway keeps serving', async (t) => {
  const g = await startGateway(t, {
    files: { 'local/misbehave.mjs': MISBEHAVE, 'local/after.mjs': AFTER },
    policies: { 'bad.yaml': POLICY },
    extraConfig: 'facts: { headers: [user-agent, x-mode] }\nplugins: [./local/misbehave.mjs, ./local/after.mjs]\nserver: { stepTimeoutMs: 300 }',
  });
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  const pluginFile = path.join(g.dir, 'local/misbehave.mjs');
  const metrics = async (): Promise<string> => (await fetch(`${g.adminUrl}/metrics`)).text();

  const cases: Array<[mode: string, status: number, code: string, reason?: string, why?: RegExp, protos?: Array<'h2' | 'h1'>]> = [
    ['throw', 500, 'GW_ERR_POLICY_STEP_FAILED', 'threw', /boom per request/],
    ['reject', 500, 'GW_ERR_POLICY_STEP_FAILED', 'threw', /async boom/],
    ['gateway-error', 403, 'GW_ERR_POLICY_REJECTED'],
    ['string', 500, 'GW_ERR_POLICY_STEP_FAILED', 'bad_result', /returned the string "hello"; request must return undefined/],
    ['null', 500, 'GW_ERR_POLICY_STEP_FAILED', 'bad_result', /returned null/],
    ['empty', 500, 'GW_ERR_POLICY_STEP_FAILED', 'bad_result', /status is undefined, not an integer from 200 to 599/],
    ['bad-status', 500, 'GW_ERR_POLICY_STEP_FAILED', 'bad_result', /status is the string "x"/],
    ['bad-headers', 500, 'GW_ERR_POLICY_STEP_FAILED', 'bad_result', /headers are the string/],
    ['resolve-null', 500, 'GW_ERR_POLICY_STEP_FAILED', 'bad_result', /its promise resolved: returned null/],
    // A reply header neither protocol can carry as it is (HTTP/1.1 refused it when the reply was
    // written, HTTP/2 sent it as it was): refused with the step named (test/core/header-values.test.ts).
    ['bad-header-value', 500, 'GW_ERR_POLICY_STEP_FAILED', 'bad_result', /header "x-a" has a line break/],
    ['hang', 504, 'GW_ERR_POLICY_STEP_TIMEOUT', 'timeout', /did not settle within 300 ms/],
  ];
  for (const [mode, status, code, reason, why, protos = ['h2', 'h1'] as const] of cases) {
    for (const proto of protos) {
      const r = proto === 'h2'
        ? await post(s, '/v1/completions', { prompt: 'x' }, { 'x-mode': mode })
        : await post1(`${g.url}/v1/completions`, { prompt: 'x' }, { 'x-mode': mode });
      t.equal(r.status, status, `${mode} over ${proto}: ${status}`);
      t.match(JSON.parse(r.text), { error: { code, message: String } }, `${mode} over ${proto}: {error: {code, message}}`);
      if (reason === 'timeout') t.match(JSON.parse(r.text).error.message, 'Policy step "misbehave" did not finish within 300 ms');
      // The gateway goes on serving on the same connection.
      const ok = proto === 'h2' ? await post(s, '/v1/completions', { prompt: 'x' }) : await post1(`${g.url}/v1/completions`, { prompt: 'x' });
      t.equal(ok.status, 200, `after ${mode} over ${proto}, a good request is served`);
    }
    if (reason === undefined) continue;
    const line = g.logs.map((l) => JSON.parse(l) as Record<string, string>).findLast((l) => l.plugin === 'misbehave' && l.reason === reason);
    t.ok(line, `${mode}: logged`);
    t.match(line, { level: 50, plugin: 'misbehave', pluginFile, step: `${path.join(g.dir, 'policies/bad.yaml')}:3`, phase: 'request', reason, err: why }, `${mode}: the log names the plugin, its file, the step and why`);
    t.match(line!.msg, `plugin "misbehave" (${pluginFile})`);
  }
  const thrown = g.logs.map((l) => JSON.parse(l) as Record<string, string>).find((l) => l.reason === 'threw');
  t.match(thrown!.stack, `${pathToFileURL(pluginFile).href}:`, 'with the stack, down to the plugin\'s own line');
  const m = await metrics();
  t.match(m, /ghostgate_plugin_failures_total\{plugin="misbehave",phase="request",reason="threw"\} 4/, 'counted: threw (2 modes x 2 protocols)');
  t.match(m, /ghostgate_plugin_failures_total\{plugin="misbehave",phase="request",reason="bad_result"\} 14/, 'counted: bad_result');
  t.match(m, /ghostgate_plugin_failures_total\{plugin="misbehave",phase="request",reason="timeout"\} 2/, 'counted: timeout');
  t.match(m, /ghostgate_inflight_requests 0\n/, 'nothing left in flight');

  // A promise that settles after the bound: the request has already ended, and no later step runs for it.
  const before = g2.__ggAfter ?? 0;
  const late = await post(s, '/v1/completions', { prompt: 'x' }, { 'x-mode': 'late' });
  t.equal(late.status, 504);
  g2.__ggLate!(undefined);
  t.equal((await post(s, '/v1/completions', { prompt: 'x' })).status, 200);
  t.equal(g2.__ggAfter, before + 1, 'the step after ran for the good request only, not for the late one');

  // A client that resets its stream while a step hangs: the request ends at the bound anyway.
  const st = open(s, '/v1/completions', { prompt: 'x' }, { 'x-mode': 'hang' });
  await until(async () => /ghostgate_inflight_requests 1\n/.test(await metrics()));
  st.close();
  await collect(st);
  await until(async () => /ghostgate_inflight_requests 0\n/.test(await metrics()));
  t.match(await metrics(), /ghostgate_requests_total\{[^}]*outcome="cancelled_before_forward"[^}]*\} 1/, 'ended as cancelled before forward');

  // server.stepTimeoutMs is hot: a reload applies it.
  g.write('gateway.config.yaml', readFileSync(g.configFile, 'utf8').replace('stepTimeoutMs: 300', 'stepTimeoutMs: 250'));
  t.equal((await g.gw.reload('test')).ok, true);
  const after = await post(s, '/v1/completions', { prompt: 'x' }, { 'x-mode': 'hang' });
  t.equal(after.status, 504);
  t.match(JSON.parse(after.text).error.message, 'did not finish within 250 ms', 'the reloaded bound');
});
