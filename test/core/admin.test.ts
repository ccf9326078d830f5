/**
 * The admin plane: every answer that is not a success is a catalogued `{error: {code, message}}`
 * (as on the data plane), and the routes that change state are guarded: minting needs dev mode
 * or the admin credential, reload takes the credential when one is configured, and an admin
 * plane on a non-loopback address without one is refused at load unless explicitly allowed.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import t from 'tap';
import type { Test } from 'tap';
import { catalog } from '../../core/errors.ts';
import { loadConfig } from '../../core/config/load.ts';
import { ConfigErrors } from '../../core/errors.ts';
import { Gateway } from '../../core/gateway.ts';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post } from '../helpers/h2.ts';
import { spawnModelServer } from '../model-server/fixtures/spawn.ts';

type ErrorBody = { error: { code: keyof typeof catalog; message: string } };

/** One raw HTTP/1.1 request (fetch would refuse some of these shapes). */
function raw(url: string, method: string, path: string, headers: Record<string, string> = {}, body?: string | Buffer): Promise<{ status: number; type: string | undefined; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, url), { method, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => { text += d; }).on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'], text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const badInput: Array<{ name: string; method: string; path: string; headers?: Record<string, string>; body?: string; status: number; code: string }> = [
  { name: 'unknown route', method: 'GET', path: '/nope', status: 404, code: 'GW_ERR_REQ_NOT_FOUND' },
  { name: 'bad JSON', method: 'POST', path: '/-/token', headers: { 'content-type': 'application/json' }, body: '{"sub": ', status: 400, code: 'GW_ERR_REQ_INVALID_JSON' },
  { name: '__proto__ key', method: 'POST', path: '/-/token', headers: { 'content-type': 'application/json' }, body: '{"sub":"a","__proto__":{"x":1}}', status: 400, code: 'GW_ERR_REQ_INVALID_JSON' },
  { name: 'wrong content type', method: 'POST', path: '/-/token', headers: { 'content-type': 'text/plain' }, body: 'sub=a', status: 415, code: 'GW_ERR_REQ_UNSUPPORTED_MEDIA_TYPE' },
  { name: 'too large', method: 'POST', path: '/-/token', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sub: 'x'.repeat(70_000) }), status: 413, code: 'GW_ERR_REQ_BODY_TOO_LARGE' },
  { name: 'wrong method on a GET route', method: 'DELETE', path: '/-/config', status: 405, code: 'GW_ERR_REQ_METHOD_NOT_ALLOWED' },
  { name: 'wrong method on a POST route', method: 'GET', path: '/-/reload', status: 405, code: 'GW_ERR_REQ_METHOD_NOT_ALLOWED' },
  { name: 'a body that is not an object', method: 'POST', path: '/-/token', headers: { 'content-type': 'application/json' }, body: '[1]', status: 400, code: 'GW_ERR_REQ_INVALID_BODY' },
  { name: 'ttlSeconds of the wrong type', method: 'POST', path: '/-/token', headers: { 'content-type': 'application/json' }, body: '{"sub":"a","ttlSeconds":"5"}', status: 400, code: 'GW_ERR_REQ_INVALID_BODY' },
  { name: 'ttl out of range (the message says why)', method: 'POST', path: '/-/token', headers: { 'content-type': 'application/json' }, body: '{"sub":"a","ttlSeconds":9999999}', status: 400, code: 'GW_ERR_REQ_INVALID_BODY' },
  { name: 'a reload with a body', method: 'POST', path: '/-/reload', headers: { 'content-type': 'application/json' }, body: '{"file":"other.yaml"}', status: 400, code: 'GW_ERR_REQ_INVALID_BODY' },
];

/** POST /-/token bodies that must be refused, each with what the message must say. */
const badMints: Array<[body: string, message: RegExp]> = [
  ['{"sub":"a","ttl":60}', /unknown field "ttl" \(did you mean "ttlSeconds"\?\); the fields are sub, ttlSeconds, claims/],
  ['{"sub":"a","ttlSeconds":60,"plan":"pro","TTL":1}', /unknown fields "plan", "TTL" \(did you mean "ttlSeconds"\?\)/],
  ['{"subject":"a"}', /unknown field "subject" \(did you mean "sub"\?\)/],
  ['{"sub":"a","ttlSeconds":1e999}', /"ttlSeconds" must be a whole number of seconds from 1 to 604800 \(7 days\), got Infinity/],
  ['{"sub":"a","ttlSeconds":-5}', /from 1 to 604800 .*got -5/],
  ['{"sub":"a","ttlSeconds":0}', /from 1 to 604800 .*got 0/],
  ['{"sub":"a","ttlSeconds":1.5}', /from 1 to 604800 .*got 1\.5/],
  ['{"sub":"a","ttlSeconds":604801}', /from 1 to 604800 .*got 604801/],
  ['{"sub":"a","ttlSeconds":null}', /from 1 to 604800 .*got null/],
  ['{"sub":"a","claims":{"exp":1}}', /"claims\.exp" is set by the gateway/],
  ['{"sub":"a","claims":{"sub":"b"}}', /"claims\.sub": the subject goes in "sub"/],
  ['{"sub":""}', /"sub" must be a non-empty string/],
];

