/** Token exchange with static API keys held hashed in a secrets file. */
import t from 'tap';
import { generateApiKey, hashApiKey } from '../../core/auth/index.ts';
import { ApiKeyStore } from '../../core/auth/api-keys.ts';
import { caught, harness, makeKey, signingEntry } from './helpers.ts';

/** CPU time (user + system) in ms from a `process.cpuUsage(start)` delta. */
const cpuMs = (c: NodeJS.CpuUsage): number => (c.user + c.system) / 1000;
const bearer = (k: string) => ({ headers: { authorization: `Bearer ${k}` }, body: {}, ip: '127.0.0.1' });

t.test('exchange: a valid key gets a token with the configured claims', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const alice = generateApiKey();
  const bob = generateApiKey();
  h.dir.write('api-keys.yaml', [
    `- sub: alice`,
    `  hash: ${await hashApiKey(alice)}`,
    `  claims: { org: acme, plan: pro, features: [fim, chat], secretNote: not-copied }`,
    `- sub: bob`,
    `  hash: ${(await hashApiKey(bob)).toUpperCase().replace('SHA256', 'sha256')}`,
  ].join('\n'));
  const auth = await h.compile({
    tokenTtl: '10m',
    signingKeys: [signingEntry(h, await makeKey('k1'))],
    credentials: { apiKeys: { file: 'api-keys.yaml' } },
    claims: { copy: ['org', 'plan', 'features'], defaults: { plan: 'free' } },
  });
  const before = Math.floor(Date.now() / 1000);
  const r = await auth.exchange(bearer(alice));
  t.equal(r.token_type, 'Bearer');
  t.ok(r.expires_at >= before + 600 && r.expires_at <= before + 601, 'expires_at = now + ttl');
  t.equal(r.refresh_in, 300, '10 min lifetime → refresh after 5 (max(ttl − 5m, ttl/2))');
  const claims = await auth.verify(r.token);
  t.match(claims, { sub: 'alice', org: 'acme', plan: 'pro', features: ['fim', 'chat'], iss: 'ghostgate', aud: 'ghostgate-completions' });
  t.notOk('secretNote' in claims, 'claims not listed in copy are not carried');
  t.match(await auth.verify((await auth.exchange(bearer(bob))).token), { sub: 'bob', plan: 'free' }, 'defaults fill missing claims; hex case ignored');
  t.match(await auth.verify((await auth.exchange({ ...bearer(alice), headers: { authorization: `bearer   ${alice}  ` } })).token), { sub: 'alice' }, 'scheme case-insensitive, spaces tolerated');
  const issued = await h.metrics.getSingleMetric('ghostgate_auth_tokens_issued_total')?.get();
  t.equal(issued?.values.find((v) => v.labels.via === 'api_key')?.value, 3);
  t.same(auth.files, [`${h.dir.dir}/k1.pem`, `${h.dir.dir}/api-keys.yaml`]);
});

t.test('exchange failures', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const key = generateApiKey();
  h.dir.write('keys.json', [{ sub: 'alice', hash: await hashApiKey(key) }]);
  const auth = await h.compile({ signingKeys: [signingEntry(h, await makeKey('k1'))], credentials: { apiKeys: { file: 'keys.json' } } });
  const cases: Array<[string, Record<string, string | string[] | undefined>, string, number]> = [
    ['no header', {}, 'GW_ERR_AUTH_MISSING_TOKEN', 401],
    ['other scheme', { authorization: `Basic ${Buffer.from(`x:${key}`).toString('base64')}` }, 'GW_ERR_AUTH_MISSING_TOKEN', 401],
    ['empty bearer', { authorization: 'Bearer ' }, 'GW_ERR_AUTH_MISSING_TOKEN', 401],
    ['two headers', { authorization: [`Bearer ${key}`, `Bearer ${key}`] }, 'GW_ERR_AUTH_MALFORMED_TOKEN', 401],
    ['wrong key', { authorization: `Bearer ${key.slice(0, -1)}${key.endsWith('A') ? 'B' : 'A'}` }, 'GW_ERR_AUTH_INVALID_CREDENTIAL', 401],
    ['unknown key', { authorization: `Bearer ${generateApiKey()}` }, 'GW_ERR_AUTH_INVALID_CREDENTIAL', 401],
    ['oversized', { authorization: `Bearer ${'k'.repeat(9000)}` }, 'GW_ERR_AUTH_TOKEN_TOO_LARGE', 401],
    ['JWT-shaped but no IdP configured', { authorization: 'Bearer aaa.bbb.ccc' }, 'GW_ERR_AUTH_INVALID_CREDENTIAL', 401],
  ];
  for (const [name, headers, code, status] of cases) {
    const err = await caught(() => auth.exchange({ headers, body: {}, ip: '127.0.0.1' }));
    t.equal(err.code, code, name);
    t.equal(err.status, status, `${name}: status`);
  }
  t.equal(await h.failures('GW_ERR_AUTH_INVALID_CREDENTIAL'), 3);
  const noCreds = await h.compile({ signingKeys: [signingEntry(h, await makeKey('k9'))] });
  t.equal((await caught(() => noCreds.exchange(bearer(key)))).code, 'GW_ERR_AUTH_NOT_CONFIGURED', 'no credential verifier → 404 NOT_CONFIGURED');
  t.equal(noCreds.devApiKey, undefined, 'no dev API key outside dev mode');
});

