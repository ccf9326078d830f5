/**
 * Plugins outside plugins/, named in gateway.config.yaml's `plugins:` list, end to end with real
 * processes: a folder plugin (the header-gate example from docs/plugins.md, verbatim but for its
 * import of `ghostgate/plugin`) and an npm package plugin (JavaScript in node_modules) that
 * changes the request body. `start`, `validate`, `explain` and `schema` all know them, a bad
 * params value is reported against the plugin's own schema, and a plugin that cannot load is a
 * located error that a reload refuses while the last good config keeps serving.
 */
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { startCli } from '../cli/run.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { collect, connect, open, until } from '../helpers/h2.ts';
import { docBlocks } from '../helpers/docs.ts';
import { ROOT } from '../helpers/proc.ts';

/** The header-gate example of docs/plugins.md, as a plugin outside this repository would write it. */
export function docsExample(): string {
  const code = docBlocks('docs/plugins.md', 'ts', '### Example: header-gate', '### Registering')[0];
  if (code === undefined || !code.includes('definePlugin')) throw new Error('docs/plugins.md has no header-gate example');
  return code.replaceAll("'../../core/plugin-api.ts'", "'ghostgate/plugin'");
}

const STAMP = `import { definePlugin, parsePointer } from 'ghostgate/plugin';
export default definePlugin({
  name: 'stamp',
  description: 'Set one body field to a fixed string.',
  paramsSchema: {
    type: 'object', additionalProperties: false, required: ['value'],
    properties: { value: { type: 'string', minLength: 1 }, pointer: { type: 'string', pattern: '^/', default: '/user' } },
  },
  create(params, ctx) {
    try { parsePointer(params.pointer); } catch (e) { throw ctx.error(e.message, 'pointer'); }
    return { request: function stamp(ex) { ex.setBody(params.pointer, params.value); } };
  },
});
`;

/** A folder plugin and a package plugin, the way an operator's checkout has them. */
function layOut(dir: string): void {
  mkdirSync(path.join(dir, 'local/header-gate'), { recursive: true });
  writeFileSync(path.join(dir, 'local/header-gate/index.ts'), docsExample());
  // `npm install ghostgate` next to the config: here a link to this checkout.
  mkdirSync(path.join(dir, 'node_modules/ghostgate-plugin-stamp'), { recursive: true });
  symlinkSync(ROOT, path.join(dir, 'node_modules/ghostgate'), 'dir');
  writeFileSync(path.join(dir, 'node_modules/ghostgate-plugin-stamp/package.json'), JSON.stringify({ name: 'ghostgate-plugin-stamp', type: 'module', exports: './index.js' }));
  writeFileSync(path.join(dir, 'node_modules/ghostgate-plugin-stamp/index.js'), STAMP);
}

const POLICY = [
  'name: external',
  'steps:',
  '  - use: header-gate',
  '    params: { header: x-team, values: [ml-infra] }',
  '  - use: stamp',
  '    params: { value: from-stamp }',
  '',
].join('\n');
const EXTRA = 'facts: { headers: [user-agent, x-team] }\nplugins: [./local/header-gate, ghostgate-plugin-stamp]';

t.test('a real gateway runs a folder plugin and a package plugin named in its config', async (t) => {
  const g = await startGatewayProcess(t, { setup: layOut, extraConfig: EXTRA, files: { 'policies/external.yaml': POLICY } });
  const s = await connect(g.url);
  t.teardown(() => s.destroy());

  const refused = await collect(open(s, '/v1/completions', { prompt: 'hi', stream: true }));
  t.equal(refused.status, 403, 'header-gate (folder plugin) answers a request without the header');
  t.match(JSON.parse(refused.text), { error: { code: 'GW_ERR_POLICY_REJECTED' } });

  const ok = await collect(open(s, '/v1/completions', { prompt: 'hi', stream: true }, { 'x-team': 'ml-infra' }));
  t.equal(ok.status, 200, 'an allowed request streams');
  t.ok(ok.complete && ok.events.at(-1) === '[DONE]', 'to the end');
  const seen = await (await fetch(`${g.model.url}/_requests`)).json() as Array<{ body: Record<string, unknown> }>;
  t.equal(seen.length, 1, 'only the allowed request reached the model');
  t.equal(seen[0]!.body.user, 'from-stamp', 'stamp (package plugin) changed the body the model received');
  t.equal(seen[0]!.body.prompt, 'hi');

  // A reload that names a plugin that does not exist is refused, located, naming the path; the
  // running config (both plugins) keeps serving.
  writeFileSync(g.configFile, readFileSync(g.configFile, 'utf8').replace('plugins: [./local/header-gate,', 'plugins: [./local/missing-gate, ./local/header-gate,'));
  g.child.kill('SIGHUP');
  const cfg = await until(async () => {
    const c = await (await fetch(`${g.adminUrl}/-/config`)).json() as { version: number; lastReload?: { ok: boolean; errors: Array<{ code: string; message: string; file: string; line: number }> } };
    return c.lastReload ? c : undefined;
  }, 30_000);
  t.equal(cfg.lastReload!.ok, false, 'the reload is refused');
  t.equal(cfg.lastReload!.errors[0]!.code, 'GW_ERR_CONFIG_PLUGIN_LOAD');
  t.match(cfg.lastReload!.errors[0]!.message, path.join(g.dir, 'local/missing-gate'), 'the message names the path');
  t.equal(cfg.lastReload!.errors[0]!.file, g.configFile, 'located in the config file');
  const still = await collect(open(s, '/v1/completions', { prompt: 'again' }, { 'x-team': 'ml-infra' }));
  t.equal(still.status, 200, 'the last good config keeps serving');
  const seen2 = await (await fetch(`${g.model.url}/_requests`)).json() as Array<{ body: Record<string, unknown> }>;
  t.equal(seen2.at(-1)!.body.user, 'from-stamp', 'with its plugins');
});

