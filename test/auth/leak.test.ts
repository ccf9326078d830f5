/**
 * Grep test: drive every auth path (compile, exchange, verify, mint, failures, config errors)
 * and check that no key material, API key, hash or token appears in a thrown error (message,
 * describe(), JSON body, headers), in the captured log output, or in the metrics exposition.
 */
import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { generateApiKey, hashApiKey } from '../../core/auth/index.ts';
import { GatewayError } from '../../core/errors.ts';
import { harness, makeKey, signingEntry } from './helpers.ts';

t.test('no secret reaches errors, logs or metrics', async (t) => {
  const h = harness();
  const rsa = await generateKeyPair('RS256');
  const jwks = { keys: [{ ...(await exportJWK(rsa.publicKey)), kid: 'r1', alg: 'RS256' }] };
  const server = http.createServer((_, res) => { res.writeHead(200).end(JSON.stringify(jwks)); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(async () => { h.dir.remove(); delete process.env.GG_LEAK_KEY; server.closeAllConnections(); await new Promise((r) => server.close(r)); });

  const k1 = await makeKey('k1');
  const k2 = await makeKey('k2', 'ES256');
  process.env.GG_LEAK_KEY = JSON.stringify(k2.privateJwk);
  const apiKey = generateApiKey();
  const scryptKey = generateApiKey('s1');
  const shaHash = await hashApiKey(apiKey);
  const scryptHash = await hashApiKey(scryptKey, 'scrypt', { N: 1024 });
  h.dir.write('keys.yaml', `- { sub: alice, hash: "${shaHash}" }\n- { sub: bob, id: s1, hash: "${scryptHash}" }`);
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const cfg = {
    signingKeys: [signingEntry(h, k1, { active: true }), { kid: 'k2', alg: 'ES256', privateKey: { env: 'GG_LEAK_KEY' } }],
    credentials: { apiKeys: { file: 'keys.yaml' }, oidc: { issuer: 'idp', audience: 'gg', jwksUri: url } },
    revocation: { subjects: ['bob'] },
  };

  const secrets: string[] = [
    ...[k1, k2].flatMap((k) => [...k.privatePem.split('\n').filter((l) => l.length > 20 && !l.startsWith('-----')), String(k.privateJwk.d)]),
    apiKey, apiKey.slice(4), scryptKey, shaHash.slice(7), scryptHash.split(':')[4], scryptHash.split(':')[5],
  ];
  const thrown: GatewayError[] = [];
  const attempt = async (fn: () => unknown) => {
    try { await fn(); } catch (e) { if (e instanceof GatewayError) thrown.push(e); else throw e; }
  };

  const auth = await h.compile(cfg);
  const idpToken = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'r1' }).setIssuer('idp').setAudience('gg').setSubject('carol').setExpirationTime('5m').sign(rsa.privateKey);
  const badIdp = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'r1' }).setIssuer('idp').setAudience('nope').setSubject('carol').setExpirationTime('5m').sign(rsa.privateKey);
  const issued = [
    (await auth.exchange({ headers: { authorization: `Bearer ${apiKey}` }, body: {}, ip: '1.2.3.4' })).token,
    (await auth.exchange({ headers: { authorization: `Bearer ${idpToken}` }, body: {}, ip: '1.2.3.4' })).token,
    (await auth.mint({ sub: 'dave' })).token,
  ];
  secrets.push(...issued, ...issued.map((x) => x.split('.')[2]), idpToken, idpToken.split('.')[2], badIdp);

  await attempt(() => auth.exchange({ headers: { authorization: `Bearer ${scryptKey}` }, body: {}, ip: '1.2.3.4' })); // revoked bob
  await attempt(() => auth.exchange({ headers: { authorization: `Bearer ${apiKey}x` }, body: {}, ip: '1.2.3.4' }));
  await attempt(() => auth.exchange({ headers: { authorization: `Bearer ${badIdp}` }, body: {}, ip: '1.2.3.4' }));
  await attempt(() => auth.exchange({ headers: { authorization: `Bearer ${'z'.repeat(9000)}` }, body: {}, ip: '1.2.3.4' }));
  for (const tok of issued) {
    await auth.verify(tok);
    await attempt(() => auth.verify(`${tok}x`));
    await attempt(() => auth.verify(tok.replace(/\.[^.]+\./, '.e30.')));
  }
  await attempt(() => auth.verify(issued[0].split('').reverse().join('')));
  // config errors around secrets
  await attempt(() => h.compile({ ...cfg, signingKeys: [{ kid: 'k1', alg: 'ES256', privateKey: { file: 'k1.pem' } }] }));
  h.dir.write('pub-as-priv.pem', k1.privatePem.replace('PRIVATE', 'PUBLIC').replace('PRIVATE', 'PUBLIC'));
  await attempt(() => h.compile({ ...cfg, signingKeys: [{ kid: 'k1', privateKey: { file: 'pub-as-priv.pem' } }] }));
  h.dir.write('bad-keys.yaml', `- { sub: alice, hash: "${shaHash}x" }`);
  await attempt(() => h.compile({ ...cfg, credentials: { apiKeys: { file: 'bad-keys.yaml' } } }));
  h.dir.write('dup-keys.yaml', `- { sub: alice, hash: "${shaHash}" }\n- { sub: eve, hash: "${shaHash}" }`);
  await attempt(() => h.compile({ ...cfg, credentials: { apiKeys: { file: 'dup-keys.yaml' } } }));
  await h.compile({ dev: true });

  t.ok(thrown.length >= 12, `${thrown.length} errors collected`);
  const errorText = thrown.map((e) => [e.message, e.describe(), JSON.stringify(e.toJSON()), JSON.stringify(e.headers ?? {}), JSON.stringify(e.details ?? {}), e.stack ?? ''].join('\n')).join('\n');
  const logText = h.log.text();
  const metricsText = await h.metrics.metrics();
  t.ok(logText.includes('token issued') && logText.includes('alice'), 'the log does say who got a token');
  for (const [where, text] of [['errors', errorText], ['logs', logText], ['metrics', metricsText]] as const) {
    const leaked = secrets.filter((s) => s.length >= 16 && text.includes(s));
    t.same(leaked.map((s) => `${s.slice(0, 6)}…`), [], `no secret in ${where}`);
  }
});
