/**
 * Headers a plugin's step writes to `ex.responseHeaders` or `ex.upstreamHeaders` that cannot be
 * sent (a CR or LF, another control character, a name that is not a token, an HTTP/2
 * pseudo-header such as `:authority`, a connection header, `host` upstream, a value that is not a
 * string or number): `500 GW_ERR_POLICY_STEP_FAILED` naming the step, counted as
 * `ghostgate_plugin_failures_total{phase, reason="bad_header"}` and logged naming the plugin, in
 * every phase that comes before the client's response headers:
 * - `request` (sync and async): the request is not forwarded. Before, it was forwarded anyway and
 *   then a response header cut the 200 mid-stream with GW_ERR_SERVER_INTERNAL (or reset the
 *   HTTP/2 stream), or was dropped; an upstream header went to an HTTP/2 upstream as it was (a CR
 *   LF), reset it (a NUL: 502), or went to an HTTP/1.1 upstream as it was (`connection`, `te`).
 * - `forwarding`: nothing goes upstream. `out` is frozen for a plugin's step: its write throws
 *   in the step (logged, `reason="threw"`) and the request goes as the gateway built it.
 * - `responseHeaders`: the upstream stream is cancelled (the model server sees RST_STREAM(CANCEL)
 *   on h2c, the connection closed on HTTP/1.1). Before, HTTP/1.1 clients got GW_ERR_SERVER_INTERNAL
 *   naming nobody and HTTP/2 clients the response without the header.
 * Over HTTP/2 (cleartext and TLS) and HTTP/1.1 clients, to h2c and HTTP/1.1 upstreams.
 */
import net from 'node:net';
import t from 'tap';
import type { Test } from 'tap';
import http2 from 'node:http2';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post, post1, waitFor } from '../helpers/h2.ts';
import { makeCert } from '../helpers/tls.ts';
import { assertStepFailures } from '../helpers/step-failures.ts';

/**
 * A plugin that writes the header x-mode names, in the phase its prefix names: `async-` from an
 * async request phase, `fwd-` from forwarding, `resp-` from responseHeaders, none from request.
 */
const WRITER = `export default {
  name: 'writer', description: 'Write the header x-mode says.', paramsSchema: { type: 'object' },
  create() {
    const modes = {
      ok: [['responseHeaders', 'x-down', 'fine\\tvalue'], ['responseHeaders', 'x-n', 7], ['upstreamHeaders', 'x-up', 'fine é']],
      'down-crlf': [['responseHeaders', 'x-a', 'a\\r\\nset-cookie: injected=1']],
      'down-nul': [['responseHeaders', 'x-a', 'a\\u0000b']],
      'down-connection': [['responseHeaders', 'connection', 'close']],
      'down-pseudo': [['responseHeaders', ':status', '201']],
      'down-object': [['responseHeaders', 'x-a', { b: 1 }]],
      'up-crlf': [['upstreamHeaders', 'x-a', 'a\\r\\nx-injected: 1']],
      'up-nul': [['upstreamHeaders', 'x-a', 'a\\u0000b']],
      'up-transfer-encoding': [['upstreamHeaders', 'transfer-encoding', 'chunked']],
      'up-upgrade': [['upstreamHeaders', 'upgrade', 'h2c']],
      'up-pseudo': [['upstreamHeaders', ':path', '/elsewhere']],
      'up-authority': [['upstreamHeaders', ':authority', 'evil.example']],
      'up-host': [['upstreamHeaders', 'host', 'evil.example']],
      'up-Host': [['upstreamHeaders', 'Host', 'evil.example']],
      'up-bad-name': [['upstreamHeaders', 'x a', 'b']],
      'out-write': [['out', 'x-out', 'a\\r\\nx-injected: 1']],
    };
    const mode = (ex) => String(ex.facts.request.headers['x-mode'] ?? '');
    const write = (ex, m, out) => {
      for (const [where, name, value] of modes[m] ?? []) (where === 'out' ? out.headers : ex[where])[name] = value;
    };
    return {
      request(ex) {
        const m = mode(ex);
        if (m.startsWith('async-')) return new Promise((resolve) => setImmediate(() => { write(ex, m.slice(6)); resolve(undefined); }));
        if (!m.startsWith('fwd-') && !m.startsWith('resp-')) write(ex, m);
      },
      forwarding(ex, out) { if (mode(ex).startsWith('fwd-')) write(ex, mode(ex).slice(4), out); },
      responseHeaders(ex) { if (mode(ex).startsWith('resp-')) write(ex, mode(ex).slice(5)); },
    };
  },
};
`;