t.test('admin plane: bad input gets catalogued {error: {code, message}}, never Fastify\'s shape', async (t) => {
  const g = await startGateway(t, { extraConfig: 'auth: { dev: true }' });
  for (const c of badInput) {
    const r = await raw(g.adminUrl, c.method, c.path, c.headers, c.body);
    t.equal(r.status, c.status, `${c.name}: status`);
    t.match(r.type, /^application\/json/, `${c.name}: JSON`);
    const b = JSON.parse(r.text) as ErrorBody;
    t.same(Object.keys(b), ['error'], `${c.name}: only {error}`);
    t.equal(b.error.code, c.code, `${c.name}: code`);
    t.ok(b.error.code in catalog, `${c.name}: a catalog code`);
    t.equal(catalog[b.error.code].status, c.status, `${c.name}: the catalog's status`);
    t.notMatch(r.text, /FST_ERR|statusCode/, `${c.name}: nothing of Fastify's own shape`);
  }
  t.equal((await raw(g.adminUrl, 'HEAD', '/_ping')).status, 200, 'HEAD on a GET route still works');
  t.equal((await raw(g.adminUrl, 'POST', '/-/reload')).status, 200, 'POST /-/reload with no body still works');
  t.equal((await raw(g.adminUrl, 'POST', '/-/reload', { 'content-type': 'application/json' }, '{}')).status, 200, 'and with {}');
});

t.test('POST /-/token: no field ignored in silence, a TTL out of range names the range; nothing minted', async (t) => {
  const g = await startGateway(t, { extraConfig: 'auth: { dev: true }' });
  for (const [body, message] of badMints) {
    const r = await raw(g.adminUrl, 'POST', '/-/token', { 'content-type': 'application/json' }, body);
    t.equal(r.status, 400, `${body}: 400`);
    const b = JSON.parse(r.text) as ErrorBody & { token?: string };
    t.equal(b.error?.code, 'GW_ERR_REQ_INVALID_BODY', `${body}: code`);
    t.match(b.error?.message, message, `${body}: message`);
  }
  const ok = await raw(g.adminUrl, 'POST', '/-/token', { 'content-type': 'application/json' }, '{"sub":"a","ttlSeconds":60,"claims":{"plan":"pro"}}');
  t.equal(ok.status, 200, 'the right fields still mint');
  const { expires_at } = JSON.parse(ok.text) as { expires_at: number };
  t.ok(expires_at - Date.now() / 1000 <= 61, 'with the TTL asked for');
});

t.test('data plane over HTTP/1.1: 404, 405, bad JSON, wrong type, too large are catalogued too', async (t) => {
  const g = await startGateway(t, { extraConfig: 'limits: { bodyBytes: 4096 }' });
  const cases = [
    { method: 'GET', path: '/nope', status: 404, code: 'GW_ERR_REQ_NOT_FOUND' },
    { method: 'GET', path: '/v1/completions', status: 405, code: 'GW_ERR_REQ_METHOD_NOT_ALLOWED' },
    { method: 'POST', path: '/v1/completions', headers: { 'content-type': 'application/json' }, body: '{', status: 400, code: 'GW_ERR_REQ_INVALID_JSON' },
    { method: 'POST', path: '/v1/completions', headers: { 'content-type': 'text/plain' }, body: 'x', status: 415, code: 'GW_ERR_REQ_UNSUPPORTED_MEDIA_TYPE' },
    { method: 'POST', path: '/v1/completions', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x'.repeat(8000) }), status: 413, code: 'GW_ERR_REQ_BODY_TOO_LARGE' },
  ];
  for (const c of cases) {
    const r = await raw(g.url, c.method, c.path, c.headers, c.body);
    t.equal(r.status, c.status, `${c.method} ${c.path}: status`);
    t.equal((JSON.parse(r.text) as ErrorBody).error.code, c.code, `${c.method} ${c.path}: code`);
  }
});

/** A gateway with real signing keys (auth.dev off) and the given admin section. */
async function realKeys(t: Test, admin: string, env: NodeJS.ProcessEnv = {}, files: Record<string, string> = {}): Promise<{ gw: Gateway; admin: string; url: string; dir: string; file: string }> {
  const model = await spawnModelServer(['--ttft-ms', '5', '--token-ms', '1', '--tokens', '3']);
  t.teardown(() => model.stop());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-admin-'));
  writeFileSync(path.join(dir, 'k.pem'), generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
  writeFileSync(path.join(dir, 'p.yaml'), 'name: p\nsteps:\n  - use: auth\n');
  for (const [rel, text] of Object.entries(files)) writeFileSync(path.join(dir, rel), text);
  const file = path.join(dir, 'gateway.config.yaml');
  writeFileSync(file, [
    'listen: { port: 0 }',
    admin,
    `upstreams: { local: { url: "${model.url}" } }`,
    'models: { ghost-small: { upstream: local } }',
    'policies: [p.yaml]',
    'auth:',
    '  dev: false',
    '  signingKeys: [{ kid: k1, alg: EdDSA, privateKey: { file: k.pem }, active: true }]',
  ].join('\n'));
  const gw = await Gateway.start({ configFile: file, env: { ...process.env, ...env }, watch: false, logger: { level: 'silent' } });
  t.teardown(() => gw.close(2000));
  return { gw, admin: gw.addresses!.admin!, url: gw.addresses!.cleartext, dir, file };
}


const mint = (admin: string, auth?: string): Promise<Response> => fetch(`${admin}/-/token`, {
  method: 'POST', headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) }, body: JSON.stringify({ sub: 'alice', ttlSeconds: 600, claims: { plan: 'pro' } }),
});

