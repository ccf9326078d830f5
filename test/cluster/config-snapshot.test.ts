/**
 * `--workers 2` with `reload.watch: false`: the workers run the config texts the primary read and
 * validated (a snapshot sent over IPC), never what is on disk when they load. A worker replaced
 * after a crash runs its sibling's config, with its version and fingerprint, when the files on
 * disk have changed since (a valid edit not reloaded, or an invalid one a reload refused); and a
 * file edited after the primary read it for a reload does not reach the workers. A reload every
 * worker refused is not the config a replacement gets.
 *
 * "After the primary read it" is made exact, without a time window, by a test plugin that edits a
 * policy file from inside the primary's validation (cluster.isPrimary), which runs after the
 * primary read the files and before any worker loads.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { clusterClient } from '../helpers/cluster.ts';
import { startGatewayProcess } from '../helpers/gateway-process.ts';
import { START_MS, until } from '../helpers/h2.ts';

/** The policy: a response header naming which config served the request. */
const policy = (cfg: string): string => [
  'name: default',
  'match: { paths: [/v1/completions] }',
  'steps:',
  '  - use: set-headers',
  `    params: { response: { x-cfg: ${cfg} } }`,
  '  - use: edit-while-validating',
  '',
].join('\n');

/**
 * Test plugin: while the cluster primary builds a runtime to validate a config, it writes the
 * edit waiting in pending-edit.json ({file, text}) beside it, once; it does nothing in a worker.
 */
const EDIT_PLUGIN = `import cluster from 'node:cluster';
import { existsSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
const pending = new URL('./pending-edit.json', import.meta.url);
export default {
  name: 'edit-while-validating',
  description: 'Test only: applies a pending file edit while the cluster primary validates.',
  paramsSchema: { type: 'object', additionalProperties: false, properties: {} },
  create() {
    if (cluster.isPrimary && existsSync(pending)) {
      const { file, text } = JSON.parse(readFileSync(pending, 'utf8'));
      unlinkSync(pending);
      writeFileSync(file, text);
    }
    return {};
  },
};
`;

const g = await startGatewayProcess(t, {
  args: ['--workers', '2'],
  extraConfig: 'plugins: [./edit-while-validating.mjs]',
  // No worker has GG_PRIMARY_ONLY: a config that reads it validates in the primary and fails in
  // every worker (test-only hook, core/cluster/worker.ts).
  env: { GG_PRIMARY_ONLY: 'ghost-small', GHOSTGATE_TEST_WORKER_ENV: JSON.stringify({ 1: { GG_PRIMARY_ONLY: null }, 2: { GG_PRIMARY_ONLY: null } }) },
  files: {
    'policies/default.yaml': policy('a'),
    // No policy (a comment only), but read and sent like any: 256 KiB of snapshot over IPC.
    'policies/bulk.yaml': `# ${'x'.repeat(256 * 1024)}\n`,
    'edit-while-validating.mjs': EDIT_PLUGIN,
  },
});
const c = clusterClient(g);
const policyFile = path.join(g.dir, 'policies/default.yaml');
const goodConfig = readFileSync(g.configFile, 'utf8');

interface ConfigView {
  policies: Array<{ steps: Array<{ use: string; params?: unknown }> }>;
  workers: Array<{ slot: number; pid: number; version: number; fingerprint: string }>;
}

/** SIGKILL the worker in `slot`; resolves with its replacement's pid once that one is ready. */
async function replace(slot: number): Promise<number> {
  const victim = (await c.ping()).workers.find((w) => w.slot === slot)!.pid;
  process.kill(victim, 'SIGKILL');
  return until(async () => {
    const p = await c.ping();
    const w = p.workers.find((x) => x.slot === slot);
    return p.workers.length === 2 && w && w.pid !== victim ? w.pid : undefined;
  }, START_MS);
}

/**
 * Both workers report the same version and fingerprint, worker 1 (whose /-/config is the
 * top-level answer) runs the policy setting `x-cfg: cfg`, and every request gets that header.
 */
