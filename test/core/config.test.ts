/** Config: env interpolation, validation with file:line for every problem, secrets never shown. */
import { execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { loadConfig, recordingReader, snapshotReader } from '../../core/config/load.ts';
import { ConfigErrors } from '../../core/errors.ts';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post } from '../helpers/h2.ts';
import { spawnModelServer } from '../model-server/fixtures/spawn.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const NODE = path.join(ROOT, 'node_modules/.bin/node');

function tree(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-cfg-'));
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeFileSync(path.join(dir, rel), text);
  }
  return dir;
}

const base = 'upstreams:\n  local: { url: "http://127.0.0.1:8000" }\nmodels:\n  m: { upstream: local }\n';

t.test('${ENV} and ${ENV:-default} interpolation, with types coerced', async (t) => {
  const dir = tree({ 'g.yaml': 'listen:\n  port: ${GG_TEST_PORT:-8181}\n  host: "${GG_TEST_HOST}"\n' + base });
  const c = loadConfig(path.join(dir, 'g.yaml'), { GG_TEST_HOST: '0.0.0.0' }).config;
  t.equal(c.listen.port, 8181, 'default used, coerced to a number');
  t.equal(c.listen.host, '0.0.0.0');
  t.equal(loadConfig(path.join(dir, 'g.yaml'), { GG_TEST_HOST: 'h', GG_TEST_PORT: '9999' }).config.listen.port, 9999);
  try {
    loadConfig(path.join(dir, 'g.yaml'), {});
    t.fail('should throw');
  } catch (e) {
    t.ok(e instanceof ConfigErrors);
    t.match((e as ConfigErrors).errors[0], { code: 'GW_ERR_CONFIG_ENV', location: { line: 3 } });
  }
  const flow = tree({ 'g.yaml': 'listen: { port: ${GG_TEST_PORT:-8181} }\n' + base });
  t.throws(() => loadConfig(path.join(flow, 'g.yaml'), {}), { errors: [{ code: 'GW_ERR_CONFIG_YAML', message: /quote \$\{VAR\}/ }] }, 'an unquoted ${} in a flow map gets a hint, and only one error');
  t.equal(loadConfig(path.join(tree({ 'g.yaml': 'listen: { port: "${GG_TEST_PORT:-8181}" }\n' + base }), 'g.yaml'), {}).config.listen.port, 8181, 'quoted works');
});

t.test('defaults are applied and derived', async (t) => {
  const dir = tree({ 'g.yaml': base });
  const c = loadConfig(path.join(dir, 'g.yaml'), {}).config;
  t.equal(c.listen.port, 8080);
  t.equal(c.upstreams.local!.protocol, 'h2c');
  t.equal(c.upstreams.local!.pool.size, 2);
  t.equal(c.http2.maxConcurrentStreams, 256);
  t.equal(c.http2.streamResetBurst, 10_000, 'reset-flood bucket far above Node\'s default, for editors that cancel');
});

t.test('a snapshot loads the texts a load read, without the disk (what cluster workers run)', async (t) => {
  const secret = 'sk-in-a-file-' + 'q'.repeat(20);
  const dir = tree({
    'g.yaml': base.replace('{ url: "http://127.0.0.1:8000" }', '{ url: "http://127.0.0.1:8000", credential: { secret: { file: key.txt } } }') + 'policies: ["${GG_POLICY_DIR:-policies}/*.yaml"]\n',
    'policies/a.yaml': 'name: a\nsteps:\n  - use: set-headers\n    params: { response: { x-cfg: a } }\n',
    'key.txt': secret,
  });
  const file = path.join(dir, 'g.yaml');
  const rec = recordingReader();
  const first = loadConfig(file, {}, rec);
  t.same(Object.keys(rec.snapshot.files).sort(), [file, path.join(dir, 'policies/a.yaml')], 'the main file and the policy file it names');
  t.notMatch(JSON.stringify(rec.snapshot), secret, 'a secret file is in the snapshot as a digest only');
  rmSync(dir, { recursive: true });
  const again = loadConfig(file, {}, snapshotReader(JSON.parse(JSON.stringify(rec.snapshot))));
  t.equal(again.fingerprint, first.fingerprint, 'same fingerprint, the secret file included, with the folder gone');
  t.same(again.policies.map((p) => p.policy.steps[0]!.params), [{ response: { 'x-cfg': 'a' } }]);
  t.same(again.config, first.config);
  // A worker whose environment names other files than the primary's: an error, never a crash or an empty policy list.
  t.throws(() => loadConfig(file, { GG_POLICY_DIR: 'elsewhere' }, snapshotReader(rec.snapshot)),
    { errors: [{ code: 'GW_ERR_CONFIG_READ', message: /elsewhere\/\*\.yaml: ENOENT \(not in the config snapshot\)/ }] });
});