t.test('real signing keys and no admin credential: POST /-/token is refused (403), nothing minted', async (t) => {
  const g = await realKeys(t, 'admin: { port: 0 }');
  const r = await mint(g.admin);
  t.equal(r.status, 403);
  t.equal(((await r.json()) as ErrorBody).error.code, 'GW_ERR_ADMIN_MINT_FORBIDDEN');
  t.equal((await fetch(`${g.admin}/-/reload`, { method: 'POST' })).status, 200, 'reload stays open on loopback without a credential');
});

t.test('with admin.credential: minting and reload need it (constant-time compare); reads stay open', async (t) => {
  const secret = 'correct-horse-battery-staple-0123456789';
  const g = await realKeys(t, 'admin: { port: 0, credential: { env: GG_TEST_ADMIN } }', { GG_TEST_ADMIN: secret });
  for (const [what, auth] of [['none', undefined], ['wrong secret', 'Bearer nope'], ['a prefix of it', `Bearer ${secret.slice(0, 10)}`], ['another scheme', `Basic ${secret}`]] as const) {
    const r = await mint(g.admin, auth);
    t.equal(r.status, 401, `mint, ${what}: 401`);
    t.equal(((await r.json()) as ErrorBody).error.code, 'GW_ERR_ADMIN_UNAUTHORIZED');
    t.match(r.headers.get('www-authenticate'), /^Bearer/);
    const rl = await fetch(`${g.admin}/-/reload`, { method: 'POST', ...(auth ? { headers: { authorization: auth } } : {}) });
    t.equal(rl.status, 401, `reload, ${what}: 401`);
  }
  t.equal(g.gw.lastReload, undefined, 'no refused reload ran');
  const ok = await mint(g.admin, `Bearer ${secret}`);
  t.equal(ok.status, 200);
  const { token } = await ok.json() as { token: string };
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const done = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { authorization: `Bearer ${token}` });
  t.equal(done.status, 200, 'the minted token is accepted by the auth step');
  t.equal((await fetch(`${g.admin}/-/reload`, { method: 'POST', headers: { authorization: `Bearer ${secret}` } })).status, 200, 'reload with the credential');
  t.equal((await fetch(`${g.admin}/-/config`)).status, 200, 'GET /-/config needs none');
  t.equal((await fetch(`${g.admin}/_ping`)).status, 200, 'nor /_ping');
  const cfg = await (await fetch(`${g.admin}/-/config`)).text();
  t.notMatch(cfg, secret, 'the secret is not in /-/config');
});

t.test('the admin credential from a file is re-read on reload (rotation)', async (t) => {
  const g = await realKeys(t, 'admin: { port: 0, credential: { file: admin.secret } }', {}, { 'admin.secret': 'old-secret-aaaaaaaaaaaaaaaa\n' });
  t.equal((await mint(g.admin, 'Bearer old-secret-aaaaaaaaaaaaaaaa')).status, 200, 'the file\'s secret (trimmed) works');
  writeFileSync(path.join(g.dir, 'admin.secret'), 'new-secret-bbbbbbbbbbbbbbbb\n');
  const r = await fetch(`${g.admin}/-/reload`, { method: 'POST', headers: { authorization: 'Bearer old-secret-aaaaaaaaaaaaaaaa' } });
  const body = await r.json() as { ok: boolean; unchanged?: boolean; restartRequired?: string[] };
  t.equal(body.ok, true, 'reload authorized by the running credential');
  t.notOk(body.unchanged, 'the secret file is part of the config');
  t.notOk(body.restartRequired, 'a new admin secret needs no restart');
  t.equal((await mint(g.admin, 'Bearer old-secret-aaaaaaaaaaaaaaaa')).status, 401, 'old secret refused');
  t.equal((await mint(g.admin, 'Bearer new-secret-bbbbbbbbbbbbbbbb')).status, 200, 'new secret accepted');
});

