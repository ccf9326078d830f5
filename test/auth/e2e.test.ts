/**
 * Auth over a running gateway (real listeners, real HTTP/2, bundled model server): token
 * exchange on POST /v1/token, the JWKS, the `auth` step in a policy, revocation by reload, and
 * nothing secret in the gateway's log lines.
 */
import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { generateApiKey, hashApiKey } from '../../core/auth/index.ts';
import { collect, connect, open, post } from '../helpers/h2.ts';
import { startGateway } from '../helpers/gateway.ts';

t.test('exchange, JWKS, auth step, revocation over a running gateway', async (t) => {
  const apiKey = generateApiKey();
  const pem = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  const g = await startGateway(t, {
    files: {
      'secrets/signing-k1.pem': pem,
      'secrets/api-keys.yaml': `- { sub: alice, hash: "${await hashApiKey(apiKey)}", claims: { plan: pro } }\n`,
      'secrets/revoked.yaml': 'subjects: []\n',
    },
    extraConfig: [
      'auth:',
      '  tokenTtl: 10m',
      '  signingKeys: [{ kid: k1, privateKey: { file: secrets/signing-k1.pem } }]',
      '  credentials: { apiKeys: { file: secrets/api-keys.yaml } }',
      '  revocation: { file: secrets/revoked.yaml }',
    ].join('\n'),
    policies: {
      '10-auth.yaml': [
        'name: completions',
        'match: { paths: [/v1/completions] }',
        'steps:',
        '  - use: auth',
        '  - use: set-headers',
        '    when: { "==": [{ var: claims.plan }, "pro"] }',
        '    params: { response: { x-plan: pro } }',
      ].join('\n'),
    },
  });
  const s = await connect(g.url);
  t.teardown(() => s.close());

  const jwks = await collect(s.request({ ':method': 'GET', ':path': '/.well-known/jwks.json' }));
  t.equal(jwks.status, 200);
  const keys = (JSON.parse(jwks.text) as { keys: Array<Record<string, unknown>> }).keys;
  t.same(keys.map((k) => [k.kid, k.alg, k.crv, 'd' in k]), [['k1', 'EdDSA', 'Ed25519', false]]);

  const bad = await post(s, '/v1/token', {}, { authorization: 'Bearer ggk_nope' });
  t.equal(bad.status, 401);
  t.equal(JSON.parse(bad.text).error.code, 'GW_ERR_AUTH_INVALID_CREDENTIAL');
  const missing = await post(s, '/v1/token', {});
  t.equal(JSON.parse(missing.text).error.code, 'GW_ERR_AUTH_MISSING_TOKEN');

  const r = await post(s, '/v1/token', {}, { authorization: `Bearer ${apiKey}` });
  t.equal(r.status, 200, 'token issued');
  const tok = JSON.parse(r.text) as { token: string; expires_at: number; refresh_in: number; token_type: string };
  t.match(tok, { token_type: 'Bearer', refresh_in: 300 });

  const noToken = await collect(open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }));
  t.equal(noToken.status, 401);
  t.equal(JSON.parse(noToken.text).error.code, 'GW_ERR_AUTH_MISSING_TOKEN');
  t.match(String(noToken.headers['www-authenticate']), /^Bearer/);
  const forged = await collect(open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { authorization: `Bearer ${tok.token.slice(0, -3)}AAA` }));
  t.equal(forged.status, 401);

  t.test('completions with a token', async (t) => {
    const ok = await collect(open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { authorization: `Bearer ${tok.token}` }));
    t.equal(ok.status, 200, ok.text.slice(0, 200));
    t.equal(ok.headers['x-plan'], 'pro', 'claims.plan visible to when conditions');
    const upstreamSaw = JSON.stringify(await g.modelRequests());
    t.notOk(upstreamSaw.includes(tok.token), 'the client token never reaches the upstream');

    g.write('secrets/revoked.yaml', 'subjects: [alice]\n');
    const rel = await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' });
    t.equal(rel.status, 200);
    const revoked = await collect(open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { authorization: `Bearer ${tok.token}` }));
    t.equal(revoked.status, 403);
    t.equal(JSON.parse(revoked.text).error.code, 'GW_ERR_AUTH_REVOKED');
    const again = await post(s, '/v1/token', {}, { authorization: `Bearer ${apiKey}` });
    t.equal(JSON.parse(again.text).error.code, 'GW_ERR_AUTH_REVOKED', 'no new token either');
  });

  t.test('no secret in the gateway log', async (t) => {
    const logs = g.logs.join('\n');
    t.ok(logs.includes('token issued'), 'the exchange is logged');
    for (const [name, s] of [['api key', apiKey], ['token', tok.token], ['token signature', tok.token.split('.')[2]], ['private key', pem.split('\n')[1]]]) {
      t.notOk(logs.includes(s), `no ${name}`);
    }
  });
});
