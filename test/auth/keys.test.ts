/** Signing keys: formats, rotation with tokens of both keys live, JWKS, dev mode, config errors. */
import t from 'tap';
import { caught, harness, makeKey, signingEntry } from './helpers.ts';

t.test('rotation: old tokens verify until the old key is removed; new tokens use the new key', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const k1 = await makeKey('k1');
  const k2 = await makeKey('k2', 'ES256');

  // Day 0: k1 signs.
  const v1 = await h.compile({ signingKeys: [signingEntry(h, k1)] });
  const old = await v1.mint({ sub: 'alice' });
  t.equal(JSON.parse(Buffer.from(old.token.split('.')[0], 'base64url').toString()).kid, 'k1');

  // Day 1: add k2 as the signer, keep k1 (as a verify-only public key).
  const v2 = await h.compile({ signingKeys: [signingEntry(h, k2, { active: true, form: 'jwk' }), signingEntry(h, k1, { publicOnly: true })] }, v1);
  v1.close();
  const fresh = await v2.mint({ sub: 'alice' });
  t.equal(JSON.parse(Buffer.from(fresh.token.split('.')[0], 'base64url').toString()).kid, 'k2', 'the active key signs');
  t.match(await v2.verify(old.token), { sub: 'alice' }, 'token from the retired key still verifies');
  t.match(await v2.verify(fresh.token), { sub: 'alice' }, 'token from the new key verifies');
  const jwks = v2.jwks().keys as Array<Record<string, unknown>>;
  t.same(jwks.map((k) => [k.kid, k.alg, k.use]), [['k2', 'ES256', 'sig'], ['k1', 'EdDSA', 'sig']], 'JWKS publishes both');
  for (const k of jwks) t.notOk('d' in k, 'no private member in the JWKS');

  // Day 2: the old tokens have expired; drop k1.
  const v3 = await h.compile({ signingKeys: [signingEntry(h, k2, { form: 'jwk' })] }, v2);
  t.equal((await caught(() => v3.verify(old.token))).code, 'GW_ERR_AUTH_UNKNOWN_KEY', 'removed key no longer verifies (even though the token was cached)');
  t.ok(await v3.verify(fresh.token));
  t.same(v3.jwks().keys.map((k) => (k as { kid: string }).kid), ['k2']);
});

t.test('without active: the first key with a privateKey signs; PEM public keys accepted', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const a = await makeKey('a');
  const b = await makeKey('b');
  const auth = await h.compile({ signingKeys: [signingEntry(h, a, { publicOnly: true, form: 'pem' }), signingEntry(h, b)] });
  const { token } = await auth.mint({ sub: 'x' });
  t.equal(JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString()).kid, 'b');
});

t.test('keys from the environment', async (t) => {
  const h = harness();
  t.teardown(() => { h.dir.remove(); delete process.env.GG_TEST_SIGNING_KEY; });
  const k = await makeKey('envkey');
  process.env.GG_TEST_SIGNING_KEY = k.privatePem;
  const auth = await h.compile({ signingKeys: [{ kid: 'envkey', privateKey: { env: 'GG_TEST_SIGNING_KEY' } }] });
  t.ok(await auth.verify((await auth.mint({ sub: 'x' })).token));
  t.same(auth.files, [], 'env secrets are not files');
});

t.test('only verify keys: verification works, exchange and mint are not configured', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const k = await makeKey('k');
  const auth = await h.compile({ signingKeys: [signingEntry(h, k, { publicOnly: true })] });
  t.equal((await caught(() => auth.mint({ sub: 'x' }))).code, 'GW_ERR_AUTH_NOT_CONFIGURED');
  t.equal((await caught(() => auth.exchange({ headers: {}, body: {}, ip: '::1' }))).code, 'GW_ERR_AUTH_NOT_CONFIGURED');
});

t.test('dev mode: ephemeral key, a warning, and the key survives reloads', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const a = await h.compile({ dev: true });
  t.ok(h.log.lines.some((l) => l.level === 'warn' && /ephemeral/.test(l.msg ?? '')), 'warns that tokens die with the process');
  const { token } = await a.mint({ sub: 'dev' });
  t.ok(await a.verify(token));
  const warns = h.log.lines.filter((l) => l.level === 'warn').length;
  const b = await h.compile({ dev: true, tokenTtl: '10m' }, a);
  t.ok(await b.verify(token), 'same ephemeral key after reload');
  t.equal(h.log.lines.filter((l) => l.level === 'warn').length, warns, 'no second warning');
  const other = await h.compile({ dev: true });
  t.equal((await caught(() => other.verify(token))).code, 'GW_ERR_AUTH_UNKNOWN_KEY', 'a fresh process has a fresh key');
  t.equal((a.jwks().keys[0] as { kty: string; crv: string }).crv, 'Ed25519');
});

