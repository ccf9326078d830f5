/**
 * Headers a plugin's `request` phase writes to `ex.responseHeaders` or `ex.upstreamHeaders` that
 * cannot be sent (a CR or LF, another control character, a name that is not a token, an HTTP/2
 * pseudo-header, a connection header, a value that is not a string or number): `500
 * GW_ERR_POLICY_STEP_FAILED` naming the step, counted as
 * `ghostgate_plugin_failures_total{reason="bad_header"}` and logged naming the plugin, and the
 * request is not forwarded; over HTTP/2 and HTTP/1.1, to an HTTP/2 and an HTTP/1.1 upstream, from
 * a synchronous and an async step. Before, the request was forwarded anyway and then: a response
 * header cut the 200 mid-stream with GW_ERR_SERVER_INTERNAL (or reset the HTTP/2 stream,
 * PROTOCOL_ERROR for a NUL), or was dropped; an upstream header went to an HTTP/2 upstream as it
 * was (a CR LF), reset it (a NUL: 502), failed with GW_ERR_SERVER_INTERNAL naming nobody, or
 * went to an HTTP/1.1 upstream as it was (`connection`, `upgrade`, `te`).
 */
import net from 'node:net';
import t from 'tap';
import { startGateway } from '../helpers/gateway.ts';
import { connect, post, post1 } from '../helpers/h2.ts';
import { assertStepFailures } from '../helpers/step-failures.ts';