/** A config folder for the CLI commands (no gateway running). */
function configDir(t: { teardown(fn: () => void): void }, policy: string, plugins = '[./local/header-gate, ghostgate-plugin-stamp]'): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-ext-'));
  layOut(dir);
  mkdirSync(path.join(dir, 'policies'));
  writeFileSync(path.join(dir, 'policies/external.yaml'), policy);
  writeFileSync(path.join(dir, 'gateway.config.yaml'), [
    'upstreams: { local: { url: "http://127.0.0.1:9", protocol: h2c, pool: { warm: false } } }',
    'models: { ghost-small: { upstream: local } }',
    'facts: { headers: [user-agent, x-team] }',
    `plugins: ${plugins}`,
    'reload: { watch: false }',
    '',
  ].join('\n'));
  void t;
  return dir;
}

t.test('validate knows the plugins and checks params against their own schemas', async (t) => {
  const good = configDir(t, POLICY);
  const ok = startCli(t, ['validate', '--config', path.join(good, 'gateway.config.yaml')]);
  t.equal(await ok.exited, 0, ok.stderr());
  t.match(ok.stdout(), /OK \(1 upstreams, 1 models, 1 policies, 2 steps\)/);

  const bad = configDir(t, POLICY.replace('params: { value: from-stamp }', 'params: { value: 42, extra: true }'));
  const v = startCli(t, ['validate', '--config', path.join(bad, 'gateway.config.yaml')]);
  t.equal(await v.exited, 1);
  const err = v.stderr();
  t.match(err, /external\.yaml:6:\d+: GW_ERR_CONFIG_PLUGIN_PARAMS Invalid params for plugin "stamp": value: must be string/, 'the type its schema asks for, at file:line');
  t.match(err, /GW_ERR_CONFIG_PLUGIN_PARAMS Invalid params for plugin "stamp": \(top level\): unknown property "extra"/, 'its additionalProperties: false');

  // The main config fails its schema: the listed plugins still load, so their steps are
  // checked against their schemas instead of being called unknown.
  const broken = configDir(t, POLICY.replace('params: { value: from-stamp }', 'params: { value: 42 }'));
  writeFileSync(path.join(broken, 'gateway.config.yaml'), readFileSync(path.join(broken, 'gateway.config.yaml'), 'utf8') + 'nonsense: 1\n');
  const b = startCli(t, ['validate', '--config', path.join(broken, 'gateway.config.yaml')]);
  t.equal(await b.exited, 1);
  t.match(b.stderr(), /GW_ERR_CONFIG_SCHEMA \(top level\): unknown property "nonsense"/);
  t.match(b.stderr(), /GW_ERR_CONFIG_PLUGIN_PARAMS Invalid params for plugin "stamp": value: must be string/);
  t.notMatch(b.stderr(), /GW_ERR_CONFIG_UNKNOWN_PLUGIN/, 'no plugin is called unknown');

  const missing = configDir(t, POLICY, '[./local/nope, ghostgate-plugin-none]');
  const m = startCli(t, ['validate', '--config', path.join(missing, 'gateway.config.yaml')]);
  t.equal(await m.exited, 1);
  t.match(m.stderr(), /gateway\.config\.yaml:4:\d+: GW_ERR_CONFIG_PLUGIN_LOAD Cannot load plugin \.\/local\/nope: \S+\/local\/nope does not exist/);
  t.match(m.stderr(), /GW_ERR_CONFIG_PLUGIN_LOAD Cannot load plugin ghostgate-plugin-none: no package "ghostgate-plugin-none"/);
  t.match(m.stderr(), /GW_ERR_CONFIG_UNKNOWN_PLUGIN Unknown plugin "header-gate"/, 'and the steps that use them are reported too');

  // A module that is not a plugin, a name a built-in has, a package shipped as TypeScript.
  const odd = configDir(t, 'name: none\nsteps: []\n', '[./local/not-a-plugin.js, ./local/auth-again.js, ghostgate-plugin-ts]');
  mkdirSync(path.join(odd, 'node_modules/ghostgate-plugin-ts'));
  writeFileSync(path.join(odd, 'node_modules/ghostgate-plugin-ts/package.json'), JSON.stringify({ name: 'ghostgate-plugin-ts', type: 'module', main: 'index.ts' }));
  writeFileSync(path.join(odd, 'node_modules/ghostgate-plugin-ts/index.ts'), STAMP.replace("name: 'stamp'", "name: 'stamp-ts'").replace('create(params, ctx)', 'create(params: { pointer: string; value: string }, ctx: unknown)'));
  writeFileSync(path.join(odd, 'local/not-a-plugin.js'), 'export default { hello: 1 };\n');
  writeFileSync(path.join(odd, 'local/auth-again.js'), "import { definePlugin } from 'ghostgate/plugin';\nexport default definePlugin({ name: 'auth', description: 'x', paramsSchema: {}, create() { return {}; } });\n");
  const o = startCli(t, ['validate', '--config', path.join(odd, 'gateway.config.yaml')]);
  t.equal(await o.exited, 1);
  t.match(o.stderr(), /Cannot load plugin \.\/local\/not-a-plugin\.js: \S+not-a-plugin\.js: its name undefined is not a plugin name/);
  t.match(o.stderr(), /Cannot load plugin \.\/local\/auth-again\.js: \S+auth-again\.js: its name "auth" is a built-in plugin's/);
  t.match(o.stderr(), /Cannot load plugin ghostgate-plugin-ts: importing \S+index\.ts failed: .*node_modules/, 'Node strips no types under node_modules: a package plugin ships JavaScript');
});

t.test('explain runs them; schema and plugins list them', async (t) => {
  const dir = configDir(t, POLICY);
  const config = path.join(dir, 'gateway.config.yaml');
  writeFileSync(path.join(dir, 'req.json'), JSON.stringify({ model: 'ghost-small', prompt: 'hi' }));
  const e = startCli(t, ['explain', '--config', config, '--request', path.join(dir, 'req.json'), '-H', 'x-team: ml-infra', '--json']);
  t.equal(await e.exited, 0, e.stderr());
  const out = JSON.parse(e.stdout()) as { steps: Array<{ step: string; result: string }>; upstream: { body: Record<string, unknown> } };
  t.same(out.steps.map((s) => [s.step, s.result]), [['header-gate', 'ran'], ['stamp', 'ran']]);
  t.equal(out.upstream.body.user, 'from-stamp');

  const outDir = path.join(dir, 'schema');
  const s = startCli(t, ['schema', '--config', config, '--out', outDir]);
  t.equal(await s.exited, 0, s.stderr());
  const policy = JSON.parse(readFileSync(path.join(outDir, 'policy.schema.json'), 'utf8')) as { properties: { steps: { items: { properties: { use: { enum: string[] } }; allOf: Array<{ if: { properties: { use: { const: string } } }; then: { properties: { params: { required?: string[] } } } }> } } } };
  const items = policy.properties.steps.items;
  t.ok(items.properties.use.enum.includes('stamp') && items.properties.use.enum.includes('header-gate'), 'editors know both');
  t.same(items.allOf.find((x) => x.if.properties.use.const === 'stamp')!.then.properties.params.required, ['value'], 'with their params schema');

  const p = startCli(t, ['plugins', '--config', config]);
  t.equal(await p.exited, 0, p.stderr());
  t.match(p.stdout(), /^stamp\s+Set one body field to a fixed string\.  \[\S+node_modules\/ghostgate-plugin-stamp\/index\.js\]$/m, 'an out-of-tree plugin shows its file');
  t.match(p.stdout(), /^header-gate\s+Reject requests.*  \[\S+local\/header-gate\/index\.ts\]$/m);
  t.match(p.stdout(), /^auth\s+Verify the bearer token[^[]*$/m, 'a built-in shows none');

  // A listed plugin with a problem: `plugins` says which and why, at the list entry.
  writeFileSync(path.join(dir, 'local/broken.js'), "export default { name: 'broken', description: 'x', paramsSchema: { type: 'nope' }, create() { return {}; } };\n");
  writeFileSync(config, readFileSync(config, 'utf8').replace('plugins: [', 'plugins: [./local/broken.js, '));
  const b = startCli(t, ['plugins', '--config', config]);
  t.equal(await b.exited, 1);
  t.match(b.stderr(), /gateway\.config\.yaml:\d+:\d+: GW_ERR_CONFIG_PLUGIN_LOAD Cannot load plugin \.\/local\/broken\.js: \S+broken\.js: its paramsSchema does not compile/);
});
