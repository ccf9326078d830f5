/**
 * Numbers JSON.parse turns into ±Infinity (`1e999`) are refused with a coded 400 naming where they
 * are: a step that edits the body would re-serialise them as `null`, so the model would get
 * something other than what the client sent. Both lanes, both protocols, with a body-editing policy.
 */
import t from 'tap';
import { firstNonFinite, scanJson, SCAN_BIG_NUMBER, SCAN_TOO_DEEP } from '../../core/server/json-body.ts';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, post1 } from '../helpers/h2.ts';

t.test('the scan flags what could overflow, and only that', async (t) => {
  t.equal(scanJson('{"max_tokens":1e999}', 64), SCAN_BIG_NUMBER, 'an exponent');
  t.equal(scanJson('{"a":[-2.5E+3]}', 64), SCAN_BIG_NUMBER, 'a capital exponent after a fraction');
  t.equal(scanJson(`{"a":${'9'.repeat(309)}}`, 64), SCAN_BIG_NUMBER, '309 integer digits');
  t.equal(scanJson(`{"a":${'9'.repeat(308)}}`, 64), 0, '308 digits cannot overflow');
  t.equal(scanJson('{"stream":true,"echo":false,"n":12,"t":0.25}', 64), 0, 'the e of true and false is no exponent');
  t.equal(scanJson(`{"p":"1e999 ${'9'.repeat(400)}"}`, 64), 0, 'digits inside a string do not count');
  t.equal(scanJson('[1e5,[[1]]]', 2), SCAN_TOO_DEEP | SCAN_BIG_NUMBER, 'both, up to where it stops');
  t.equal(firstNonFinite(JSON.parse('{"a":{"b/c~":[1,2,-1e400]}}')), '/a/b~1c~0/2', 'a JSON Pointer, escaped');
  t.equal(firstNonFinite(JSON.parse('{"a":1e308,"b":[1e-999]}')), undefined, '1e308 and an underflow to 0 are finite');
});

const BAD: Array<{ body: string; at: string }> = [
  { body: '{"model":"ghost-small","prompt":"x","max_tokens":1e999}', at: '/max_tokens' },
  { body: '{"model":"ghost-small","prompt":"x","logit_bias":{"50256":-1E+400}}', at: '/logit_bias/50256' },
  { body: `{"model":"ghost-small","prompt":"x","stop":["a"],"n":[1,${'1'.repeat(400)}]}`, at: '/n/1' },
];

for (const fastLane of [true, false]) t.test(`refused on HTTP/2 and HTTP/1.1, nothing forwarded (server.fastLane: ${fastLane})`, async (t) => {
  const g = await startGateway(t, {
    extraConfig: `server: { fastLane: ${fastLane} }`,
    policies: { 'p.yaml': 'name: p\nsteps:\n  - use: set-params\n    params: { set: { /temperature: 0 } }\n' },
  });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  for (const c of BAD) {
    const st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' });
    st.end(c.body);
    for (const [proto, r] of [['h2', await collect(st)], ['h1', await post1(`${g.url}/v1/completions`, c.body)]] as const) {
      t.equal(r.status, 400, `${proto} ${c.at}: status`);
      const e = (JSON.parse(r.text) as { error: { code: string; message: string } }).error;
      t.equal(e.code, 'GW_ERR_REQ_INVALID_BODY', `${proto} ${c.at}: code`);
      t.match(e.message, `the number at ${c.at} is too large`, `${proto}: names the JSON Pointer`);
    }
  }
  t.equal((await g.modelRequests()).length, 0, 'no such body reached the model');
  // Large but finite numbers, and exponents in strings, pass unchanged.
  const ok = await post1(`${g.url}/v1/completions`, '{"model":"ghost-small","prompt":"1e999","max_tokens":1e2,"x":1e308}');
  t.equal(ok.status, 200);
  const sent = (await g.modelRequests())[0]!.body;
  t.same([sent.prompt, sent.max_tokens, sent.x, sent.temperature], ['1e999', 100, 1e308, 0], 'forwarded as sent (plus the policy\'s edit)');
});