t.test('ghostgate validate lists every problem with file:line and exits 1', async (t) => {
  const dir = tree({
    'g.yaml': [
      'listen: { port: 99999 }',
      'upstreams:',
      '  local: { url: "http://127.0.0.1:8000", protcol: h2c }',
      'models:',
      '  m: { upstream: nowhere }',
      'policies: [policies/*.yaml]',
    ].join('\n'),
    'policies/a.yaml': 'name: a\nsteps:\n  - use: set-headers\n',
  });
  const r = await run(NODE, [path.join(ROOT, 'bin/ghostgate.ts'), 'validate', '--config', path.join(dir, 'g.yaml')]).catch((e: { code: number; stderr: string }) => e);
  t.equal((r as { code: number }).code, 1);
  const err = (r as { stderr: string }).stderr;
  t.match(err, /g\.yaml:1:\d+: GW_ERR_CONFIG_SCHEMA listen\.port: must be <= 65535/);
  t.match(err, /g\.yaml:3:\d+: GW_ERR_CONFIG_SCHEMA upstreams\.local: unknown property "protcol"/);
});

t.test('cross-reference and policy problems are all reported together', async (t) => {
  const dir = tree({
    'g.yaml': base.replace('upstream: local', 'upstream: nowhere') + 'policies: [policies/*.yaml]\n',
    'policies/a.yaml': 'name: a\nmatch: { models: [ghost-huge] }\nsteps: []\n',
  });
  const r = await run(NODE, [path.join(ROOT, 'bin/ghostgate.ts'), 'validate', '--config', path.join(dir, 'g.yaml')]).catch((e: { code: number; stderr: string }) => e);
  const err = (r as { stderr: string }).stderr;
  t.match(err, /g\.yaml:4:\d+: GW_ERR_CONFIG_UNKNOWN_UPSTREAM Unknown upstream "nowhere"/);
  t.match(err, /a\.yaml:2:\d+: GW_ERR_CONFIG_UNKNOWN_MODEL Unknown model "ghost-huge"/);
});

t.test('the bundled default config validates', async (t) => {
  const r = await run(NODE, [path.join(ROOT, 'bin/ghostgate.ts'), 'validate']);
  t.match(r.stdout, /gateway\.config\.yaml: OK/);
});

t.test('key swap: the upstream gets its own key, never the client\'s; the key never shows', async (t) => {
  const secret = 'sk-upstream-' + 'x7Q9'.repeat(6);
  const model = await spawnModelServer(['--key', secret, '--ttft-ms', '5', '--token-ms', '1', '--tokens', '3']);
  t.teardown(() => model.stop());
  const g = await startGateway(t, {
    noModel: true,
    env: { ...process.env, GG_TEST_UPSTREAM_KEY: secret },
    upstreamsYaml: () => '',
    extraConfig: `upstreams:\n  local:\n    url: ${model.url}\n    credential: { secret: { env: GG_TEST_UPSTREAM_KEY } }\nmodels:\n  ghost-small: { upstream: local }\n`,
  });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { authorization: 'Bearer client-token-123', 'x-request-id': 'swap-1' });
  t.equal(r.status, 200, 'the upstream accepted our key');
  const reqs = await (await fetch(`${model.url}/_requests`)).json() as Array<{ id: string; headers: Record<string, string> }>;
  const fwd = reqs.find((x) => x.id === 'swap-1')!;
  t.equal(fwd.headers.authorization, `Bearer ${secret}`, 'upstream key added');
  t.notMatch(JSON.stringify(fwd.headers), /client-token-123/, 'client token not forwarded');
  // Now every place an operator or client could see: none has the key.
  await post(s, '/v1/completions', { model: 'nope' });
  await post(s, '/v1/completions', '{bad');
  await model.stop();
  await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' });
  const places = [
    r.text,
    await (await fetch(`${g.adminUrl}/-/config`)).text(),
    await (await fetch(`${g.adminUrl}/metrics`)).text(),
    await (await fetch(`${g.adminUrl}/-/upstreams`)).text(),
    g.logs.join('\n'),
  ];
  for (const p of places) t.notMatch(p, secret.slice(0, 16), 'the key appears nowhere');
});
