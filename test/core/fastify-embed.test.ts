/**
 * ghostgate registered into someone else's Fastify application (`ghostgate/fastify`): the
 * application's own routes, parser and 404 stay its own; ghostgate's completion route streams
 * through the policy pipeline to a real model server; closing the application lets a streaming
 * request finish and closes ghostgate's upstream connections.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Fastify from 'fastify';
import t from 'tap';
import ghostgate from 'ghostgate/fastify';
import { spawnModelServer } from '../model-server/fixtures/spawn.ts';
import { connect, post, post1, until } from '../helpers/h2.ts';

interface Stats { sessions: { active: number }; completed: number }

async function setUp(t: { teardown(fn: () => unknown): void }, modelArgs: string[] = ['--ttft-ms', '20', '--token-ms', '2', '--tokens', '8']): Promise<{ configFile: string; dir: string; stats(): Promise<Stats> }> {
  const model = await spawnModelServer(modelArgs);
  t.teardown(() => model.stop());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-embed-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'policies'));
  writeFileSync(path.join(dir, 'policies/tag.yaml'), 'name: tag\nsteps:\n  - use: set-headers\n    params: { response: { x-policy: embedded } }\n');
  const configFile = path.join(dir, 'gateway.config.yaml');
  writeFileSync(configFile, [
    'upstreams:',
    `  local: { url: ${model.url}, protocol: h2c, pool: { size: 1 } }`,
    'models: { ghost-small: { upstream: local } }',
    'defaultModel: ghost-small',
    'limits: { bodyBytes: 4096 }',
    'auth: { dev: true }',
    'logging: { level: silent }',
    '',
  ].join('\n'));
  return { configFile, dir, stats: async () => (await fetch(`${model.url}/_stats`)).json() as Promise<Stats> };
}

t.test('an HTTP/1.1 application: its own routes and ghostgate\'s side by side', async (t) => {
  const { configFile, dir, stats } = await setUp(t);
  const app = Fastify();
  t.teardown(() => app.close());
  app.get('/mine', async () => ({ mine: true }));
  app.post('/echo', async (req) => ({ got: req.body }));
  await app.register(ghostgate, { configFile, watch: false });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });

  const r = await post1(`${base}/v1/completions`, { prompt: 'hello', stream: true, max_tokens: 8 });
  t.equal(r.status, 200, 'a completion streams through the application\'s server');
  t.ok(r.complete && r.events.at(-1) === '[DONE]', 'to its end');
  t.ok(r.events.length > 2, `${r.events.length} SSE events`);
  t.equal(r.headers['x-policy'], 'embedded', 'through the policy pipeline');
  t.equal((await stats()).completed, 1, 'the model served it');

  t.same(await (await fetch(`${base}/mine`)).json(), { mine: true }, 'the application\'s own route');
  const echo = await fetch(`${base}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' });
  t.same(await echo.json(), { got: { a: 1 } }, 'the application\'s JSON parser is untouched');
  const nf = await fetch(`${base}/nope`);
  t.equal(nf.status, 404);
  t.match(await nf.json(), { message: 'Route GET:/nope not found' }, 'unknown paths keep the application\'s own 404');
  const bad = await post1(`${base}/v1/completions`, '{"prompt": ');
  t.equal(bad.status, 400);
  t.match(JSON.parse(bad.text), { error: { code: 'GW_ERR_REQ_INVALID_JSON' } }, 'ghostgate\'s routes answer with its coded errors');
  const big = await post1(`${base}/v1/completions`, { prompt: 'x'.repeat(5000) });
  t.equal(big.status, 413, 'limits.bodyBytes applies to ghostgate\'s routes');
  t.match(JSON.parse(big.text), { error: { code: 'GW_ERR_REQ_BODY_TOO_LARGE' } });
  const deep = await post1(`${base}/v1/completions`, `{"prompt":"x","a":${'['.repeat(70)}${']'.repeat(70)}}`);
  t.match(JSON.parse(deep.text), { error: { code: 'GW_ERR_REQ_JSON_TOO_DEEP' } }, 'and limits.jsonDepth');
  const jwks = await (await fetch(`${base}/.well-known/jwks.json`)).json() as { keys: unknown[] };
  t.equal(jwks.keys.length, 1, 'the token routes are served (auth configured)');

  // A reload through app.ghostgate: a valid edit applies, an invalid one keeps the running config.
  writeFileSync(path.join(dir, 'policies/tag.yaml'), 'name: tag\nsteps:\n  - use: set-headers\n    params: { response: { x-policy: reloaded } }\n');
  t.match(await app.ghostgate.reload('test'), { ok: true });
  t.equal((await post1(`${base}/v1/completions`, { prompt: 'x' })).headers['x-policy'], 'reloaded', 'the reload applied');
  writeFileSync(path.join(dir, 'policies/tag.yaml'), 'name: tag\nsteps:\n  - use: no-such-plugin\n');
  t.match(await app.ghostgate.reload('test'), { ok: false, error: { code: 'GW_ERR_CONFIG_UNKNOWN_PLUGIN' } });
  t.equal((await post1(`${base}/v1/completions`, { prompt: 'x' })).headers['x-policy'], 'reloaded', 'a rejected reload keeps the last good config');
});

t.test('an HTTP/2 application; closing it lets a streaming request finish, then closes ghostgate', async (t) => {
  // Slow tokens: the request is still streaming when the application starts closing.
  const { configFile, stats } = await setUp(t, ['--ttft-ms', '20', '--token-ms', '40', '--tokens', '25']);
  const app = Fastify({ http2: true });
  let closed = false;
  t.teardown(() => (closed ? undefined : app.close()));
  app.get('/mine', async () => ({ mine: true }));
  await app.register(ghostgate, { configFile, watch: false });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  const s = await connect(base);
  t.teardown(() => s.destroy());

  t.equal((await post(s, '/v1/completions', { prompt: 'x', max_tokens: 4 })).status, 200);
  await until(async () => (await stats()).sessions.active >= 1);
  const inflight = post(s, '/v1/completions', { prompt: 'long', stream: true });
  await until(() => app.ghostgate.runtime.inflight === 1);
  const closing = app.close().then(() => { closed = true; });
  const r = await inflight;
  t.equal(r.status, 200);
  t.ok(r.complete && r.events.at(-1) === '[DONE]', 'the request in flight at close finished whole');
  t.equal(r.events.length, 26, 'every token, then [DONE]');
  await closing;
  t.ok(closed, 'app.close() resolved');
  await until(async () => (await stats()).sessions.active === 0);
  t.pass('ghostgate\'s upstream sessions are closed');
});
