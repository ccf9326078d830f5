/**
 * The Copilot front door's contract, as GitHub's Copilot language server relies on it (no
 * download: real HTTP/2 over TLS with ALPN h2, and HTTP/1.1 over http:// and https://, against a
 * running gateway and the bundled model server).
 *   - the token exchange in Copilot's envelope (token, expires_at, refresh_in > 240, endpoints)
 *   - x-github-request-id on every reply, errors and unknown paths included; no 5xx for a client mistake
 *   - the experiments reply, /models, /copilot_internal/user
 *   - engines mapped to logical models through aliases; prompt and suffix reach the model
 *   - Copilot's headers as facts: version-gate with status 466 on editor-version
 */
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { ClientHttp2Session, IncomingHttpHeaders } from 'node:http2';
import t from 'tap';
import type { Test } from 'tap';
import { generateApiKey, hashApiKey } from '../../core/auth/index.ts';
import { Gateway } from '../../core/gateway.ts';
import { ConfigErrors } from '../../core/errors.ts';
import { startGateway } from '../helpers/gateway.ts';
import type { TestGateway } from '../helpers/gateway.ts';
import { collect, connect, sseData } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';

interface Reply { status: number; headers: IncomingHttpHeaders; text: string }

const EXPERIMENTS = { Configs: [{ Id: 'vscode', Parameters: {} }], AssignmentContext: '' };
const COPILOT_HEADERS = {
  'editor-version': 'vscode/1.95.0', 'editor-plugin-version': 'copilot-chat/0.22.0',
  'copilot-language-server-version': '1.539.0', 'openai-intent': 'copilot-ghost', 'x-copilot-speculative': 'false',
  'vscode-sessionid': 'sess-1', 'vscode-machineid': 'machine-1',
};
const BODY = {
  prompt: '# Path: fib.py\ndef fib(n):\n    ', suffix: '\n\nprint(fib(10))\n', max_tokens: 500, temperature: 0, top_p: 1, n: 1,
  stop: ['\n'], stream: true, extra: { language: 'python', next_indent: 0, trim_by_indentation: true, prompt_tokens: 9, suffix_tokens: 6 },
};

async function copilotGateway(t: Test, extra = ''): Promise<{ g: TestGateway; apiKey: string; cert: string }> {
  const apiKey = generateApiKey();
  const pem = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  const tls = makeCert();
  const g = await startGateway(t, {
    files: {
      'secrets/signing.pem': pem,
      'secrets/api-keys.yaml': `- { sub: alice, hash: "${await hashApiKey(apiKey)}" }\n`,
      'tls/key.pem': tls.key, 'tls/cert.pem': tls.cert,
    },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
    upstreamsYaml: (m) => [
      'upstreams:',
      `  local: { url: ${m.url}, protocol: h2c, pool: { size: 1 }, forwardHeaders: [x-ttft-ms] }`,
      'models:',
      '  ghost-small: { upstream: local, upstreamModel: ghost-small-v1, aliases: [gpt-41-copilot] }',
    ].join('\n'),
    extraConfig: [
      'auth:',
      '  tokenTtl: 30m',
      '  signingKeys: [{ kid: k1, privateKey: { file: secrets/signing.pem } }]',
      '  credentials: { apiKeys: { file: secrets/api-keys.yaml } }',
      'copilot:',
      '  enabled: true',
      extra,
    ].join('\n'),
    policies: {
      'copilot.yaml': [
        'name: copilot',
        'match: { paths: [/v1/engines/:model/completions] }',
        'steps:',
        '  - use: auth',
        '  - use: version-gate',
        '    params: { minimum: { vscode: "1.90.0" }, status: 466, message: "Please upgrade your editor." }',
        '  - use: supersede',
        '    params: { keyFrom: { header: vscode-sessionid } }',
        '  - use: set-params',
        '    when: { "==": [{ var: request.headers.openai-intent }, "copilot-ghost"] }',
        '    params: { set: { /temperature: 0.2 } }',
        '  - use: set-params',
        '    name: short-speculative',
        '    when: { "==": [{ var: request.headers.x-copilot-speculative }, "true"] }',
        '    params: { set: { /max_tokens: 64 } }',
      ].join('\n'),
    },
  });
  return { g, apiKey, cert: tls.cert };
}

