/**
 * Header values from policies that cannot be sent: a CR or LF (which would end the header and
 * start another), another control character, a character outside Latin-1.
 *
 * - Static (`set-headers` params, on the response or the upstream request, also from `${ENV}`):
 *   refused at load, `GW_ERR_CONFIG_PLUGIN_PARAMS` at the step's params (file:line:column), by
 *   `ghostgate validate` too. Before, a CR/LF was refused by the params schema with a bare pattern and a NUL
 *   went through: HTTP/2 sent it as it was, HTTP/1.1 failed every request with a 500.
 * - At run time (a plugin's LocalReply headers): `500 GW_ERR_POLICY_STEP_FAILED`, counted in
 *   `ghostgate_plugin_failures_total{reason="bad_result"}` and logged naming the plugin, over
 *   HTTP/2 and HTTP/1.1, cleartext and TLS. Before, HTTP/2 sent the header as it was and
 *   HTTP/1.1 answered `500 GW_ERR_SERVER_INTERNAL` naming nobody.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { Gateway } from '../../core/gateway.ts';
import { ConfigErrors } from '../../core/errors.ts';
import { startCli } from '../cli/run.ts';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post, post1 } from '../helpers/h2.ts';
import { assertStepFailures } from '../helpers/step-failures.ts';
import { makeCert } from '../helpers/tls.ts';

const cert = makeCert();

/** A config folder whose one policy sets `side` header x-a to `yamlValue` (YAML source text). */
function project(side: 'response' | 'upstream', yamlValue: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-hv-'));
  mkdirSync(path.join(dir, 'policies'));
  writeFileSync(path.join(dir, 'gateway.config.yaml'), 'upstreams: { local: { url: "http://127.0.0.1:9" } }\nmodels: { ghost-small: { upstream: local } }\npolicies: [policies/*.yaml]\nadmin: { enabled: false }\nlisten: { host: 127.0.0.1, port: 0 }\n');
  writeFileSync(path.join(dir, 'policies/p.yaml'), ['name: p', 'steps:', '  - use: set-headers', '    params:', `      ${side}:`, `        x-a: ${yamlValue}`, ''].join('\n'));
  return dir;
}

const STATIC: Array<[what: string, side: 'response' | 'upstream', yaml: string, why: string, env?: Record<string, string>]> = [
  ['CR LF', 'response', '"a\\r\\nset-cookie: b"', 'a line break (CR or LF)'],
  ['LF', 'upstream', '"a\\nb"', 'a line break (CR or LF)'],
  ['NUL', 'response', '"a\\0b"', 'a control character (0x00)'],
  ['DEL', 'upstream', '"a\\x7fb"', 'a control character (0x7f)'],
  ['outside Latin-1', 'response', '"5 €"', 'a character outside Latin-1 (U+20AC)'],
  ['LF from ${ENV}', 'response', '"${HV_VALUE}"', 'a line break (CR or LF)', { HV_VALUE: 'a\nb' }],
];

t.test('set-headers: a value that cannot be sent is a config error at its file:line (start and validate)', async (t) => {
  for (const [what, side, yaml, why, env] of STATIC) {
    const dir = project(side, yaml);
    const expected = `p.yaml:5:7: GW_ERR_CONFIG_PLUGIN_PARAMS Invalid params for plugin "set-headers": ${side}.x-a: the value of header "x-a" has ${why}; a header value is printable text and tabs`;
    const err = await Gateway.start({ configFile: path.join(dir, 'gateway.config.yaml'), watch: false, env: { ...process.env, ...env }, logger: { level: 'silent' } }).then(
      async (gw) => { await gw.close(0); return undefined; },
      (e: unknown) => e,
    );
    t.ok(err instanceof ConfigErrors, `${what}: the gateway does not start`);
    t.same((err as ConfigErrors).errors.map((e) => e.describe().replace(`${dir}/policies/`, '')), [expected], `${what}: located at the step's params`);
    const p = startCli(t, ['validate', '--config', path.join(dir, 'gateway.config.yaml')], env ?? {});
    t.equal(await p.exited, 1, `${what}: validate fails`);
    t.match(p.stdout() + p.stderr(), expected, `${what}: validate names the file:line`);
  }
  // What is allowed stays allowed: tabs, Latin-1, a value with spaces.
  const dir = project('response', '"a\\tb é c"');
  const gw = await Gateway.start({ configFile: path.join(dir, 'gateway.config.yaml'), watch: false, logger: { level: 'silent' } });
  await gw.close(0);
  t.pass('tabs and Latin-1 load');
});

