/**
 * Passthrough routes (`passthrough:`, @fastify/http-proxy) and `GET /v1/models`, against a real
 * upstream on loopback: the client's token is verified and never forwarded, the upstream's key is
 * put in its place, the body goes through untouched, failures are coded; the `openai` SDK's
 * `models.list()` and `embeddings.create()` work against the gateway.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import OpenAI from 'openai';
import t from 'tap';
import { loadConfig } from '../../core/config/load.ts';
import { ConfigErrors } from '../../core/errors.ts';
import { startGateway } from '../helpers/gateway.ts';
import { fakeOpenAI, passthroughRig } from '../helpers/fake-openai.ts';
import { collect, connect, post, post1 } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';

const EMBED = { model: 'text-embedding-3-small', input: 'hello' };

t.test('passthrough: the client\'s token is verified and replaced by the upstream\'s key; body and answer go through (HTTP/2 and HTTP/1.1)', async (t) => {
  const { g, up, token } = await passthroughRig(t);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/embeddings', EMBED, { authorization: `Bearer ${token}`, 'user-agent': 'test-agent', cookie: 'a=b', 'openai-organization': 'org-x' });
  t.equal(r.status, 200, r.text);
  t.same(JSON.parse(r.text).data[0].embedding, [0.25, -0.5, 5], 'the upstream\'s answer');
  t.equal(r.headers['x-upstream'], 'fake', 'its headers too');
  t.equal(up.seen.length, 1);
  const got = up.seen[0]!;
  t.equal(got.method, 'POST');
  t.equal(got.url, '/v1/embeddings');
  t.same(JSON.parse(got.body), EMBED, 'the body as the client sent it');
  t.equal(got.headers.authorization, 'Bearer sk-upstream-secret', 'the upstream\'s own key');
  t.notMatch(JSON.stringify(got.headers), token, 'the client\'s token never reaches the upstream');
  t.equal(got.headers['user-agent'], 'test-agent', 'forwardHeaders pass');
  t.notOk(got.headers.cookie, 'other client headers do not');
  t.notOk(got.headers['openai-organization']);
  const h1 = await post1(`${g.url}/v1/moderations`, { input: 'x' }, { authorization: `Bearer ${token}` });
  t.equal(h1.status, 200, 'HTTP/1.1 too');
  t.equal(up.seen.at(-1)!.url, '/v1/moderations');
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  t.match(text, /^ghostgate_passthrough_requests_total\{path="\/v1\/embeddings",upstream="openai",status="200"\} 1$/m);
});

t.test('passthrough: no token, a bad one, a method not listed, shutdown: coded refusals, nothing forwarded', async (t) => {
  const { g, up, token } = await passthroughRig(t);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const none = await post(s, '/v1/embeddings', EMBED);
  t.equal(none.status, 401);
  t.equal(JSON.parse(none.text).error.code, 'GW_ERR_AUTH_MISSING_TOKEN');
  t.match(String(none.headers['www-authenticate']), /^Bearer/);
  const bad = await post(s, '/v1/embeddings', EMBED, { authorization: `Bearer ${token.slice(0, -4)}AAAA` });
  t.equal(bad.status, 401);
  t.match(JSON.parse(bad.text).error.code, /^GW_ERR_AUTH_/);
  const big = await post(s, '/v1/embeddings', { input: 'x'.repeat(1_048_576) }, { authorization: `Bearer ${token}`, 'content-length': String(1_048_576 + 12) });
  t.equal(big.status, 413, 'a body over limits.bodyBytes (by its Content-Length)');
  t.equal(JSON.parse(big.text).error.code, 'GW_ERR_REQ_BODY_TOO_LARGE');
  const get = await collect(s.request({ ':method': 'GET', ':path': '/v1/embeddings', authorization: `Bearer ${token}` }));
  t.equal(get.status, 404);
  t.equal(JSON.parse(get.text).error.code, 'GW_ERR_REQ_NOT_FOUND');
  t.equal(up.seen.length, 0, 'the upstream saw none of them');
});

t.test('passthrough: a reload that changes the upstream\'s key applies to the next request; a changed path list says restart', async (t) => {
  const up = await fakeOpenAI(t);
  const g = await startGateway(t, {
    files: { 'secrets/openai.key': 'sk-first' },
    upstreamsYaml: (m) => ['upstreams:', `  local: { url: ${m.url}, protocol: h2c }`, `  openai: { url: ${up.url}, protocol: http1, credential: { secret: { file: secrets/openai.key } } }`, 'models:', '  ghost-small: { upstream: local }'].join('\n'),
    extraConfig: 'passthrough: [{ path: /v1/embeddings, upstream: openai, auth: false }]',
  });
  t.equal((await post1(`${g.url}/v1/embeddings`, EMBED)).status, 200);
  t.equal(up.seen.at(-1)!.headers.authorization, 'Bearer sk-first');
  g.write('secrets/openai.key', 'sk-second');
  const r1 = await (await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' })).json() as { ok: boolean; restartRequired?: string[] };
  t.equal(r1.ok, true);
  t.notOk(r1.restartRequired, 'a new key needs no restart');
  t.equal((await post1(`${g.url}/v1/embeddings`, EMBED)).status, 200);
  t.equal(up.seen.at(-1)!.headers.authorization, 'Bearer sk-second', 'the next request carries the new key');
  g.write('gateway.config.yaml', readFileSync(g.configFile, 'utf8').replace('path: /v1/embeddings', 'path: /v1/moderations'));
  const r2 = await (await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' })).json() as { ok: boolean; restartRequired?: string[] };
  t.equal(r2.ok, true);
  t.same(r2.restartRequired, ['passthrough'], 'a new path list needs a restart');
  const gone = await post1(`${g.url}/v1/embeddings`, EMBED);
  t.equal(gone.status, 404, 'a path the running config no longer lists is refused');
  t.equal(JSON.parse(gone.text).error.code, 'GW_ERR_REQ_NOT_FOUND');
});

t.test('passthrough: an upstream 503 is relayed, never retried (GET and POST)', async (t) => {
  const { g, up, token } = await passthroughRig(t, '  - { path: /v1/files, upstream: openai, methods: [GET, POST] }');
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const get = await collect(s.request({ ':method': 'GET', ':path': '/v1/files/busy', authorization: `Bearer ${token}` }));
  t.equal(get.status, 503, 'GET: the upstream\'s 503');
  const post503 = await post(s, '/v1/files/busy', {}, { authorization: `Bearer ${token}` });
  t.equal(post503.status, 503, 'POST: the upstream\'s 503');
  t.same(up.seen.map((x) => `${x.method} ${x.url}`), ['GET /v1/files/busy', 'POST /v1/files/busy'], 'each reached the upstream once');
});

t.test('passthrough: the upstream down gives a coded 502', async (t) => {
  const { g, up, token } = await passthroughRig(t);
  await up.close();
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const r = await post(s, '/v1/embeddings', EMBED, { authorization: `Bearer ${token}` });
  t.equal(r.status, 502, r.text);
  t.equal(JSON.parse(r.text).error.code, 'GW_ERR_UPSTREAM_CONNECT');
});

t.test('GET /v1/models: logical models in OpenAI\'s shape, behind the token; the openai SDK lists them and makes embeddings', async (t) => {
  const { g, up, token } = await passthroughRig(t);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const none = await collect(s.request({ ':method': 'GET', ':path': '/v1/models' }));
  t.equal(none.status, 401);
  t.equal(JSON.parse(none.text).error.code, 'GW_ERR_AUTH_MISSING_TOKEN');
  const r = await collect(s.request({ ':method': 'GET', ':path': '/v1/models', authorization: `Bearer ${token}` }));
  t.equal(r.status, 200);
  const list = JSON.parse(r.text) as { object: string; data: Array<{ id: string; object: string; created: number; owned_by: string }> };
  t.equal(list.object, 'list');
  t.same(list.data.map((m) => m.id), ['ghost-small', 'ghost-large'], 'logical models, not aliases');
  for (const m of list.data) {
    t.equal(m.object, 'model');
    t.ok(Number.isInteger(m.created) && m.created > 1_600_000_000, 'created: seconds since the epoch');
    t.equal(m.owned_by, 'ghostgate');
  }
  // The openai SDK (HTTP/1.1 via fetch), pointed at the gateway with a gateway token.
  const client = new OpenAI({ baseURL: `${g.url}/v1`, apiKey: token, maxRetries: 0 });
  const ids: string[] = [];
  for await (const m of client.models.list()) ids.push(m.id);
  t.same(ids, ['ghost-small', 'ghost-large'], 'models.list()');
  t.equal((await client.models.retrieve('ghost')).id, 'ghost-small', 'models.retrieve() of an alias names its logical model');
  const e = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'abc', encoding_format: 'float' });
  t.same(e.data[0]!.embedding, [0.25, -0.5, 3], 'embeddings.create() through the passthrough');
  t.equal(up.seen.at(-1)!.headers.authorization, 'Bearer sk-upstream-secret');
  const bad = new OpenAI({ baseURL: `${g.url}/v1`, apiKey: 'not-a-token', maxRetries: 0 });
  await t.rejects(bad.models.list(), { status: 401 } as unknown as Error, 'a bad key is refused');
});

t.test('passthrough to an https upstream verifies its certificate (untrusted: 502; with tls.ca: 200)', async (t) => {
  const cert = makeCert();
  t.teardown(() => rmSync(cert.dir, { recursive: true, force: true }));
  const server = https.createServer({ key: cert.key, cert: cert.cert }, (req, res) => { req.resume(); req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"ok":true}'); }); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  const url = `https://localhost:${(server.address() as AddressInfo).port}`;
  for (const [name, tls, status] of [['untrusted', '', 502], ['trusted by tls.ca', ', tls: { ca: { file: ca.pem } }', 200]] as const) {
    const g = await startGateway(t, {
      files: { 'ca.pem': cert.cert },
      upstreamsYaml: (m) => ['upstreams:', `  local: { url: ${m.url}, protocol: h2c }`, `  secure: { url: ${url}, protocol: h2${tls} }`, 'models:', '  ghost-small: { upstream: local }'].join('\n'),
      extraConfig: 'passthrough: [{ path: /v1/embeddings, upstream: secure, auth: false }]',
    });
    const r = await post1(`${g.url}/v1/embeddings`, EMBED);
    t.equal(r.status, status, `${name}: ${r.text.slice(0, 100)}`);
  }
});

t.test('passthrough config is checked at load: upstream known, paths of its own, auth configured or waived', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gg-pt-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const base = 'upstreams:\n  local: { url: "http://127.0.0.1:8000" }\nmodels:\n  m: { upstream: local }\n';
  const errs = (yaml: string): string[] => {
    writeFileSync(path.join(dir, 'g.yaml'), base + yaml);
    try { loadConfig(path.join(dir, 'g.yaml'), {}); return []; } catch (e) {
      if (!(e instanceof ConfigErrors)) throw e;
      return e.errors.map((x) => `${x.code}: ${x.message}`);
    }
  };
  t.match(errs('auth: { dev: true }\npassthrough: [{ path: /v1/embeddings, upstream: nope }]\n'), [/GW_ERR_CONFIG_UNKNOWN_UPSTREAM/]);
  t.match(errs('auth: { dev: true }\npassthrough: [{ path: /v1/chat/completions, upstream: local }]\n'), [/overlaps \/v1\/chat\/completions/]);
  t.match(errs('auth: { dev: true }\npassthrough: [{ path: /v1, upstream: local }]\n'), [/overlaps/], 'a prefix of the gateway\'s own paths');
  t.match(errs('auth: { dev: true }\npassthrough: [{ path: /v1/files, upstream: local }, { path: /v1/files/x, upstream: local }]\n'), [/overlaps another entry/]);
  t.match(errs('passthrough: [{ path: /v1/embeddings, upstream: local }]\n'), [/no auth: section/]);
  t.same(errs('passthrough: [{ path: /v1/embeddings, upstream: local, auth: false }]\n'), [], 'auth waived on purpose');
  t.same(errs('auth: { dev: true }\npassthrough: [{ path: /v1/embeddings, upstream: local }]\n'), []);
  t.match(errs('passthrough: [{ path: "v1/x", upstream: local, auth: false }]\n'), [/GW_ERR_CONFIG_SCHEMA|GW_ERR_CONFIG/]);
});