function h1(url: string, method: string, headers: Record<string, string> = {}, body?: string, ca?: string): Promise<Reply> {
  const mod = url.startsWith('https:') ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(url, { method, headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : {}) }, ca, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function h2(s: ClientHttp2Session, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Reply> {
  const st = s.request({ ':method': method, ':path': path, ...headers, ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : {}) });
  st.end(body);
  return collect(st);
}

t.test('the front door over TLS h2, HTTP/1.1 over https:// and over http://', async (t) => {
  const { g, apiKey, cert } = await copilotGateway(t);
  const tlsUrl = g.gw.addresses!.tls!;
  const s = await connect(tlsUrl, { ca: cert });
  t.teardown(() => s.close());
  t.equal(s.alpnProtocol, 'h2', 'ALPN chose h2');

  type Send = (method: string, path: string, headers?: Record<string, string>, body?: string) => Promise<Reply>;
  const clients: Array<[string, Send, string]> = [
    ['h2 over TLS', (m, p, h, b) => h2(s, m, p, h, b), tlsUrl],
    ['HTTP/1.1 over TLS', (m, p, h, b) => h1(tlsUrl + p, m, h, b, cert), tlsUrl],
    ['HTTP/1.1 over http://', (m, p, h, b) => h1(g.url + p, m, h, b), g.url],
  ];
  const all: Array<[string, Reply]> = [];
  for (const [name, send, origin] of clients) {
    await t.test(name, async (t) => {
      const go: Send = async (m, p, h, b) => { const r = await send(m, p, h, b); all.push([`${name} ${m} ${p}`, r]); return r; };
      const tok = await go('GET', '/copilot_internal/v2/token', { authorization: `Bearer ${apiKey}` });
      t.equal(tok.status, 200, tok.text);
      const env = JSON.parse(tok.text) as { token: string; expires_at: number; refresh_in: number; endpoints: Record<string, string> };
      t.type(env.token, 'string');
      t.notOk(env.token.includes('='), 'the token has no "=" (the client splits its token on it)');
      t.ok(env.refresh_in > 240, `refresh_in ${env.refresh_in} > 240`);
      t.ok(Math.abs(env.expires_at - (Date.now() / 1000 + 1800)) < 60, 'expires_at is epoch seconds, tokenTtl ahead');
      t.same(env.endpoints, { api: origin, proxy: origin, telemetry: origin, 'origin-tracker': origin }, 'endpoints: the origin the request came in on');
      t.equal(tok.headers['cache-control'], 'no-store');
      const ghTok = await go('GET', '/copilot_internal/v2/token', { authorization: `token ${apiKey}` });
      t.equal(ghTok.status, 200, 'GitHub\'s "token" scheme works too');

      for (const [auth, code] of [[undefined, 'GW_ERR_AUTH_MISSING_TOKEN'], ['Bearer ggk_nope', 'GW_ERR_AUTH_INVALID_CREDENTIAL']] as const) {
        const bad = await go('GET', '/copilot_internal/v2/token', auth ? { authorization: auth } : {});
        t.equal(bad.status, 401);
        t.equal(JSON.parse(bad.text).error.code, code);
      }

      t.equal((await go('GET', '/copilot_internal/user')).status, 404, '/copilot_internal/user: 404');
      t.equal((await go('GET', '/copilot_internal/content_exclusion')).status, 404, 'other /copilot_internal paths: 404');
      t.equal((await go('GET', '/embeddings/models')).status, 404, '/embeddings/models: 404');
      const models = await go('GET', '/models');
      t.equal(models.status, 200);
      t.same(JSON.parse(models.text), { object: 'list', data: [], models: [] });
      const exp = await go('GET', '/telemetry');
      t.equal(exp.status, 200);
      t.same(JSON.parse(exp.text), EXPERIMENTS, 'the experiments reply the client accepts');
      t.equal((await go('POST', '/telemetry', {}, '[{"ev":1}]')).status, 204, 'telemetry events are dropped');

      const auth = { authorization: `Bearer ${env.token}`, ...COPILOT_HEADERS, 'x-request-id': `rid-${name.replace(/\W/g, '')}` };
      const ok = await go('POST', '/v1/engines/gpt-41-copilot/completions', auth, JSON.stringify(BODY));
      t.equal(ok.status, 200, ok.text.slice(0, 200));
      const events = sseData(ok.text);
      t.equal(events.at(-1), '[DONE]');
      t.match(JSON.parse(events[0]!), { choices: [{ text: String, index: 0 }] }, 'Copilot\'s SSE shape');
      t.equal(ok.headers['x-github-request-id'], auth['x-request-id'], 'the completion carries the request id as x-github-request-id');
      const seen = (await g.modelRequests()).find((r) => r.headers['x-request-id'] === auth['x-request-id']);
      t.ok(seen, 'the model got the request');
      t.equal(seen!.body.model, 'ghost-small-v1', 'engine gpt-41-copilot → alias of ghost-small → its upstream model');
      t.equal(seen!.body.prompt, BODY.prompt, 'prompt reaches the model');
      t.equal(seen!.body.suffix, BODY.suffix, 'suffix reaches the model');
      t.equal(seen!.body.temperature, 0.2, 'the set-params step ran (openai-intent is a fact)');
      t.same(seen!.body.extra, BODY.extra, 'extra is forwarded as sent');
      t.equal(seen!.body.max_tokens, 500, 'not speculative: max_tokens as sent');
      t.equal(seen!.headers.authorization, undefined, 'the client\'s token is not forwarded');

      const old = await go('POST', '/v1/engines/gpt-41-copilot/completions', { ...auth, 'editor-version': 'vscode/1.80.0' }, JSON.stringify(BODY));
      t.equal(old.status, 466, 'version-gate on editor-version with status 466 (Copilot\'s "client not supported")');
      t.match(JSON.parse(old.text), { error: { code: 'GW_ERR_POLICY_UPGRADE_REQUIRED', message: 'Please upgrade your editor.', minimum_version: '1.90.0' } });

      const unknown = await go('POST', '/v1/engines/no-such-engine/completions', auth, JSON.stringify(BODY));
      t.equal(unknown.status, 404, 'an unknown engine is a 404, not a 5xx');
      t.equal(JSON.parse(unknown.text).error.code, 'GW_ERR_ROUTE_UNKNOWN_MODEL');
      const badJson = await go('POST', '/v1/engines/gpt-41-copilot/completions', auth, '{"prompt":');
      t.equal(badJson.status, 400);
      const noToken = await go('POST', '/v1/engines/gpt-41-copilot/completions', COPILOT_HEADERS, JSON.stringify(BODY));
      t.equal(noToken.status, 401, 'no token: 401 (the client fetches a new one)');
      t.equal((await go('GET', '/v1/engines/gpt-41-copilot/completions', auth)).status, 405);
    });
  }

  t.test('x-github-request-id on every reply, and no 5xx', async (t) => {
    t.equal(all.length, 3 * 16, 'every reply of the three clients is checked');
    for (const [what, r] of all) {
      t.match(r.headers['x-github-request-id'], /^[A-Za-z0-9._:-]{1,128}$/, `${what} → ${r.status} has x-github-request-id`);
      t.ok(r.status < 500, `${what} → ${r.status} is not a 5xx`);
    }
  });
});

t.test('supersede keyed on the client\'s session: a newer completion cancels the older one', async (t) => {
  const { g, apiKey, cert } = await copilotGateway(t);
  const s = await connect(g.gw.addresses!.tls!, { ca: cert });
  t.teardown(() => s.close());
  const { token } = JSON.parse((await h2(s, 'GET', '/copilot_internal/v2/token', { authorization: `Bearer ${apiKey}` })).text) as { token: string };
  const hdr = (session: string, rid: string, slow = false): Record<string, string> => ({
    authorization: `Bearer ${token}`, ...COPILOT_HEADERS, 'vscode-sessionid': session, 'x-request-id': rid, ...(slow ? { 'x-ttft-ms': '5000' } : {}),
  });
  const older = h2(s, 'POST', '/v1/engines/gpt-41-copilot/completions', hdr('S1', 'older', true), JSON.stringify(BODY));
  const other = h2(s, 'POST', '/v1/engines/gpt-41-copilot/completions', hdr('S2', 'other', true), JSON.stringify(BODY));
  // Wait until the model has both (they are in flight), then a newer one for session S1.
  while ((await g.modelStats()).inFlight < 2) await new Promise((r) => setTimeout(r, 20));
  const newer = await h2(s, 'POST', '/v1/engines/gpt-41-copilot/completions', hdr('S1', 'newer'), JSON.stringify(BODY));
  t.equal(newer.status, 200);
  const o = await older;
  // The model sends its headers before the first token: the older reply had started, so it ends
  // with an SSE error event and a reset, never [DONE].
  t.match(o.text, /GW_ERR_POLICY_SUPERSEDED/, 'the older completion of the same session is superseded');
  t.not(sseData(o.text).at(-1), '[DONE]', 'and does not look complete');
  t.equal(o.headers['x-github-request-id'], 'older', 'its reply carries x-github-request-id');
  const spec = await h2(s, 'POST', '/v1/engines/gpt-41-copilot/completions', { ...hdr('S3', 'spec'), 'x-copilot-speculative': 'true' }, JSON.stringify(BODY));
  t.equal(spec.status, 200);
  t.equal((await g.modelRequests()).find((r) => r.headers['x-request-id'] === 'spec')?.body.max_tokens, 64, 'x-copilot-speculative is a fact: a step shortened the speculative request');
  const stats = await g.modelStats();
  t.ok(stats.aborts.some((a) => a.id === 'older'), 'its upstream stream was reset');
  t.ok(!stats.aborts.some((a) => a.id === 'other'), 'another session\'s completion is untouched');
  const rest = await other;
  t.equal(rest.status, 200, 'and completes');
});

t.test('configured endpoints are sent as they are (behind a load balancer or a DNS name)', async (t) => {
  const { g, apiKey } = await copilotGateway(t, '  endpoints: { api: "https://copilot.example.com/", telemetry: "https://telemetry.example.com" }');
  const r = await h1(`${g.url}/copilot_internal/v2/token`, 'GET', { authorization: `Bearer ${apiKey}`, host: 'evil.example' });
  t.same(JSON.parse(r.text).endpoints, {
    api: 'https://copilot.example.com', proxy: 'https://copilot.example.com', telemetry: 'https://telemetry.example.com', 'origin-tracker': 'https://copilot.example.com',
  });
  await h1(`${g.url}/copilot_internal/v2/token`, 'GET', { authorization: 'Bearer nope' });
  await h1(`${g.url}/copilot_internal/user`, 'GET');
  const metrics = await (await fetch(`${g.adminUrl}/metrics`)).text();
  for (const [route, status] of [['token', 200], ['token', 401], ['user', 404]] as const) {
    t.match(metrics, new RegExp(`^ghostgate_copilot_front_door_total\\{route="${route}",status="${status}"\\} 1$`, 'm'), `metered: ${route} ${status}`);
  }
  const weird = await copilotGateway(t);
  const odd = await h1(`${weird.g.url}/copilot_internal/v2/token`, 'GET', { authorization: `Bearer ${weird.apiKey}`, host: 'x_y:1' });
  t.equal(JSON.parse(odd.text).endpoints.api, weird.g.url, 'a Host we would not echo: the listener\'s own address');
});

t.test('enabling, disabling and changing endpoints are reloads', async (t) => {
  const { g, apiKey } = await copilotGateway(t);
  const { readFileSync } = await import('node:fs');
  const text = readFileSync(g.configFile, 'utf8');
  const token = (): Promise<Reply> => h1(`${g.url}/copilot_internal/v2/token`, 'GET', { authorization: `Bearer ${apiKey}` });
  t.equal((await token()).status, 200);
  g.write('gateway.config.yaml', text.replace('  enabled: true', '  enabled: false'));
  t.equal((await g.gw.reload('test')).ok, true);
  const off = await token();
  t.equal(off.status, 404, 'disabled by a reload');
  t.equal(off.headers['x-github-request-id'], undefined);
  g.write('gateway.config.yaml', text.replace('  enabled: true', '  enabled: true\n  endpoints: { api: "https://gw.example.com" }'));
  t.equal((await g.gw.reload('test')).ok, true);
  const on = await token();
  t.equal(on.status, 200, 'enabled again');
  t.equal(JSON.parse(on.text).endpoints.proxy, 'https://gw.example.com', 'with the new endpoints');
  g.write('gateway.config.yaml', text.replace('  enabled: true', '  enabled: true\n  endpoints: { api: "not a url" }'));
  const bad = await g.gw.reload('test');
  t.equal(bad.ok, false, 'an invalid section is refused');
  t.equal(JSON.parse((await token()).text).endpoints.proxy, 'https://gw.example.com', 'and the last good config keeps running');
});

t.test('disabled (the default): the front door is not there, and no x-github-request-id', async (t) => {
  const g = await startGateway(t, {});
  const r = await h1(`${g.url}/copilot_internal/v2/token`, 'GET', { authorization: 'Bearer x' });
  t.equal(r.status, 404);
  t.equal(JSON.parse(r.text).error.code, 'GW_ERR_REQ_NOT_FOUND');
  t.equal(r.headers['x-github-request-id'], undefined);
  const tel = await h1(`${g.url}/telemetry`, 'GET');
  t.equal(tel.status, 404);
});

t.test('config: enabling needs the token exchange and a refresh_in above 240 s', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['no auth', 'copilot: { enabled: true }', /copilot\.enabled needs the auth: section/],
    ['short tokens', 'auth: { tokenTtl: 5m, dev: true, credentials: { apiKeys: { env: GG_KEYS } } }\ncopilot: { enabled: true }', /refresh_in above 240 s.*give 150 s/],
    ['bad endpoint', 'copilot: { enabled: true, endpoints: { api: "ftp://x" } }', /copilot\.endpoints\.api|\/copilot\/endpoints\/api/],
  ];
  for (const [name, yaml, re] of cases) {
    const err = await startGateway(t, { extraConfig: yaml, noModel: true, env: { GG_KEYS: '[]' } }).then(() => undefined, (e: unknown) => e);
    t.ok(err instanceof ConfigErrors, `${name}: refused`);
    t.match((err as ConfigErrors).errors.map((e) => e.message).join('\n'), re, name);
  }
  t.ok(Gateway, 'module loads');
});