/** A gateway with the writer on every request, its model server behind an `upstream` upstream, and a TLS port. */
async function writerGateway(t: Test, upstream: 'h2c' | 'http1') {
  const g = await startGateway(t, {
    files: { 'local/writer.mjs': WRITER, 'tls/key.pem': cert.key, 'tls/cert.pem': cert.cert },
    listenYaml: 'listen: { host: 127.0.0.1, port: 0, tls: { host: 127.0.0.1, port: 0, key: { file: tls/key.pem }, cert: { file: tls/cert.pem } } }',
    policies: { 'w.yaml': 'name: w\nsteps:\n  - use: writer\n' },
    extraConfig: 'facts: { headers: [user-agent, x-mode] }\nplugins: [./local/writer.mjs]',
    upstreamsYaml: (m) => `upstreams:\n  local:\n    url: ${m.url}\n    protocol: ${upstream}\n    pool: { size: 2 }\n    forwardHeaders: [x-mode, x-ttft-ms]\nmodels:\n  ghost-small: { upstream: local }`,
  });
  const s = await connect(g.url);
  const st = await connect(`https://127.0.0.1:${g.gw.addresses!.tlsPort!}`, { ca: cert.cert, servername: 'localhost' });
  t.teardown(() => { s.destroy(); st.destroy(); });
  type Send = (mode: string, headers?: Record<string, string>, body?: object) => Promise<{ status: number; text: string; headers: Record<string, unknown> }>;
  const body = { prompt: 'x', max_tokens: 2 };
  const send: Array<[string, Send]> = [
    ['HTTP/2', (mode, h = {}, b = body) => post(s, '/v1/completions', b, { 'x-mode': mode, ...h })],
    ['TLS HTTP/2', (mode, h = {}, b = body) => post(st, '/v1/completions', b, { 'x-mode': mode, ...h })],
    ['HTTP/1.1', (mode, h = {}, b = body) => post1(`${g.url}/v1/completions`, b, { 'x-mode': mode, ...h })],
  ];
  return { g, send };
}

const cert = makeCert();

