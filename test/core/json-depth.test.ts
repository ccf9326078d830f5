/**
 * Bounded CPU per request: a body nested deeper than `limits.jsonDepth` is refused with
 * 400 GW_ERR_REQ_JSON_TOO_DEEP before it is parsed, on every way a completion request comes in
 * (HTTP/2 fast lane with and without Content-Length, HTTP/2 through Fastify, HTTP/1.1), and is
 * never forwarded. One body at the limit still goes through.
 */
import t from 'tap';
import { jsonTooDeep } from '../../core/server/json-body.ts';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, post1 } from '../helpers/h2.ts';

t.test('the scan counts brackets outside strings only', async (t) => {
  t.equal(jsonTooDeep('{}', 1), false, '{} is one level');
  t.equal(jsonTooDeep('{"a":[1]}', 1), true, 'an array in an object is two');
  t.equal(jsonTooDeep('{"a":[1]}', 2), false);
  t.equal(jsonTooDeep('{"a":"[[[[{{{{"}', 1), false, 'brackets inside a string do not count');
  t.equal(jsonTooDeep('{"a":"x\\"[[[["}', 1), false, 'an escaped quote does not end the string');
  t.equal(jsonTooDeep('{"a":"x\\\\","b":[[1]]}', 2), true, 'an escaped backslash before the quote does end it');
  t.equal(jsonTooDeep('{"a\\\\\\"[[":[[1]]}', 2), true, 'three backslashes then a quote: still inside, then three levels');
  t.equal(jsonTooDeep('[{"a":[{}]}, [], [[]]]', 4), false, 'siblings do not add up');
  t.equal(jsonTooDeep('[{"a":[{}]}, [], [[]]]', 3), true);
  t.equal(jsonTooDeep('{"a":"unterminated [[[[', 1), false, 'malformed input is left to the parser');
  const deep = '['.repeat(499_000) + ']'.repeat(499_000);
  t.equal(jsonTooDeep(deep, 64), true, 'the 499,000-level body');
});

/** A completion body whose deepest value sits `levels` levels down (the body itself is level 1). */
function nested(levels: number): string {
  return `{"model":"ghost-small","prompt":"x","stream":true,"extra":${'['.repeat(levels - 1)}1${']'.repeat(levels - 1)}}`;
}

t.test('too deep is refused with a coded 400 on every path; at the limit goes through', async (t) => {
  const g = await startGateway(t);
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const h2 = async (body: string, headers: Record<string, string | number>): Promise<{ status: number; code?: string }> => {
    const st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', ...headers });
    st.end(body);
    const r = await collect(st);
    return { status: r.status, code: r.status >= 400 ? (JSON.parse(r.text) as { error: { code: string } }).error.code : undefined };
  };
  const h1 = async (body: string): Promise<{ status: number; code?: string }> => {
    const r = await post1(`${g.url}/v1/completions`, body);
    return { status: r.status, code: r.status >= 400 ? (JSON.parse(r.text) as { error: { code: string } }).error.code : undefined };
  };
  const paths: Array<[string, (body: string) => Promise<{ status: number; code?: string }>]> = [
    ['HTTP/2 fast lane, with Content-Length', (b) => h2(b, { 'content-length': Buffer.byteLength(b) })],
    ['HTTP/2 fast lane, no Content-Length', (b) => h2(b, {})],
    // The fast lane takes only a lower-case application/json; Fastify takes the rest.
    ['HTTP/2 through Fastify', (b) => h2(b, { 'content-type': 'Application/JSON' })],
    ['HTTP/1.1 (Fastify)', h1],
  ];
  const huge = `{"model":"ghost-small","prompt":${'['.repeat(499_000)}${']'.repeat(499_000)}}`;
  for (const [name, send] of paths) {
    t.same(await send(nested(65)), { status: 400, code: 'GW_ERR_REQ_JSON_TOO_DEEP' }, `${name}: 65 levels refused`);
    t.same(await send(huge), { status: 400, code: 'GW_ERR_REQ_JSON_TOO_DEEP' }, `${name}: the 1 MB, 499,000-level body refused`);
    t.same(await send(nested(64)), { status: 200, code: undefined }, `${name}: 64 levels accepted`);
  }
  const reqs = await g.modelRequests();
  t.equal(reqs.length, paths.length, 'only the bodies at the limit reached the model');
  t.ok(reqs.every((r) => JSON.stringify(r.body).length < 1000), 'no deep body was forwarded');
  const m = await g.gw.metrics.errors.get();
  t.equal(m.values.find((v) => v.labels.code === 'GW_ERR_REQ_JSON_TOO_DEEP')?.value, paths.length * 2, 'each refusal counted by code');
});

t.test('limits.jsonDepth is configurable', async (t) => {
  const g = await startGateway(t, { extraConfig: 'limits: { jsonDepth: 3 }' });
  t.equal((await post1(`${g.url}/v1/completions`, nested(3))).status, 200, '3 levels with a limit of 3');
  const r = await post1(`${g.url}/v1/completions`, nested(4));
  t.equal(r.status, 400);
  t.match(JSON.parse(r.text), { error: { code: 'GW_ERR_REQ_JSON_TOO_DEEP', message: /deeper than 3 levels/ } });
});
