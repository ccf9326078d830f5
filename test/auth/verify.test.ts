/**
 * Verification of our own tokens: every bad input gets its stable code (and is counted), tokens
 * from an independent implementation (jose) verify, and ours verify under jose against our JWKS.
 */
import t from 'tap';
import { createHmac, KeyObject, sign as cryptoSign } from 'node:crypto';
import { createLocalJWKSet, jwtVerify, SignJWT } from 'jose';
import { caught, harness, makeKey, signingEntry } from './helpers.ts';
import type { TestKey } from './helpers.ts';

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** Sign arbitrary header/payload bytes with a test key (node:crypto, bypassing any JWT library checks). */
function rawSign(header: object, payload: string | object, k: TestKey): string {
  const input = `${b64(header)}.${b64(payload)}`;
  const key = KeyObject.from(k.privateKey);
  const sig = k.alg === 'EdDSA' ? cryptoSign(null, Buffer.from(input), key) : cryptoSign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);

t.test('bad tokens: each has its code, status, challenge and metric', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const k1 = await makeKey('k1');
  const other = await makeKey('k1'); // same kid, different key material
  const stranger = await makeKey('zz');
  const auth = await h.compile({ signingKeys: [signingEntry(h, k1)] });
  const good = { iss: 'ghostgate', aud: 'ghostgate-completions', sub: 'alice', exp: now() + 600, iat: now() };
  const hdr = { alg: 'EdDSA', kid: 'k1', typ: 'JWT' };

  const ok = rawSign(hdr, good, k1);
  t.same(await auth.verify(ok), good, 'a correctly signed token verifies');

  const cases: Array<[string, string, string, number]> = [
    ['garbage', 'not-a-token', 'GW_ERR_AUTH_MALFORMED_TOKEN', 401],
    ['two segments', 'a.b', 'GW_ERR_AUTH_MALFORMED_TOKEN', 401],
    ['four segments', `${ok}.x`, 'GW_ERR_AUTH_MALFORMED_TOKEN', 401],
    ['non-base64url chars', ok.replace(/\./, '.+'), 'GW_ERR_AUTH_MALFORMED_TOKEN', 401],
    ['header not JSON', `${b64('{oops')}.${b64(good)}.AAAA`, 'GW_ERR_AUTH_MALFORMED_TOKEN', 401],
    ['header is an array', `${b64([1])}.${b64(good)}.AAAA`, 'GW_ERR_AUTH_MALFORMED_TOKEN', 401],
    ['payload not JSON (validly signed)', rawSign(hdr, 'not json', k1), 'GW_ERR_AUTH_MALFORMED_TOKEN', 401],
    ['no exp', rawSign(hdr, { ...good, exp: undefined }, k1), 'GW_ERR_AUTH_MALFORMED_TOKEN', 401],
    ['no sub', rawSign(hdr, { ...good, sub: undefined }, k1), 'GW_ERR_AUTH_MALFORMED_TOKEN', 401],
    ['crit header', rawSign({ ...hdr, crit: ['exp'] }, good, k1), 'GW_ERR_AUTH_MALFORMED_TOKEN', 401],
    ['tampered payload', `${ok.split('.')[0]}.${b64({ ...good, sub: 'admin' })}.${ok.split('.')[2]}`, 'GW_ERR_AUTH_INVALID_SIGNATURE', 401],
    ['signature from another key with our kid', rawSign(hdr, good, other), 'GW_ERR_AUTH_INVALID_SIGNATURE', 401],
    ['truncated signature', ok.slice(0, -4), 'GW_ERR_AUTH_INVALID_SIGNATURE', 401],
    ['alg none', `${b64({ alg: 'none', kid: 'k1' })}.${b64(good)}.`, 'GW_ERR_AUTH_ALGORITHM_NOT_ALLOWED', 401],
    ['alg none with no kid', `${b64({ alg: 'none' })}.${b64(good)}.`, 'GW_ERR_AUTH_ALGORITHM_NOT_ALLOWED', 401],
    ['HS256 signed with the public key (algorithm confusion)', (() => {
      const input = `${b64({ alg: 'HS256', kid: 'k1' })}.${b64(good)}`;
      return `${input}.${createHmac('sha256', k1.publicPem).update(input).digest('base64url')}`;
    })(), 'GW_ERR_AUTH_ALGORITHM_NOT_ALLOWED', 401],
    ['HS256 signed with the JWK x', (() => {
      const input = `${b64({ alg: 'HS256', kid: 'k1' })}.${b64(good)}`;
      return `${input}.${createHmac('sha256', Buffer.from(String(k1.publicJwk.x), 'base64url')).update(input).digest('base64url')}`;
    })(), 'GW_ERR_AUTH_ALGORITHM_NOT_ALLOWED', 401],
    ['ES256 header on an EdDSA key', rawSign({ alg: 'ES256', kid: 'k1' }, good, k1), 'GW_ERR_AUTH_ALGORITHM_NOT_ALLOWED', 401],
    ['unknown kid', rawSign({ ...hdr, kid: 'zz' }, good, stranger), 'GW_ERR_AUTH_UNKNOWN_KEY', 401],
    ['no kid', rawSign({ alg: 'EdDSA' }, good, k1), 'GW_ERR_AUTH_UNKNOWN_KEY', 401],
    ['expired', rawSign(hdr, { ...good, exp: now() - 31 }, k1), 'GW_ERR_AUTH_TOKEN_EXPIRED', 401],
    ['not yet valid', rawSign(hdr, { ...good, nbf: now() + 60 }, k1), 'GW_ERR_AUTH_TOKEN_NOT_YET_VALID', 401],
    ['wrong issuer', rawSign(hdr, { ...good, iss: 'evil' }, k1), 'GW_ERR_AUTH_CLAIM_MISMATCH', 401],
    ['wrong audience', rawSign(hdr, { ...good, aud: 'other' }, k1), 'GW_ERR_AUTH_CLAIM_MISMATCH', 401],
    ['oversized (checked before parsing)', 'x'.repeat(8193), 'GW_ERR_AUTH_TOKEN_TOO_LARGE', 401],
    ['oversized but well formed', rawSign(hdr, { ...good, pad: 'p'.repeat(9000) }, k1), 'GW_ERR_AUTH_TOKEN_TOO_LARGE', 401],
  ];
  for (const [name, token, code, status] of cases) {
    const err = await caught(() => auth.verify(token));
    t.equal(err.code, code, name);
    t.equal(err.status, status, `${name}: status`);
    t.match(err.headers?.['www-authenticate'] ?? '', /^Bearer realm="ghostgate", error="invalid_token"/, `${name}: challenge`);
  }
  t.equal((await caught(() => auth.verify(rawSign(hdr, { ...good, iss: 'evil' }, k1)))).message, 'Token issuer does not match');
  t.equal((await caught(() => auth.verify(rawSign(hdr, { ...good, aud: 'x' }, k1)))).message, 'Token audience does not match');
  t.equal(await h.failures('GW_ERR_AUTH_ALGORITHM_NOT_ALLOWED'), 5);
  t.equal(await h.failures('GW_ERR_AUTH_TOKEN_TOO_LARGE'), 2);
  t.equal(await h.failures('GW_ERR_AUTH_CLAIM_MISMATCH'), 4);
});

