/**
 * A newcomer's first hour, with real processes: `npm start`'s own config (the real default
 * gateway.config.yaml, ports from env) prints a dev API key and a dev token; the reference
 * client's example (client/README.md) runs against it; `ghostgate token` works and, when the
 * admin plane refuses, prints why. With real keys and `dev: false`, no credential is printed.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { spawnModelServer } from '../model-server/fixtures/spawn.ts';
import { spawnTracked, stopTracked } from '../helpers/proc.ts';
import { freePort, NODE_BIN, ROOT, startCli } from './run.ts';

/** Run a command to its end (bounded), its process killed by teardown if the test fails first. */
function run(t: { teardown(fn: () => unknown): void }, args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawnTracked(NODE_BIN, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => stopTracked(child, 0, 'SIGKILL'));
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, out, err })));
}

t.test('npm start (default config): dev API key + dev token in the banner; the client example runs; ghostgate token works', async (t) => {
  const env = { GHOSTGATE_PORT: String(await freePort()), GHOSTGATE_ADMIN_PORT: String(await freePort()), GHOSTGATE_MODEL_PORT: String(await freePort()) };
  const gw = startCli(t, ['start'], env);
  await gw.waitFor(/Try a streamed completion/);
  const banner = gw.stdout();
  const key = /dev API key (ggk_[A-Za-z0-9_-]+)/.exec(banner)?.[1];
  t.ok(key, 'the banner shows a dev API key');
  const token = /authorization: Bearer ([\w-]+\.[\w-]+\.[\w-]+)/.exec(banner)?.[1];
  t.ok(token, 'and a dev token in the curl');
  const url = `http://127.0.0.1:${env.GHOSTGATE_PORT}`;

  // The example from client/README.md, as `npm run -s client:example` runs it.
  const ex = await run(t, ['client/example.ts'], { GHOSTGATE_PORT: env.GHOSTGATE_PORT, GHOSTGATE_API_KEY: key! } /* follows the gateway's port variable */);
  t.equal(ex.code, 0, `example exits 0 (stderr: ${ex.err})`);
  t.match(ex.out, /^completion of "def fib\(": .+\n\[done\]\n\[cancelled after 1 event\]\n$/s, 'streams a completion, then cancels one');
  const wrong = await run(t, ['client/example.ts'], { GHOSTGATE_URL: url, GHOSTGATE_API_KEY: 'ggk_wrong' });
  t.equal(wrong.code, 1);
  t.match(wrong.err, /401 GW_ERR_AUTH_INVALID_CREDENTIAL/, 'a wrong key says so');

  // The banner's token works on the data plane.
  const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ model: 'ghost-small', prompt: 'x' }) });
  t.equal(r.status, 200, 'the banner token is accepted');

  // `ghostgate token` in dev mode asks the running gateway (its in-memory key) and works.
  const minted = await run(t, ['bin/ghostgate.ts', 'token', '--sub', 'alice', '--ttl', '10m'], env);
  t.equal(minted.code, 0, minted.err);
  t.equal(minted.err, '', 'no warning: the token works');
  const r2 = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${minted.out.trim()}` }, body: JSON.stringify({ model: 'ghost-small', prompt: 'x' }) });
  t.equal(r2.status, 200, 'the CLI token is accepted by the running gateway');

  // A refusal from the admin plane is printed with its reason, not only its status.
  const tooLong = await run(t, ['bin/ghostgate.ts', 'token', '--sub', 'alice', '--ttl', '8d'], env);
  t.not(tooLong.code, 0);
  t.match(tooLong.err, /^ghostgate token: admin answered 400 GW_ERR_REQ_INVALID_BODY: Invalid request body: "ttlSeconds" must be a whole number of seconds from 1 to 604800 \(7 days\), got 691200\n$/);
  t.equal(await gw.stop(), 0, 'SIGTERM: clean exit');
});

t.test('dev: false with real signing keys: the banner prints no token and no API key', async (t) => {
  const model = await spawnModelServer();
  t.teardown(() => model.stop());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-banner-'));
  writeFileSync(path.join(dir, 'k.pem'), generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const file = path.join(dir, 'gateway.config.yaml');
  writeFileSync(file, [
    'listen: { port: 0 }', 'admin: { port: 0 }',
    `upstreams: { local: { url: "${model.url}" } }`, 'models: { ghost-small: { upstream: local } }', 'policies: []',
    'auth:', '  dev: false', '  signingKeys: [{ kid: k1, alg: EdDSA, privateKey: { file: k.pem }, active: true }]',
  ].join('\n'));
  const gw = startCli(t, ['start', '--config', file]);
  await gw.waitFor(/Try a streamed completion/);
  const all = gw.stdout() + gw.stderr();
  t.notMatch(all, /eyJ[\w-]+\.[\w-]+\./, 'no token anywhere in the output');
  t.notMatch(all, /authorization: Bearer/i);
  t.notMatch(all, /dev API key|ggk_/, 'no API key');
  t.equal(await gw.stop(), 0);
});

t.test('the README\'s explain example: with --claims, the auth step passes and the later steps show', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-explain-'));
  const req = path.join(dir, 'req.json');
  writeFileSync(req, '{"model":"ghost","prompt":"def fib("}');
  const withClaims = await run(t, ['bin/ghostgate.ts', 'explain', '--request', req, '--claims', '{"sub":"alice","plan":"pro"}'], {});
  t.equal(withClaims.code, 0, withClaims.err);
  t.match(withClaims.out, /1\. auth\s+ran\s+\[default\] policies\/default\.yaml:9/);
  t.match(withClaims.out, /2\. set-headers\s+ran/);
  t.match(withClaims.out, /route\s+model=ghost-small upstream=local upstreamModel=ghost-small/);
  t.match(withClaims.out, /set\s+\/model\s+"ghost" → "ghost-small"/);
  const without = await run(t, ['bin/ghostgate.ts', 'explain', '--request', req], {});
  t.match(without.out, /401|GW_ERR_AUTH_MISSING_TOKEN/, 'without --claims: the auth step\'s 401');
  t.notMatch(without.out, /set-headers\s+ran/);
});

t.test('ghostgate token in dev mode with admin.credential: the CLI sends the credential it reads from the config', async (t) => {
  const model = await spawnModelServer();
  t.teardown(() => model.stop());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-token-'));
  writeFileSync(path.join(dir, 'admin.secret'), 'an-admin-secret-for-the-test\n');
  const file = path.join(dir, 'gateway.config.yaml');
  const adminPort = await freePort();
  writeFileSync(file, [
    'listen: { port: 0 }', `admin: { port: ${adminPort}, credential: { file: admin.secret } }`,
    `upstreams: { local: { url: "${model.url}" } }`, 'models: { ghost-small: { upstream: local } }', 'policies: []', 'auth: { dev: true }',
  ].join('\n'));
  const gw = startCli(t, ['start', '--config', file]);
  await gw.waitFor(/Try a streamed completion/);
  const minted = await run(t, ['bin/ghostgate.ts', 'token', '--sub', 'alice', '--config', file], {});
  t.equal(minted.code, 0, minted.err);
  t.match(minted.out.trim(), /^[\w-]+\.[\w-]+\.[\w-]+$/, 'a token');
  // The same config but another secret file: what an operator with a stale secret would run.
  writeFileSync(path.join(dir, 'stale.secret'), 'not-the-running-secret\n');
  const stale = path.join(dir, 'stale.yaml');
  writeFileSync(stale, readFileSync(file, 'utf8').replace('admin.secret', 'stale.secret'));
  const refused = await run(t, ['bin/ghostgate.ts', 'token', '--sub', 'alice', '--config', stale], {});
  t.not(refused.code, 0);
  t.match(refused.err, /admin answered 401 GW_ERR_ADMIN_UNAUTHORIZED/, 'a wrong credential: the admin plane\'s code and reason');
  t.equal(await gw.stop(), 0);
});