async function bothRun(t: Test, cfg: string, fresh?: number): Promise<number> {
  const view = (await c.admin<ConfigView>('/-/config')).body;
  const [w1, w2] = view.workers;
  t.equal(view.workers.length, 2);
  t.equal(w1!.version, w2!.version, `both workers run version ${w1!.version}`);
  t.equal(w1!.fingerprint, w2!.fingerprint, 'both workers run the same texts (fingerprint)');
  t.match(view.policies[0]!.steps[0]!.params, { response: { 'x-cfg': cfg } }, `worker 1 runs the policy setting x-cfg: ${cfg}`);
  // The kernel spreads connections by hash: 16 reach both workers but with odds of 2 in 65,536.
  const answers = new Set<string>();
  for (let i = 0; i < 16; i++) {
    const r = await c.oneShot();
    answers.add(`${r.status} x-cfg: ${String(r.headers['x-cfg'])}`);
  }
  t.same([...answers], [`200 x-cfg: ${cfg}`], `every answer is a 200 with x-cfg: ${cfg}`);
  if (fresh !== undefined) t.ok((await c.ping()).workers.find((w) => w.pid === fresh)!.requests >= 1, 'the replacement served some of them');
  return w1!.version;
}

t.test('a replacement runs the running config, not a valid edit on disk that was never reloaded', async (t) => {
  const v = await bothRun(t, 'a');
  writeFileSync(policyFile, policy('d'));
  const fresh = await replace(1);
  t.equal(await bothRun(t, 'a', fresh), v, 'the replacement has its sibling\'s version');
});

t.test('a replacement runs the last good config when the files on disk are invalid', async (t) => {
  writeFileSync(g.configFile, goodConfig.replace('defaultModel: ghost-small', 'defaultModel: [ghost-small'));
  t.teardown(() => writeFileSync(g.configFile, goodConfig));
  const r = await c.admin<{ ok: boolean; workers: unknown[]; error: { code: string } }>('/-/reload', { method: 'POST' });
  t.equal(r.status, 400, 'the edit is refused');
  t.equal(r.body.error.code, 'GW_ERR_CONFIG_YAML');
  const v = await bothRun(t, 'a');
  const fresh = await replace(1);
  t.equal(await bothRun(t, 'a', fresh), v, 'the replacement started, with its sibling\'s version');
});

t.test('a reload runs what the primary validated, even if a file changes right after it read them', async (t) => {
  writeFileSync(g.configFile, goodConfig);
  writeFileSync(policyFile, policy('b'));
  writeFileSync(path.join(g.dir, 'pending-edit.json'), JSON.stringify({ file: policyFile, text: policy('c') }));
  const r = await c.admin<{ ok: boolean; version: number; workers: Array<{ ok: boolean; version: number }> }>('/-/reload', { method: 'POST' });
  t.equal(r.status, 200);
  t.same(r.body.workers.map((w) => [w.ok, w.version]), [[true, r.body.version], [true, r.body.version]], 'both workers took it, with one version');
  t.equal(readFileSync(policyFile, 'utf8'), policy('c'), 'the file changed while the primary validated');
  t.equal(await bothRun(t, 'b'), r.body.version, 'both workers run the texts the primary read and validated');
  // And a worker started now gets them too.
  const fresh = await replace(2);
  t.equal(await bothRun(t, 'b', fresh), r.body.version);
});

t.test('a reload every worker refused is not what a replacement runs', async (t) => {
  const v = await bothRun(t, 'b');
  writeFileSync(g.configFile, goodConfig.replace('defaultModel: ghost-small', 'defaultModel: ${GG_PRIMARY_ONLY}'));
  t.teardown(() => writeFileSync(g.configFile, goodConfig));
  const r = await c.admin<{ ok: boolean; workers: Array<{ ok: boolean; version: number; error?: { code: string } }> }>('/-/reload', { method: 'POST' });
  t.same(r.body.workers.map((w) => [w.ok, w.version, w.error?.code]), [[false, v, 'GW_ERR_CONFIG_ENV'], [false, v, 'GW_ERR_CONFIG_ENV']], 'the primary took it; no worker could');
  const fresh = await replace(1);
  t.equal(await bothRun(t, 'b', fresh), v, 'the replacement runs what its sibling runs, and started');
});