t.test('clock skew: default 30 s either side, configurable', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const k1 = await makeKey('k1');
  const hdr = { alg: 'EdDSA', kid: 'k1' };
  const base = { iss: 'ghostgate', aud: 'ghostgate-completions', sub: 'alice' };
  const auth = await h.compile({ signingKeys: [signingEntry(h, k1)] });
  t.ok(await auth.verify(rawSign(hdr, { ...base, exp: now() - 20 }, k1)), 'expired 20 s ago: within skew');
  t.ok(await auth.verify(rawSign(hdr, { ...base, exp: now() + 60, nbf: now() + 20 }, k1)), 'nbf 20 s ahead: within skew');
  const strict = await h.compile({ clockSkewSeconds: 0, signingKeys: [signingEntry(h, k1)] });
  t.equal((await caught(() => strict.verify(rawSign(hdr, { ...base, exp: now() - 2 }, k1)))).code, 'GW_ERR_AUTH_TOKEN_EXPIRED');
  t.equal((await caught(() => strict.verify(rawSign(hdr, { ...base, exp: now() + 60, nbf: now() + 5 }, k1)))).code, 'GW_ERR_AUTH_TOKEN_NOT_YET_VALID');
});

t.test('algorithm allow-list applies to keys and tokens', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const ec = await makeKey('ec1', 'ES256');
  const ed = await makeKey('ed1', 'EdDSA');
  const err = await caught(() => h.compile({ algorithms: ['EdDSA'], signingKeys: [signingEntry(h, ec)] }));
  t.equal(err.code, 'GW_ERR_CONFIG_INVALID');
  t.match(err.message, /ES256 is not in auth\.algorithms/);
  const auth = await h.compile({ algorithms: ['ES256'], signingKeys: [signingEntry(h, ec, { form: 'jwk' })] });
  const { token } = await auth.mint({ sub: 'a' });
  t.ok(await auth.verify(token), 'ES256 token verifies');
  t.equal((await caught(() => auth.verify(rawSign({ alg: 'EdDSA', kid: 'ed1' }, { sub: 'a', exp: now() + 60 }, ed)))).code, 'GW_ERR_AUTH_ALGORITHM_NOT_ALLOWED');
  t.equal((await caught(() => h.compile({ algorithms: ['HS256'], signingKeys: [signingEntry(h, ec)] }))).code, 'GW_ERR_CONFIG_SCHEMA');
});