t.test('an admin plane on a non-loopback address needs a credential or an explicit opt-out', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-admin-'));
  const write = (admin: string): string => {
    const f = path.join(dir, `g-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(f, `${admin}\nupstreams: { local: { url: "http://127.0.0.1:9" } }\nmodels: { m: { upstream: local } }\npolicies: []\n`);
    return f;
  };
  for (const host of ['0.0.0.0', '::', '10.1.2.3', 'gateway.internal']) {
    const err = (() => { try { loadConfig(write(`admin: { host: "${host}" }`)); } catch (e) { return e; } })();
    t.type(err, ConfigErrors, `${host}: refused`);
    t.match((err as ConfigErrors).errors[0]!.describe(), /:1:\d+: GW_ERR_CONFIG_INVALID admin\.host .* is not a loopback address and admin\.credential is not set/, `${host}: located, says what to set`);
  }
  for (const host of ['127.0.0.1', '127.0.0.2', '::1', 'localhost']) t.doesNotThrow(() => loadConfig(write(`admin: { host: "${host}" }`)), `${host}: loopback is fine`);
  t.doesNotThrow(() => loadConfig(write('admin: { host: 0.0.0.0, credential: { env: X } }')), 'with a credential');
  t.doesNotThrow(() => loadConfig(write('admin: { host: 0.0.0.0, insecureAllowNoCredential: true }')), 'with the opt-out');
  t.doesNotThrow(() => loadConfig(write('admin: { host: 0.0.0.0, enabled: false }')), 'no admin plane at all');
});

t.test('after a rejected reload, restoring the running files makes /-/config lastReload ok again', async (t) => {
  const policy = 'name: p\nsteps:\n  - use: strip-params\n    params: { remove: [/logprobs] }\n';
  const g = await startGateway(t, { policies: { 'p.yaml': policy } });
  const reload = async (): Promise<{ ok: boolean; unchanged?: boolean }> => (await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' })).json() as Promise<{ ok: boolean; unchanged?: boolean }>;
  const last = async (): Promise<{ ok: boolean; unchanged?: boolean; version: number }> => ((await (await fetch(`${g.adminUrl}/-/config`)).json()) as { lastReload: { ok: boolean; unchanged?: boolean; version: number } }).lastReload;
  const v = g.gw.runtime.version;
  g.write('policies/p.yaml', 'name: p\nsteps:\n  - use: nope\n');
  t.equal((await reload()).ok, false, 'the broken edit is rejected');
  t.equal((await last()).ok, false, '/-/config says so');
  g.write('policies/p.yaml', policy);
  const r = await reload();
  t.same({ ok: r.ok, unchanged: r.unchanged }, { ok: true, unchanged: true }, 'the restored files are the running config');
  const l = await last();
  t.equal(l.ok, true, '/-/config lastReload is ok again');
  t.equal(l.version, v, 'still the same version');
});

t.test('the opt-out starts a non-loopback admin plane without a credential, with a warning in the log', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-admin-'));
  const file = path.join(dir, 'gateway.config.yaml');
  writeFileSync(file, 'listen: { port: 0 }\nadmin: { host: 0.0.0.0, port: 0, insecureAllowNoCredential: true }\nupstreams: { local: { url: "http://127.0.0.1:9", pool: { warm: false } } }\nmodels: { m: { upstream: local } }\npolicies: []\n');
  const lines: string[] = [];
  const stream = new Writable({ write(chunk, _e, cb) { lines.push(String(chunk)); cb(); } });
  const gw = await Gateway.start({ configFile: file, watch: false, logger: { level: 'warn', stream } });
  t.teardown(() => gw.close(2000));
  const warn = lines.map((l) => JSON.parse(l) as { level: number; msg: string; host?: string }).find((l) => /non-loopback address without admin\.credential/.test(l.msg));
  t.ok(warn, 'warned');
  t.equal(warn?.level, 40, 'at warn level');
  t.equal(warn?.host, '0.0.0.0');
  t.equal((await fetch(`http://127.0.0.1:${gw.addresses!.adminPort}/_ping`)).status, 200, 'and serves');
});