t.test('reload applies edits of the keys file', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const a = generateApiKey();
  const b = generateApiKey();
  const base = { signingKeys: [signingEntry(h, await makeKey('k1'))], credentials: { apiKeys: { file: 'keys.yaml' } } };
  h.dir.write('keys.yaml', `- { sub: a, hash: "${await hashApiKey(a)}" }\n`);
  const v1 = await h.compile(base);
  t.ok(await v1.exchange(bearer(a)));
  t.equal((await caught(() => v1.exchange(bearer(b)))).code, 'GW_ERR_AUTH_INVALID_CREDENTIAL');
  h.dir.write('keys.yaml', `- { sub: b, hash: "${await hashApiKey(b)}" }\n`);
  const v2 = await h.compile(base, v1);
  t.ok(await v2.exchange(bearer(b)), 'added user works after reload');
  t.equal((await caught(() => v2.exchange(bearer(a)))).code, 'GW_ERR_AUTH_INVALID_CREDENTIAL', 'removed user refused after reload');
  h.dir.write('keys.yaml', '');
  t.equal((await caught(() => (h.compile(base, v2)).then((v) => v.exchange(bearer(b))))).code, 'GW_ERR_AUTH_INVALID_CREDENTIAL', 'empty file = no users');
});

t.test('keys file errors never quote hashes', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const hash = await hashApiKey(generateApiKey());
  const bad: Array<[string, string, RegExp]> = [
    ['not a list', `sub: a\nhash: ${hash}`, /must be a list/],
    ['unknown field', `- { sub: a, hash: "${hash}", plna: pro }`, /unknown field "plna"/],
    ['no sub', `- { hash: "${hash}" }`, /\[0\]\.sub/],
    ['bad hash', `- { sub: a, hash: "md5:${hash.slice(7)}" }`, /must be "sha256/],
    ['duplicate hash', `- { sub: a, hash: "${hash}" }\n- { sub: b, hash: "${hash}" }`, /appears twice/],
    ['scrypt without id', `- { sub: a, hash: "${await hashApiKey('x.y', 'scrypt', { N: 1024 })}" }`, /need an id/],
    ['invalid YAML', `- { sub: a, hash: "${hash}"`, /not valid YAML/],
  ];
  for (const [name, text, re] of bad) {
    const err = await caught(() => ApiKeyStore.parse(text, 'keys.yaml'));
    t.equal(err.code, 'GW_ERR_CONFIG_INVALID', name);
    t.match(err.message, re, `${name}: ${err.message}`);
    t.notOk(err.message.includes(hash.slice(7, 40)), `${name}: no hash in the message`);
  }
});