t.test('config errors are located and name no key material', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const k = await makeKey('k');
  const ec = await makeKey('ec', 'ES256');
  const secrets = [k.privatePem, String(k.privateJwk.d), ec.privatePem, String(ec.privateJwk.d)];
  const bad: Array<[string, Record<string, unknown>, string, RegExp]> = [
    ['no keys, no dev', {}, 'GW_ERR_CONFIG_INVALID', /auth\.signingKeys: at least one key/],
    ['two active', { signingKeys: [signingEntry(h, k, { active: true }), { ...signingEntry(h, ec, { active: true }), kid: 'ec' }] }, 'GW_ERR_CONFIG_INVALID', /only one key may be active/],
    ['duplicate kid', { signingKeys: [signingEntry(h, k), signingEntry(h, k)] }, 'GW_ERR_CONFIG_INVALID', /kid "k" is used twice/],
    ['active public key', { signingKeys: [{ ...signingEntry(h, k, { publicOnly: true }), active: true }] }, 'GW_ERR_CONFIG_INVALID', /cannot be active/],
    ['type mismatch', { signingKeys: [{ ...signingEntry(h, ec), alg: 'EdDSA' }] }, 'GW_ERR_CONFIG_INVALID', /does not match alg EdDSA/],
    ['public key given as privateKey', { signingKeys: [{ kid: 'k', privateKey: { file: h.dir.write('pub.pem', k.publicPem) } }] }, 'GW_ERR_CONFIG_INVALID', /holds a public key/],
    ['private key given as publicKey', { signingKeys: [{ kid: 'k', publicKey: { file: h.dir.write('priv.pem', k.privatePem) } }] }, 'GW_ERR_CONFIG_INVALID', /holds a private key/],
    ['private JWK given as publicKey', { signingKeys: [{ kid: 'k', publicKey: { file: h.dir.write('priv.jwk', k.privateJwk) } }] }, 'GW_ERR_CONFIG_INVALID', /holds a private key/],
    ['JWK kid disagrees', { signingKeys: [{ kid: 'k', privateKey: { file: h.dir.write('other.jwk', { ...k.privateJwk, kid: 'zz' }) } }] }, 'GW_ERR_CONFIG_INVALID', /has kid "zz"/],
    ['garbage key file', { signingKeys: [{ kid: 'k', privateKey: { file: h.dir.write('junk.pem', `-----BEGIN PRIVATE KEY-----\n${k.privatePem.slice(40, 70)}\n-----END PRIVATE KEY-----`) } }] }, 'GW_ERR_CONFIG_INVALID', /is not a valid private key/],
    ['missing file', { signingKeys: [{ kid: 'k', privateKey: { file: 'nope.pem' } }] }, 'GW_ERR_CONFIG_SECRET', /nope\.pem/],
    ['both private and public', { signingKeys: [{ ...signingEntry(h, k), publicKey: { file: 'x' } }] }, 'GW_ERR_CONFIG_INVALID', /not both/],
    ['unknown property', { signingKey: [] }, 'GW_ERR_CONFIG_SCHEMA', /must NOT have additional properties/],
    ['bad ttl', { dev: true, tokenTtl: '5' }, 'GW_ERR_CONFIG_INVALID', /tokenTtl/],
    ['ttl over 24h', { dev: true, tokenTtl: '2d' }, 'GW_ERR_CONFIG_INVALID', /tokenTtl/],
    ['reserved claim copied', { dev: true, claims: { copy: ['exp'] } }, 'GW_ERR_CONFIG_SCHEMA', /claims\.copy/],
  ];
  for (const [name, cfg, code, re] of bad) {
    const err = await caught(() => h.compile(cfg));
    t.equal(err.code, code, name);
    t.match(err.message, re, `${name}: ${err.message}`);
    const pieces = secrets.flatMap((s) => s.split('\n')).filter((p) => p.length > 16 && !p.startsWith('-----'));
    t.notOk(pieces.some((p) => err.message.includes(p) || err.describe().includes(p)), `${name}: message has no key material`);
  }
});

t.test('schema defaults', async (t) => {
  const { normalizeAuthConfig, refreshIn } = await import('../../core/auth/config.ts');
  const c = normalizeAuthConfig({});
  t.match(c, {
    issuer: 'ghostgate', audience: 'ghostgate-completions', tokenTtl: 1800, refreshBefore: 300, clockSkewSeconds: 30,
    algorithms: ['EdDSA', 'ES256'], dev: false, maxTokenBytes: 8192, cacheSize: 100000, signingKeys: [],
    credentials: {}, claims: { copy: ['sub', 'org', 'plan', 'features'], defaults: {} }, revocation: { subjects: [], tokenIds: [] },
  });
  t.equal(normalizeAuthConfig({ tokenTtl: 3600 }).tokenTtl, 3600);
  t.equal(normalizeAuthConfig({ tokenTtl: '90' }).tokenTtl, 90);
  t.equal(normalizeAuthConfig({ tokenTtl: '1h' }).tokenTtl, 3600);
  t.equal(refreshIn(1800, 300), 1500, '30 min → refresh after 25');
  t.equal(refreshIn(360, 300), 180, '6 min → never less than half');
});