/** A plugin whose reply carries the headers x-mode names. */
const REPLIER = `export default {
  name: 'replier', description: 'Reply with the headers x-mode says.', paramsSchema: { type: 'object' },
  create() {
    const modes = {
      ok: { 'x-a': 'fine\\tvalue', 'x-n': 7, 'x-list': ['a', 'b'] },
      crlf: { 'x-a': 'a\\r\\nset-cookie: injected=1' },
      lf: { 'x-a': 'a\\nb' },
      nul: { 'x-a': 'a\\u0000b' },
      'bad-name': { 'x a': 'b' },
      connection: { 'transfer-encoding': 'chunked' },
      'not-a-string': { 'x-a': { b: 1 } },
      'bad-in-list': { 'x-list': ['a', 'b\\rc'] },
    };
    return { request: function replier(ex) {
      const headers = modes[ex.facts.request.headers['x-mode']];
      return headers && { status: 403, body: { error: { code: 'GW_ERR_POLICY_REJECTED', message: 'no' } }, headers };
    } };
  },
};
`;

const RUNTIME: Array<[mode: string, why: RegExp]> = [
  ['crlf', /header "x-a" has a line break \(CR or LF\) or another control character in its value/],
  ['lf', /header "x-a" has a line break/],
  ['nul', /header "x-a" has a line break \(CR or LF\) or another control character/],
  ['bad-name', /header name "x a" is not a header name/],
  ['connection', /header "transfer-encoding" is a connection header/],
  ['not-a-string', /header "x-a" is an object, not a string/],
  ['bad-in-list', /header "x-list" has a line break/],
];

t.test('a plugin reply with a header that cannot be sent: 500 GW_ERR_POLICY_STEP_FAILED naming the plugin, on every port and protocol', async (t) => {
  const g = await startGateway(t, {
    files: { 'local/replier.mjs': REPLIER, 'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
    policies: { 'r.yaml': 'name: r\nsteps:\n  - use: replier\n' },
    extraConfig: 'facts: { headers: [user-agent, x-mode] }\nplugins: [./local/replier.mjs]',
  });
  const tlsUrl = `https://127.0.0.1:${g.gw.addresses!.tlsPort!}`;
  const s = await connect(g.url);
  const st = await connect(tlsUrl, { ca: cert.cert, servername: 'localhost' });
  t.teardown(() => { s.destroy(); st.destroy(); });
  const send: Array<[string, (mode: string) => Promise<{ status: number; text: string; headers: Record<string, unknown> }>]> = [
    ['h2c', (mode) => post(s, '/v1/completions', { prompt: 'x' }, { 'x-mode': mode })],
    ['TLS h2', (mode) => post(st, '/v1/completions', { prompt: 'x' }, { 'x-mode': mode })],
    ['HTTP/1.1', (mode) => post1(`${g.url}/v1/completions`, { prompt: 'x' }, { 'x-mode': mode })],
  ];
  for (const [proto, go] of send) {
    const ok = await go('ok');
    t.equal(ok.status, 403, `${proto}: a reply with valid headers is sent`);
    t.match(ok.headers, { 'x-a': 'fine\tvalue', 'x-n': '7' }, `${proto}: with its headers`);
    for (const [mode] of RUNTIME) {
      const r = await go(mode);
      t.equal(r.status, 500, `${proto}, ${mode}: 500`);
      t.same(JSON.parse(r.text), { error: { code: 'GW_ERR_POLICY_STEP_FAILED', message: 'Policy step "replier" failed' } }, `${proto}, ${mode}: coded JSON`);
      t.notOk('set-cookie' in r.headers, `${proto}, ${mode}: nothing injected`);
    }
  }
  await assertStepFailures(t, g, 'replier', 'bad_result', RUNTIME, RUNTIME.length * send.length);
});