t.test('interop: jose-signed tokens verify here; ours verify under jose with our JWKS', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const ed = await makeKey('ed1');
  const ec = await makeKey('ec1', 'ES256');
  const auth = await h.compile({ signingKeys: [signingEntry(h, ed, { active: true }), signingEntry(h, ec, { form: 'jwk' })] });
  for (const k of [ed, ec]) {
    const token = await new SignJWT({ plan: 'pro', features: ['x'] }).setProtectedHeader({ alg: k.alg, kid: k.kid })
      .setIssuer('ghostgate').setAudience(['ghostgate-completions', 'other']).setSubject('bob').setIssuedAt().setExpirationTime('5m').sign(k.privateKey);
    t.match(await auth.verify(token), { sub: 'bob', plan: 'pro', features: ['x'] }, `${k.alg} token from jose verifies (audience array)`);
  }
  const { token, expires_at } = await auth.mint({ sub: 'carol', org: 'acme' });
  const jwks = createLocalJWKSet(auth.jwks() as Parameters<typeof createLocalJWKSet>[0]);
  const { payload, protectedHeader } = await jwtVerify(token, jwks, { issuer: 'ghostgate', audience: 'ghostgate-completions', algorithms: ['EdDSA', 'ES256'] });
  t.match(payload, { sub: 'carol', org: 'acme', exp: expires_at });
  t.equal(typeof payload.jti, 'string');
  t.same(protectedHeader, { alg: 'EdDSA', kid: 'ed1', typ: 'JWT' });
  t.equal(payload.exp! - payload.iat!, 1800, 'default lifetime 30 minutes');
});

t.test('verified claims are frozen', async (t) => {
  const h = harness();
  t.teardown(() => h.dir.remove());
  const auth = await h.compile({ signingKeys: [signingEntry(h, await makeKey('k1'))] });
  const { token } = await auth.mint({ sub: 'a', features: ['x'] });
  const c = await auth.verify(token) as Record<string, unknown>;
  t.ok(Object.isFrozen(c) && Object.isFrozen(c.features));
});
