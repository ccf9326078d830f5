/**
 * `ghostgate apikey new` makes a key and its API-keys-file entry; a gateway reading that file
 * exchanges the key for a token carrying the entry's claims (sha256 and scrypt forms).
 */
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { startCli } from './run.ts';

t.test('apikey new --append: the key works at POST /v1/token with its claims; only hashes are written', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-apikey-'));
  const file = path.join(dir, 'secrets', 'api-keys.yaml');
  const alice = startCli(t, ['apikey', 'new', '--sub', 'alice', '--claim', 'plan=pro', '--claim', 'features=["fim"]', '--append', file]);
  t.equal(await alice.exited, 0, alice.stderr());
  const bob = startCli(t, ['apikey', 'new', '--sub', 'bob', '--scrypt', '--id', 'bob1', '--append', file]);
  t.equal(await bob.exited, 0, bob.stderr());
  const aliceKey = alice.stdout().trim();
  const bobKey = bob.stdout().trim();
  t.match(aliceKey, /^ggk_[A-Za-z0-9_-]{43}$/, 'stdout is the key alone');
  t.match(bobKey, /^bob1\.[A-Za-z0-9_-]{43}$/);
  const text = readFileSync(file, 'utf8');
  t.notMatch(text, aliceKey.slice(4), 'the file holds no key');
  t.notMatch(text, bobKey.slice(5));
  t.equal(statSync(file).mode & 0o777, 0o600, 'created readable by its owner only');

  const g = await startGateway(t, {
    files: { 'secrets/api-keys.yaml': text },
    extraConfig: 'auth: { dev: true, credentials: { apiKeys: { file: secrets/api-keys.yaml } } }',
  });
  const exchange = (key: string): Promise<Response> => fetch(`${g.url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${key}` } });
  for (const [who, key, claims] of [['alice', aliceKey, { sub: 'alice', plan: 'pro', features: ['fim'] }], ['bob', bobKey, { sub: 'bob' }]] as const) {
    const r = await exchange(key);
    t.equal(r.status, 200, `${who}: exchanged`);
    const { token } = await r.json() as { token: string };
    t.match(await g.gw.runtime.auth!.verify(token), claims, `${who}: the token carries the entry's claims`);
  }
  t.equal((await exchange(`${aliceKey}x`)).status, 401, 'another key is refused');

  const printed = startCli(t, ['apikey', 'new', '--sub', 'carol']);
  t.equal(await printed.exited, 0);
  t.match(printed.stdout(), /^# .*\nggk_[\w-]{43}\n# .*\n- sub: "carol"\n  hash: sha256:[0-9a-f]{64}\n$/, 'without --append: the key and the entry to add');
  const bad = startCli(t, ['apikey', 'new']);
  t.equal(await bad.exited, 2);
  t.match(bad.stderr(), /--sub is required\nusage: ghostgate apikey new/);
});