/** A plugin that writes the header x-mode names; `async-…` modes write it from an async step. */
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
      'up-bad-name': [['upstreamHeaders', 'x a', 'b']],
    };
    const write = (ex) => {
      const mode = String(ex.facts.request.headers['x-mode'] ?? '');
      for (const [where, name, value] of modes[mode.replace(/^async-/, '')] ?? []) ex[where][name] = value;
    };
    return { request(ex) {
      if (!String(ex.facts.request.headers['x-mode'] ?? '').startsWith('async-')) return write(ex);
      return new Promise((resolve) => setImmediate(() => { write(ex); resolve(undefined); }));
    } };
  },
};
`;

const REFUSED: Array<[mode: string, why: RegExp]> = [
  ['down-crlf', /response header \(ex\.responseHeaders\) that cannot be sent: "x-a" has a line break/],
  ['down-nul', /response header .*"x-a" has a line break \(CR or LF\) or another control character/],
  ['down-connection', /response header .*"connection" is a connection header/],
  ['down-pseudo', /response header .*name ":status" is not a header name/],
  ['down-object', /response header .*"x-a" is an object, not a string/],
  ['up-crlf', /upstream request header \(ex\.upstreamHeaders\) that cannot be sent: "x-a" has a line break/],
  ['up-nul', /upstream request header .*"x-a" has a line break \(CR or LF\) or another control character/],
  ['up-transfer-encoding', /upstream request header .*"transfer-encoding" is a connection header/],
  ['up-upgrade', /upstream request header .*"upgrade" is a connection header/],
  ['up-pseudo', /upstream request header .*name ":path" is not a header name/],
  ['up-bad-name', /upstream request header .*name "x a" is not a header name/],
  ['async-up-crlf', /its promise resolved: set an upstream request header .*"x-a" has a line break/],
  ['async-down-connection', /its promise resolved: set a response header .*"connection" is a connection header/],
];

for (const upstream of ['h2c', 'http1'] as const) {
  t.test(`a step that writes a header that cannot be sent: 500 GW_ERR_POLICY_STEP_FAILED, not forwarded (${upstream} upstream)`, async (t) => {
    const g = await startGateway(t, {
      files: { 'local/writer.mjs': WRITER },
      policies: { 'w.yaml': 'name: w\nsteps:\n  - use: writer\n' },
      extraConfig: 'facts: { headers: [user-agent, x-mode] }\nplugins: [./local/writer.mjs]',
      upstreamsYaml: (m) => `upstreams:\n  local:\n    url: ${m.url}\n    protocol: ${upstream}\n    pool: { size: 2 }\n    forwardHeaders: [x-mode]\nmodels:\n  ghost-small: { upstream: local }`,
    });
    const s = await connect(g.url);
    t.teardown(() => s.destroy());
    const send: Array<[string, (mode: string) => Promise<{ status: number; text: string; headers: Record<string, unknown>; rstCode?: number }>]> = [
      ['HTTP/2', (mode) => post(s, '/v1/completions', { prompt: 'x', max_tokens: 2 }, { 'x-mode': mode })],
      ['HTTP/1.1', (mode) => post1(`${g.url}/v1/completions`, { prompt: 'x', max_tokens: 2 }, { 'x-mode': mode })],
    ];
    for (const [proto, go] of send) {
      for (const mode of ['ok', 'async-ok']) {
        const ok = await go(mode);
        t.equal(ok.status, 200, `${proto}, ${mode}: served`);
        t.match(ok.headers, { 'x-down': 'fine\tvalue', 'x-n': '7' }, `${proto}, ${mode}: with the response headers the step wrote`);
      }
      for (const [mode] of REFUSED) {
        const r = await go(mode);
        t.equal(r.status, 500, `${proto}, ${mode}: 500 (${r.text.slice(0, 100)})`);
        t.same(JSON.parse(r.text), { error: { code: 'GW_ERR_POLICY_STEP_FAILED', message: 'Policy step "writer" failed' } }, `${proto}, ${mode}: coded JSON`);
        t.notOk('set-cookie' in r.headers || 'connection' in r.headers && r.headers.connection !== 'keep-alive', `${proto}, ${mode}: nothing the step wrote reached the client`);
      }
    }
    const seen = (await g.modelRequests()).filter((r) => r.headers['x-mode'] !== undefined);
    // A set, not a count: an HTTP/1.1 upstream request retried on a stale connection arrives twice.
    t.same([...new Set(seen.map((r) => r.headers['x-mode']))].sort(), ['async-ok', 'ok'], 'of the requests, only the valid ones reached the upstream');
    t.ok(seen.every((r) => r.headers['x-up'] === 'fine é' || r.headers['x-up'] === Buffer.from('fine é').toString('latin1')), 'with the valid upstream header');
    await assertStepFailures(t, g, 'writer', 'bad_header', REFUSED, REFUSED.length * send.length);
  });
}

/** A plugin whose responseHeaders phase writes a value Node refuses, once the upstream answered. */
const LATE = `export default {
  name: 'late', description: 'Write a bad response header after the upstream answered.', paramsSchema: { type: 'object' },
  create() { return { responseHeaders(ex) { ex.responseHeaders['x-a'] = 'a\\nb'; } }; },
};
`;

t.test('a responseHeaders phase that writes a header HTTP/1.1 refuses: a coded 500 whose status line agrees', async (t) => {
  const g = await startGateway(t, {
    files: { 'local/late.mjs': LATE },
    policies: { 'l.yaml': 'name: l\nsteps:\n  - use: late\n' },
    extraConfig: 'plugins: [./local/late.mjs]',
  });
  const body = JSON.stringify({ prompt: 'x', max_tokens: 2 });
  const s = await connect(g.url);
  t.teardown(() => s.destroy());
  // The upstream's status (x-status) was kept for the 500: "500 Forbidden"; before that, the
  // client got the upstream's 403 with an SSE error event.
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
    t.match(raw, /\r\n\r\n\{"error":\{"code":"GW_ERR_SERVER_INTERNAL"/, `HTTP/1.1, upstream ${status}: coded JSON`);
    // HTTP/2 does not refuse the value: the response goes on, and the header does not reach the client.
    const r = await post(s, '/v1/completions', JSON.parse(body), { 'x-status': status });
    t.equal(r.status, Number(status), `HTTP/2, upstream ${status}: relayed`);
    t.notOk('x-a' in r.headers, `HTTP/2, upstream ${status}: without the header`);
  }
});
