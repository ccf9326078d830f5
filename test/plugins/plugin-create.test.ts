/**
 * A plugin author's bugs at load time: `create` that throws, rejects, never settles, or returns
 * something that is not a step (undefined, a phase that is not a function, a misspelt phase),
 * and a module with no default export. `ghostgate validate` (a real process) lists each as
 * GW_ERR_CONFIG_PLUGIN_CREATE / GW_ERR_CONFIG_PLUGIN_LOAD at the step's file:line, naming the
 * plugin and its file; a running gateway refuses such a reload and keeps serving the last good
 * config.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { startCli } from '../cli/run.ts';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post } from '../helpers/h2.ts';

/** An out-of-tree plugin whose create misbehaves as params.mode says. */
const MISBEHAVE = `export default {
  name: 'misbehave', description: 'Break create on purpose.',
  paramsSchema: { type: 'object', required: ['mode'], properties: { mode: { type: 'string' } } },
  create(params, ctx) {
    switch (params.mode) {
      case 'throw': throw new Error('boom in create');
      case 'reject': return Promise.reject(new Error('async boom in create'));
      case 'hang': return new Promise(() => {});
      case 'undefined': return undefined;
      case 'not-a-function': return { request: 'nope' };
      case 'misspelt': return { reqeust() {} };
      case 'ctx-error': throw ctx.error('not like this', 'mode');
      default: return { request: function misbehave() {} };
    }
  },
};
`;
const NAMED_ONLY = "export const plugin = { name: 'named', description: 'x', paramsSchema: {}, create() { return {}; } };\n";
const modes = ['throw', 'reject', 'hang', 'undefined', 'not-a-function', 'misspelt', 'ctx-error'];
const policy = (ms: string[]): string => `name: bad\nsteps:\n${ms.map((m) => `  - use: misbehave\n    params: { mode: ${m} }\n`).join('')}`;

t.test('validate names the plugin, its file and the step for every create failure', async (t) => {
  const g = await startGateway(t, { noModel: true, files: { 'local/misbehave.mjs': MISBEHAVE, 'local/named.mjs': NAMED_ONLY }, extraConfig: 'plugins: [./local/misbehave.mjs]' });
  g.write('policies/bad.yaml', policy(modes));
  const config = g.configFile;
  const v = startCli(t, ['validate', '--config', config]);
  t.equal(await v.exited, 1);
  const err = v.stderr();
  const file = path.join(g.dir, 'local/misbehave.mjs');
  const at = (i: number): string => `${path.join(g.dir, 'policies/bad.yaml')}:${4 + 2 * i}:`;
  const expect: Record<string, string> = {
    throw: 'create threw: boom in create',
    reject: 'create threw: async boom in create',
    hang: 'create did not settle within 10000 ms (do no I/O in create)',
    undefined: 'create returned undefined, not a step (an object of phase functions: request, forwarding, responseHeaders, responseEvent, done)',
    'not-a-function': 'its step\'s request is the string "nope", not a function',
    misspelt: 'create returned a step with "reqeust", which is not a phase',
  };
  for (const [i, m] of modes.entries()) {
    if (m === 'ctx-error') continue;
    t.ok(err.includes(`${at(i)}`) && err.includes(`GW_ERR_CONFIG_PLUGIN_CREATE Plugin "misbehave" (${file}) could not build its step: ${expect[m]}`), `${m}: ${expect[m]}`);
  }
  t.match(err, `${at(6)}`, 'ctx.error keeps its own code and location');
  t.match(err, /GW_ERR_CONFIG_PLUGIN_PARAMS Invalid params for plugin "misbehave": mode: not like this/);

  writeFileSync(config, readFileSync(config, 'utf8').replace('plugins: [./local/misbehave.mjs]', 'plugins: [./local/misbehave.mjs, ./local/named.mjs]'));
  g.write('policies/bad.yaml', policy(['ok']));
  const n = startCli(t, ['validate', '--config', config]);
  t.equal(await n.exited, 1);
  t.match(n.stderr(), /GW_ERR_CONFIG_PLUGIN_LOAD Cannot load plugin \.\/local\/named\.mjs: \S+named\.mjs: it has no default export \(it exports plugin\)/, 'a module with a named export only');
});

t.test('a running gateway refuses a reload whose plugin cannot build its step, and keeps serving', async (t) => {
  const g = await startGateway(t, { files: { 'local/misbehave.mjs': MISBEHAVE }, policies: { 'bad.yaml': policy(['ok']) }, extraConfig: 'plugins: [./local/misbehave.mjs]' });
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  t.equal((await post(s, '/v1/completions', { prompt: 'x' })).status, 200);
  for (const m of ['throw', 'undefined', 'misspelt']) {
    g.write('policies/bad.yaml', policy([m]));
    const r = await g.gw.reload('test');
    t.equal(r.ok, false, `${m}: the reload is refused`);
    t.match(r.errors, [{ code: 'GW_ERR_CONFIG_PLUGIN_CREATE', message: `Plugin "misbehave" (${path.join(g.dir, 'local/misbehave.mjs')})`, file: path.join(g.dir, 'policies/bad.yaml'), line: 4 }]);
    t.equal((await post(s, '/v1/completions', { prompt: 'x' })).status, 200, `${m}: the last good config keeps serving`);
  }

  // docs/plugins.md: a plugin's code is imported once per process. An edit to it is not picked
  // up by a reload, even one that changes the plugin's params: restart to change code.
  g.write('local/misbehave.mjs', MISBEHAVE.replace('default: return { request: function misbehave() {} };', "default: return { request: () => ({ status: 418, body: { error: { code: 'GW_ERR_POLICY_REJECTED', message: 'new code' } } }) };"));
  g.write('policies/bad.yaml', policy(['ok-again']));
  const r = await g.gw.reload('test');
  t.equal(r.ok, true, 'the params edit reloads');
  t.equal((await post(s, '/v1/completions', { prompt: 'x' })).status, 200, 'with the code imported at start');
});
