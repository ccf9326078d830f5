/**
 * The verified-token cache (a repeat verify is a lookup, but expiry and revocation still apply)
 * and the deny list (subjects and token ids, inline or in a file, applied by a reload).
 */
import t from 'tap';
import { generateApiKey, hashApiKey } from '../../core/auth/index.ts';
import { TokenCache } from '../../core/auth/cache.ts';
import { caught, harness, makeKey, signingEntry } from './helpers.ts';

t.test('revocation by subject: live tokens refused (403) and no new tokens, within one reload', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const apiKey = generateApiKey();
  h.dir.write('keys.yaml', `- { sub: mallory, hash: "${await hashApiKey(apiKey)}" }`);
  h.dir.write('revoked.yaml', 'subjects: []\n');
  const base = { signingKeys: [signingEntry(h, await makeKey('k1'))], credentials: { apiKeys: { file: 'keys.yaml' } }, revocation: { file: 'revoked.yaml' } };
  const v1 = await h.compile(base);
  const { token } = await v1.exchange({ headers: { authorization: `Bearer ${apiKey}` }, body: {}, ip: '::1' });
  t.ok(await v1.verify(token), 'verifies (and is now cached)');
  t.notOk(v1.isRevoked('mallory', undefined));

  h.dir.write('revoked.yaml', 'subjects: [mallory]\n');
  const v2 = await h.compile(base, v1);
  t.ok(v2.isRevoked('mallory', undefined));
  const err = await caught(() => v2.verify(token));
  t.equal(err.code, 'GW_ERR_AUTH_REVOKED');
  t.equal(err.status, 403);
  t.equal(err.headers, undefined, 'no bearer challenge on 403');
  t.equal((await caught(() => v2.exchange({ headers: { authorization: `Bearer ${apiKey}` }, body: {}, ip: '::1' }))).code, 'GW_ERR_AUTH_REVOKED', 'no new token');
  t.equal((await caught(() => v2.mint({ sub: 'mallory' }))).code, 'GW_ERR_AUTH_REVOKED', 'mint refuses too');
  t.ok(await h.failures('GW_ERR_AUTH_REVOKED') >= 3);

  h.dir.write('revoked.yaml', '');
  const v3 = await h.compile(base, v2);
  t.ok(await v3.verify(token), 'un-revoked by the next reload');
  t.same(v3.files.map((f) => f.slice(h.dir.dir.length + 1)), ['k1.pem', 'revoked.yaml', 'keys.yaml'], 'files to watch');
});

t.test('revocation by token id (emergencies) and inline subjects', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const key = signingEntry(h, await makeKey('k1'));
  const v1 = await h.compile({ signingKeys: [key] });
  const a = await v1.mint({ sub: 'alice' });
  const b = await v1.mint({ sub: 'alice' });
  await v1.verify(a.token); await v1.verify(b.token);
  const jti = (await v1.verify(a.token)).jti as string;
  const v2 = await h.compile({ signingKeys: [key], revocation: { tokenIds: [jti] } }, v1);
  t.equal((await caught(() => v2.verify(a.token))).code, 'GW_ERR_AUTH_REVOKED', 'that token is dead');
  t.ok(await v2.verify(b.token), 'the subject\'s other tokens live');
  const v3 = await h.compile({ signingKeys: [key], revocation: { subjects: ['alice'] } }, v2);
  t.equal((await caught(() => v3.verify(b.token))).code, 'GW_ERR_AUTH_REVOKED');
  t.equal((await caught(() => h.compile({ signingKeys: [key], revocation: { file: 'missing.yaml' } }))).code, 'GW_ERR_CONFIG_INVALID', 'a named file must exist');
  h.dir.write('bad.yaml', 'subject: [typo]');
  t.match((await caught(() => h.compile({ signingKeys: [key], revocation: { file: 'bad.yaml' } }))).message, /unknown key "subject"/);
});