const REFUSED: Array<[mode: string, why: RegExp]> = [
  ['down-crlf', /response header \(ex\.responseHeaders\) that cannot be sent: "x-a" has a line break/],
  ['down-nul', /response header .*"x-a" has a line break \(CR or LF\) or another control character/],
  ['down-connection', /response header .*"connection" is a connection header/],
  ['down-pseudo', /response header .*":status" is an HTTP\/2 pseudo-header/],
  ['down-object', /response header .*"x-a" is an object, not a string/],
  ['up-crlf', /upstream request header \(ex\.upstreamHeaders\) that cannot be sent: "x-a" has a line break/],
  ['up-nul', /upstream request header .*"x-a" has a line break \(CR or LF\) or another control character/],
  ['up-transfer-encoding', /upstream request header .*"transfer-encoding" is a connection header/],
  ['up-upgrade', /upstream request header .*"upgrade" is a connection header/],
  ['up-pseudo', /upstream request header .*":path" is an HTTP\/2 pseudo-header/],
  ['up-authority', /upstream request header .*":authority" is an HTTP\/2 pseudo-header/],
  ['up-host', /upstream request header .*"host" is the upstream's authority/],
  ['up-Host', /upstream request header .*"host" is the upstream's authority/],
  ['up-bad-name', /upstream request header .*name "x a" is not a header name/],
  ['async-up-crlf', /its promise resolved: set an upstream request header .*"x-a" has a line break/],
  ['async-down-connection', /its promise resolved: set a response header .*"connection" is a connection header/],
];

/** The same writes made in a later phase (`prefix` + a mode of REFUSED), logged with the same reason. */
const later = (prefix: string, modes: string[]): Array<[string, RegExp]> => modes.map((m) => [prefix + m, REFUSED.find(([r]) => r === m)![1]]);
/** Writes in the forwarding phase: refused before anything goes upstream. */
const FORWARDING = later('fwd-', ['down-crlf', 'down-connection', 'up-crlf', 'up-authority', 'up-host']);
/** Writes in the responseHeaders phase: refused once the upstream answered, its stream cancelled. */
const RESPONSE = later('resp-', ['down-crlf', 'down-nul', 'down-connection', 'down-pseudo', 'down-object']);

const STEP_FAILED = { error: { code: 'GW_ERR_POLICY_STEP_FAILED', message: 'Policy step "writer" failed' } };

for (const upstream of ['h2c', 'http1'] as const) {
  t.test(`a step that writes a header that cannot be sent: 500 GW_ERR_POLICY_STEP_FAILED, not forwarded (${upstream} upstream)`, async (t) => {
    const { g, send } = await writerGateway(t, upstream);
    for (const [proto, go] of send) {
      for (const mode of ['ok', 'async-ok']) {
        const ok = await go(mode);
        t.equal(ok.status, 200, `${proto}, ${mode}: served`);
        t.match(ok.headers, { 'x-down': 'fine\tvalue', 'x-n': '7' }, `${proto}, ${mode}: with the response headers the step wrote`);
      }
      for (const [mode] of [...REFUSED, ...FORWARDING]) {
        const r = await go(mode);
        t.equal(r.status, 500, `${proto}, ${mode}: 500 (${r.text.slice(0, 100)})`);
        t.same(JSON.parse(r.text), STEP_FAILED, `${proto}, ${mode}: coded JSON`);
        t.notOk('set-cookie' in r.headers || 'connection' in r.headers && r.headers.connection !== 'keep-alive', `${proto}, ${mode}: nothing the step wrote reached the client`);
      }
    }
    const seen = (await g.modelRequests()).filter((r) => r.headers['x-mode'] !== undefined);
    // A set, not a count: an HTTP/1.1 upstream request retried on a stale connection arrives twice.
    t.same([...new Set(seen.map((r) => r.headers['x-mode']))].sort(), ['async-ok', 'ok'], 'of the requests, only the valid ones reached the upstream');
    t.ok(seen.every((r) => r.headers['x-up'] === 'fine é' || r.headers['x-up'] === Buffer.from('fine é').toString('latin1')), 'with the valid upstream header');
    await assertStepFailures(t, g, 'writer', 'bad_header', REFUSED, REFUSED.length * send.length);
    await assertStepFailures(t, g, 'writer', 'bad_header', FORWARDING, FORWARDING.length * send.length, 'forwarding');
  });

  t.test(`a responseHeaders phase that writes a header that cannot be sent: 500 GW_ERR_POLICY_STEP_FAILED, the upstream stream cancelled (${upstream} upstream)`, async (t) => {
    const { g, send } = await writerGateway(t, upstream);
    // A streamed response whose first token is a minute away: its stream is open upstream when
    // the step fails, so only the gateway's cancel ends it.
    const held = { prompt: 'x', max_tokens: 2, stream: true };
    const ids: string[] = [];
    for (const [proto, go] of send) {
      for (const [mode] of RESPONSE) {
        const id = `${upstream}-${proto.replace(/\W/g, '')}-${mode}`;
        ids.push(id);
        const r = await go(mode, { 'x-request-id': id, 'x-ttft-ms': '60000' }, held);
        t.equal(r.status, 500, `${proto}, ${mode}: 500, not the upstream's 200 (${r.text.slice(0, 100)})`);
        t.same(JSON.parse(r.text), STEP_FAILED, `${proto}, ${mode}: coded JSON`);
        t.notOk('x-a' in r.headers || 'connection' in r.headers && r.headers.connection !== 'keep-alive', `${proto}, ${mode}: nothing the step wrote reached the client`);
      }
    }
    await waitFor('the model server to see every held stream ended', async () => (await g.modelStats()).aborts.filter((a) => ids.includes(a.id)).length === ids.length);
    const aborts = (await g.modelStats()).aborts.filter((a) => ids.includes(a.id));
    t.same(aborts.map((a) => a.rstCode), ids.map(() => (upstream === 'h2c' ? http2.constants.NGHTTP2_CANCEL : null)), upstream === 'h2c' ? 'each upstream stream got RST_STREAM(CANCEL)' : 'each upstream connection was closed');
    t.equal((await g.modelStats()).inFlight, 0, 'nothing left in flight upstream');
    await assertStepFailures(t, g, 'writer', 'bad_header', RESPONSE, RESPONSE.length * send.length, 'responseHeaders');
  });
}

t.test('a plugin\'s forwarding phase that writes to out: refused in the step (out is frozen), the request goes as the gateway built it', async (t) => {
  const { g, send } = await writerGateway(t, 'h2c');
  for (const [proto, go] of send) {
    const r = await go('fwd-out-write');
    t.equal(r.status, 200, `${proto}: served`);
  }
  const seen = (await g.modelRequests()).filter((r) => r.headers['x-mode'] === 'fwd-out-write');
  t.equal(seen.length, send.length, 'every request reached the upstream');
  t.ok(seen.every((r) => !('x-out' in r.headers) && !('x-injected' in r.headers)), 'without the header the step wrote to out');
  await assertStepFailures(t, g, 'writer', 'threw', [['fwd-out-write', /object is not extensible|read.only|Cannot add property/]], send.length, 'forwarding');
});

/** A plugin whose responseHeaders phase writes a value Node's HTTP/1.1 refuses, once the upstream answered. */
const LATE = `export default {
  name: 'late', description: 'Write a bad response header after the upstream answered.', paramsSchema: { type: 'object' },
  create() { return { responseHeaders(ex) { ex.responseHeaders['x-a'] = 'a\\nb'; } }; },
};
`;

t.test('a responseHeaders phase that writes a bad header whatever the upstream\'s status: a coded 500 whose status line agrees', async (t) => {
  const g = await startGateway(t, {
    files: { 'local/late.mjs': LATE },
    policies: { 'l.yaml': 'name: l\nsteps:\n  - use: late\n' },
    extraConfig: 'plugins: [./local/late.mjs]',
  });
  const body = JSON.stringify({ prompt: 'x', max_tokens: 2 });
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  // The upstream's status (x-status) was kept for the 500: "500 Forbidden"; before that, the
  // client got the upstream's 403 with an SSE error event. HTTP/2 relayed the upstream's status
  // without the header.
  for (const status of ['403', '429', '200']) {
    const raw = await new Promise<string>((resolve, reject) => {
      const c = net.connect(Number(new URL(g.url).port), '127.0.0.1');
      let buf = '';
      c.setEncoding('latin1');
      c.on('data', (d: string) => { buf += d; });
      c.on('error', reject);
      c.on('close', () => resolve(buf));
      c.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-status: ${status}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    });
    t.match(raw, /^HTTP\/1\.1 500 Internal Server Error\r\n/, `HTTP/1.1, upstream ${status}: the status line says 500 Internal Server Error (${JSON.stringify(raw.slice(0, 40))})`);
    t.match(raw, /\r\n\r\n\{"error":\{"code":"GW_ERR_POLICY_STEP_FAILED","message":"Policy step \\"late\\" failed"/, `HTTP/1.1, upstream ${status}: coded JSON naming the step`);
    const r = await post(s, '/v1/completions', JSON.parse(body), { 'x-status': status });
    t.equal(r.status, 500, `HTTP/2, upstream ${status}: 500`);
    t.same(JSON.parse(r.text), { error: { code: 'GW_ERR_POLICY_STEP_FAILED', message: 'Policy step "late" failed' } }, `HTTP/2, upstream ${status}: coded JSON naming the step`);
  }
});
