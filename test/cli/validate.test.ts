/**
 * `ghostgate validate` reports every problem it can find in one run, by stage: YAML errors of
 * every file, then schema errors of every file, then references, then what building the runtime
 * finds (unknown plugins, params, conditions, secrets), as far as each file allows.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { startCli } from './run.ts';

function project(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-validate-'));
  mkdirSync(path.join(dir, 'policies'));
  for (const [rel, text] of Object.entries(files)) writeFileSync(path.join(dir, rel), text);
  return path.join(dir, 'gateway.config.yaml');
}

const brokenPolicies = {
  'policies/a.yaml': 'name: a\nsteps: [ { use: auth\n',                     // YAML: unclosed flow
  'policies/b.yaml': 'name: b\n  steps: []\n bad: indent\n',                 // YAML: bad indentation
  'policies/c.yaml': 'name: c\nsteps: []\ncolour: blue\n',                   // schema: unknown key
  'policies/d.yaml': 'name: d\nmatch: { models: [gpt-17] }\nsteps: []\n',    // reference: unknown model
  'policies/e.yaml': 'name: e\nsteps:\n  - use: nope\n  - use: strip-params\n    params: { remove: 7 }\n', // runtime: plugin, params
};

/** Problems as `file CODE`, in the order printed; `lines` as printed, paths shortened to the file's name. */
async function validate(t: Test, file: string): Promise<{ code: number | string; problems: string[]; header: string; lines: string[] }> {
  const p = startCli(t, ['validate', '--config', file]);
  const code = await p.exited;
  const [header = '', ...lines] = p.stderr().trim().split('\n');
  return {
    code, header,
    problems: lines.map((l) => { const m = /^\s+(\S+?):(?:\d+:)*\s*(GW_ERR_\w+)/.exec(l); return m ? `${path.basename(m[1]!)} ${m[2]}` : `?? ${l}`; }),
    lines: lines.map((l) => l.trim().replace(/^\S*\//, '')),
  };
}

t.test('a valid main config: every policy file\'s problems, every stage, one run', async (t) => {
  const file = project({
    'gateway.config.yaml': 'upstreams: { local: { url: "http://127.0.0.1:9" } }\nmodels: { ghost-small: { upstream: local } }\nauth: { dev: true, credentials: { apiKeys: { file: missing-keys.yaml } } }\n',
    ...brokenPolicies,
  });
  const r = await validate(t, file);
  t.equal(r.code, 1);
  t.match(r.header, /: 7 problems$/);
  t.same(r.problems, [
    'a.yaml GW_ERR_CONFIG_YAML',
    'b.yaml GW_ERR_CONFIG_YAML',
    'c.yaml GW_ERR_CONFIG_SCHEMA',
    'd.yaml GW_ERR_CONFIG_UNKNOWN_MODEL',
    // Then building the runtime from what is valid: the secret the auth section reads, the steps.
    'gateway.config.yaml GW_ERR_CONFIG_SECRET',
    'e.yaml GW_ERR_CONFIG_UNKNOWN_PLUGIN',
    'e.yaml GW_ERR_CONFIG_PLUGIN_PARAMS',
  ], 'YAML of every file, then schema, then references, then the runtime');
});

t.test('a main config with a reference error: the policies are still checked, steps too', async (t) => {
  const file = project({
    'gateway.config.yaml': 'upstreams: { local: { url: "http://127.0.0.1:9" } }\nmodels: { ghost-small: { upstream: nowhere } }\n',
    ...brokenPolicies,
  });
  const r = await validate(t, file);
  t.equal(r.code, 1);
  t.same(r.problems, [
    'a.yaml GW_ERR_CONFIG_YAML',
    'b.yaml GW_ERR_CONFIG_YAML',
    'c.yaml GW_ERR_CONFIG_SCHEMA',
    'gateway.config.yaml GW_ERR_CONFIG_UNKNOWN_UPSTREAM',
    'd.yaml GW_ERR_CONFIG_UNKNOWN_MODEL',
    'e.yaml GW_ERR_CONFIG_UNKNOWN_PLUGIN',
    'e.yaml GW_ERR_CONFIG_PLUGIN_PARAMS',
  ]);
});

t.test('a main config with a schema error, or a YAML error: the policy files are still checked', async (t) => {
  const schema = await validate(t, project({
    'gateway.config.yaml': 'listen: { prot: 1 }\nupstreams: { local: { url: "http://127.0.0.1:9" } }\nmodels: { ghost-small: { upstream: local } }\n',
    ...brokenPolicies,
  }));
  t.same(schema.problems, [
    'a.yaml GW_ERR_CONFIG_YAML',
    'b.yaml GW_ERR_CONFIG_YAML',
    'gateway.config.yaml GW_ERR_CONFIG_SCHEMA',
    'c.yaml GW_ERR_CONFIG_SCHEMA',
    'e.yaml GW_ERR_CONFIG_UNKNOWN_PLUGIN',
    'e.yaml GW_ERR_CONFIG_PLUGIN_PARAMS',
  ], 'schema error in the main file');
  const yaml = await validate(t, project({
    'gateway.config.yaml': 'upstreams: { local: { url: "http://127.0.0.1:9" }\nmodels: { ghost-small: { upstream: local } }\npolicies: [policies/c.yaml]\n',
    ...brokenPolicies,
  }));
  t.same(yaml.problems, ['gateway.config.yaml GW_ERR_CONFIG_YAML', 'c.yaml GW_ERR_CONFIG_SCHEMA'], 'YAML error in the main file: the policies it lists are checked');
});

t.test('a valid config: OK, exit 0', async (t) => {
  const p = startCli(t, ['validate', '--config', project({ 'gateway.config.yaml': 'upstreams: { local: { url: "http://127.0.0.1:9" } }\nmodels: { ghost-small: { upstream: local } }\n', 'policies/p.yaml': 'name: p\nsteps: [{ use: strip-params, params: { remove: [/logprobs] } }]\n' })]);
  t.equal(await p.exited, 0);
  t.match(p.stdout(), /OK \(1 upstreams, 1 models, 1 policies, 1 steps\)/);
});

// Steps whose plugin finds the problem itself, at create time (a name the config must declare, a
// header it may not set), and a disabled policy's step: checked in the same run as the rest.
const createTimePolicy = {
  'policies/f.yaml': [
    'name: f',
    'steps:',
    '  - use: traffic-split',
    '    params: { targets: [{ upstream: local, weight: 1 }, { upstream: east-z, weight: 1 }] }',
    '  - use: set-headers',
    '    params: { upstream: { host: x } }',
    '  - use: model-rewrite',
    '    params: { map: { a: ghost-small, b: gpt-9 } }',
    '  - use: auth',
    '',
  ].join('\n'),
  'policies/g.yaml': 'name: g\nenabled: false\nsteps:\n  - use: mirror\n    params: { upstream: shadow, percent: 5 }\n',
};

t.test('plugins\' own checks (create time) in the same run as a broken main config\'s references', async (t) => {
  const r = await validate(t, project({
    'gateway.config.yaml': 'upstreams: { local: { url: "http://127.0.0.1:9" } }\nmodels: { ghost-small: { upstream: nowhere } }\nauth: { dev: true }\n',
    ...brokenPolicies,
    ...createTimePolicy,
  }));
  t.equal(r.code, 1);
  t.match(r.header, /: 11 problems$/);
  t.same(r.lines, [
    'a.yaml:3:1: GW_ERR_CONFIG_YAML YAML syntax error: Flow map in block collection must be sufficiently indented and end with a }',
    'b.yaml:1:7: GW_ERR_CONFIG_YAML YAML syntax error: Nested mappings are not allowed in compact mappings',
    'c.yaml:1:1: GW_ERR_CONFIG_SCHEMA (top level): unknown property "colour"',
    'gateway.config.yaml:2:36: GW_ERR_CONFIG_UNKNOWN_UPSTREAM Unknown upstream "nowhere"',
    'd.yaml:2:19: GW_ERR_CONFIG_UNKNOWN_MODEL Unknown model "gpt-17"',
    'e.yaml:3:10: GW_ERR_CONFIG_UNKNOWN_PLUGIN Unknown plugin "nope" (known: ab-test, auth, logit-bias, mirror, model-rewrite, rate-limit, set-headers, set-params, strip-params, supersede, traffic-split, version-gate)',
    'e.yaml:5:23: GW_ERR_CONFIG_PLUGIN_PARAMS Invalid params for plugin "strip-params": remove: must be array',
    'f.yaml:4:13: GW_ERR_CONFIG_PLUGIN_PARAMS Invalid params for plugin "traffic-split": targets[1].upstream: unknown upstream "east-z" (configured: local)',
    'f.yaml:6:13: GW_ERR_CONFIG_PLUGIN_PARAMS Invalid params for plugin "set-headers": host: header "host" is managed by the gateway and cannot be set by a policy',
    'f.yaml:8:13: GW_ERR_CONFIG_PLUGIN_PARAMS Invalid params for plugin "model-rewrite": map.b: "gpt-9" is not a configured model (known: ghost-small)',
    'g.yaml:5:13: GW_ERR_CONFIG_PLUGIN_PARAMS Invalid params for plugin "mirror": upstream: unknown upstream "shadow" (configured: local)',
  ], 'every problem, each with file:line and the path inside the file');
});

t.test('a valid main config: plugins\' own checks of every policy, a disabled one too', async (t) => {
  const r = await validate(t, project({
    'gateway.config.yaml': 'upstreams: { local: { url: "http://127.0.0.1:9" } }\nmodels: { ghost-small: { upstream: local } }\nauth: { dev: true, credentials: { apiKeys: { file: missing-keys.yaml } } }\n',
    ...createTimePolicy,
  }));
  t.same(r.problems, [
    'gateway.config.yaml GW_ERR_CONFIG_SECRET',
    'f.yaml GW_ERR_CONFIG_PLUGIN_PARAMS',
    'f.yaml GW_ERR_CONFIG_PLUGIN_PARAMS',
    'f.yaml GW_ERR_CONFIG_PLUGIN_PARAMS',
    'g.yaml GW_ERR_CONFIG_PLUGIN_PARAMS',
  ], 'an auth section that fails to compile is no "auth is not configured" for the auth step');
});

t.test('a main file that does not parse: plugins\' checks that need no names still run, names pass', async (t) => {
  const r = await validate(t, project({
    'gateway.config.yaml': 'upstreams: { local: { url: "http://127.0.0.1:9" }\nmodels: { ghost-small: { upstream: local } }\npolicies: [policies/f.yaml]\n',
    ...createTimePolicy,
  }));
  t.same(r.problems, ['gateway.config.yaml GW_ERR_CONFIG_YAML', 'f.yaml GW_ERR_CONFIG_PLUGIN_PARAMS']);
  t.match(r.lines[1], /header "host" is managed by the gateway/);
});