t.test('cache: repeat verification is a lookup; it still honours expiry and revocation', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const key = signingEntry(h, await makeKey('k1'));
  const auth = await h.compile({ signingKeys: [key], clockSkewSeconds: 0 });
  const tokens = await Promise.all(Array.from({ length: 2000 }, (_, i) => auth.mint({ sub: `u${i}` }, 60)));
  // CPU time, not wall-clock: the work done, which other processes on a busy machine do not move.
  const cpuMs = (c: NodeJS.CpuUsage): number => (c.user + c.system) / 1000;
  let c0 = process.cpuUsage();
  for (const x of tokens) await auth.verify(x.token);
  const cold = cpuMs(process.cpuUsage(c0)) / tokens.length;
  const warmRuns: number[] = [];
  for (let r = 0; r < 5; r++) {
    c0 = process.cpuUsage();
    for (const x of tokens) auth.verify(x.token);
    warmRuns.push(cpuMs(process.cpuUsage(c0)) / tokens.length);
  }
  const warm = warmRuns.sort((a, b) => a - b)[2];
  t.ok(warm * 5 < cold, `cached ${(warm * 1000).toFixed(2)} µs vs uncached ${(cold * 1000).toFixed(1)} µs`);
  t.notOk(auth.verify(tokens[0].token) instanceof Promise, 'a cached token is answered synchronously (no promise)');
  t.equal(auth.verify(tokens[0].token), auth.verify(tokens[0].token), 'same frozen claims object: served from cache');

  // expiry: move the clock past exp; the cached entry must not keep the token alive
  h.clock.ms = (tokens[0].expires_at + 1) * 1000;
  t.equal((await caught(() => auth.verify(tokens[0].token))).code, 'GW_ERR_AUTH_TOKEN_EXPIRED');
  t.equal((await caught(() => auth.verify(tokens[0].token))).code, 'GW_ERR_AUTH_TOKEN_EXPIRED', 'still expired once evicted');
  h.clock.ms = undefined;

  // revocation on reload with the cache carried over
  const next = await h.compile({ signingKeys: [key], clockSkewSeconds: 0, revocation: { subjects: ['u1'] } }, auth);
  auth.close();
  t.ok(await next.verify(tokens[2].token), 'cache survives close() of the old service when adopted');
  t.equal((await caught(() => next.verify(tokens[1].token))).code, 'GW_ERR_AUTH_REVOKED');
  const size = (await h.metrics.getSingleMetric('ghostgate_auth_token_cache_entries')?.get())?.values[0]?.value ?? 0;
  t.ok(size >= 1998, `cache gauge ${size}`);
});

t.test('cache is bounded and can be disabled', async (t) => {
  const c = new TokenCache(3);
  const e = (exp: number) => ({ claims: {}, exp, sub: 's', jti: undefined });
  c.set('a', e(100), 50); c.set('b', e(100), 50); c.set('c', e(100), 50);
  c.set('d', e(100), 50);
  t.equal(c.size, 3);
  t.equal(c.get('a'), undefined, 'oldest evicted');
  t.ok(c.get('d'));
  const x = new TokenCache(4);
  x.set('old1', e(10), 5); x.set('old2', e(10), 5); x.set('live', e(100), 5); x.set('live2', e(100), 5);
  x.set('new', e(100), 50);
  t.same([x.get('old1'), x.get('old2')], [undefined, undefined], 'expired entries at the old end all go');
  t.ok(x.get('live') && x.get('new'));
  const off = new TokenCache(0);
  off.set('a', e(100), 1);
  t.equal(off.size, 0);

  const h = harness();
  t.teardown(() => h.dir.remove());
  const auth = await h.compile({ dev: true, cacheSize: 0 });
  const { token } = await auth.mint({ sub: 'x' });
  t.not(await auth.verify(token), await auth.verify(token), 'no cache: verified every time');
});

t.test('concurrent first sights of one token share one verification', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  // No cache: only the in-flight verification can make two answers the same object.
  const auth = await h.compile({ dev: true, cacheSize: 0 });
  const { token } = await auth.mint({ sub: 'x' });
  const [a, b, c] = await Promise.all([auth.verify(token), auth.verify(token), auth.verify(token)]);
  t.equal(a, b, 'one verification, one frozen claims object');
  t.equal(a, c);
  t.not(await auth.verify(token), a, 'once settled, the in-flight entry is gone: the next first sight verifies afresh');

  const failures = async () => (await h.metrics.getSingleMetric('ghostgate_auth_failures_total')?.get())?.values.find((v) => v.labels.code === 'GW_ERR_AUTH_INVALID_SIGNATURE')?.value ?? 0;
  const before = await failures();
  const bad = `${token.slice(0, token.lastIndexOf('.') + 1)}${'A'.repeat(86)}`;
  const errs = await Promise.all([caught(() => auth.verify(bad)), caught(() => auth.verify(bad))]);
  t.same(errs.map((e) => e.code), ['GW_ERR_AUTH_INVALID_SIGNATURE', 'GW_ERR_AUTH_INVALID_SIGNATURE'], 'a shared failure refuses each request');
  t.equal(await failures() - before, 2, 'and is counted once per request');
});