t.test('scrypt keys: id-addressed; a wrong key and an unknown id take the same time', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const carol = generateApiKey('carol1');
  const sha = generateApiKey();
  h.dir.write('keys.yaml', [
    `- { sub: carol, id: carol1, hash: "${await hashApiKey(carol, 'scrypt', { N: 4096 })}", claims: { plan: team } }`,
    `- { sub: dave, hash: "${await hashApiKey(sha)}" }`,
  ].join('\n'));
  const auth = await h.compile({ signingKeys: [signingEntry(h, await makeKey('k1'))], credentials: { apiKeys: { file: 'keys.yaml' } } });
  t.match(await auth.verify((await auth.exchange(bearer(carol))).token), { sub: 'carol', plan: 'team' });
  t.match(await auth.verify((await auth.exchange(bearer(sha))).token), { sub: 'dave' }, 'sha256 entries work alongside');

  const store = ApiKeyStore.parse(`- { sub: carol, id: carol1, hash: "${await hashApiKey(carol, 'scrypt', { N: 4096 })}" }`, 'k');
  const wrong = `carol1.${generateApiKey().slice(4)}`;
  const unknown = `nobody.${generateApiKey().slice(4)}`;
  // CPU time of the process (scrypt runs on libuv's threads; this counts them): the work done,
  // which other processes on a busy machine do not change, as they do wall-clock time.
  const time = async (k: string) => { const c0 = process.cpuUsage(); await store.verify(k); return cpuMs(process.cpuUsage(c0)); };
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1];
  const w: number[] = [];
  const u: number[] = [];
  for (let i = 0; i < 30; i++) { w.push(await time(wrong)); u.push(await time(unknown)); }
  const ratio = median(w) / median(u);
  t.ok(ratio > 0.5 && ratio < 2, `wrong-key / unknown-id median CPU time ratio ${ratio.toFixed(2)} (same scrypt work)`);
  t.equal(await store.verify(wrong), undefined);
  t.equal(await store.verify(unknown), undefined);
  t.match(await store.verify(carol), { sub: 'carol' });
});

t.test('sha256 keys: wrong and unknown keys run the same code (timingSafeEqual against a dummy)', async (t) => {
  const key = generateApiKey();
  const store = ApiKeyStore.parse(`- { sub: a, hash: "${await hashApiKey(key)}" }`, 'k');
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1];
  const near = key.slice(0, -1) + (key.endsWith('A') ? 'B' : 'A');
  const far = generateApiKey();
  const run = async (k: string) => { const c0 = process.cpuUsage(); for (let i = 0; i < 500; i++) await store.verify(k); return cpuMs(process.cpuUsage(c0)); }; // CPU time: see above
  await run(near); await run(far);
  const a: number[] = []; const b: number[] = [];
  for (let i = 0; i < 21; i++) { a.push(await run(near)); b.push(await run(far)); } // interleaved: load hits both alike
  const ratio = median(a) / median(b);
  t.ok(ratio > 0.5 && ratio < 2, `near-miss / unknown median CPU time ratio ${ratio.toFixed(2)}`);
});

t.test('dev mode without credentials: a generated dev API key is exchanged (sub dev), kept across reloads; never with credentials configured', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const dev = await h.compile({ dev: true });
  t.match(dev.devApiKey, /^ggk_[A-Za-z0-9_-]{43}$/, '256 random bits');
  const r = await dev.exchange(bearer(dev.devApiKey!));
  t.equal((await dev.verify(r.token)).sub, 'dev');
  t.equal((await caught(() => dev.exchange(bearer(generateApiKey())))).code, 'GW_ERR_AUTH_INVALID_CREDENTIAL', 'another key is refused');
  const again = await h.compile({ dev: true }, dev);
  t.equal(again.devApiKey, dev.devApiKey, 'a reload keeps it');
  const fresh = await h.compile({ dev: true });
  t.not(fresh.devApiKey, dev.devApiKey, 'a restart makes a new one');
  const k = generateApiKey();
  h.dir.write('keys.yaml', `- sub: alice\n  hash: ${await hashApiKey(k)}\n`);
  const withKeys = await h.compile({ dev: true, credentials: { apiKeys: { file: 'keys.yaml' } } });
  t.equal(withKeys.devApiKey, undefined, 'configured credentials replace it');
  t.equal((await caught(() => withKeys.exchange(bearer(dev.devApiKey!)))).code, 'GW_ERR_AUTH_INVALID_CREDENTIAL');
});
