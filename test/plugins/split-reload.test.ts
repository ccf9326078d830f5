/** A reload that changes a split moves new requests only; in-flight ones keep their route. */
import t from 'tap';
import { startModelServer } from '../../model-server/server.ts';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, firstData, open, post } from '../helpers/h2.ts';

const split = (a: number, b: number): string =>
  `name: split\nsteps:\n  - use: traffic-split\n    params: { stickyOn: request.ip, targets: [{ upstream: east-a, weight: ${a} }, { upstream: east-b, weight: ${b} }] }\n`;

t.test('in-flight requests keep their deployment across a reload; new ones follow the new weights', async (t) => {
  const a = await startModelServer({ port: 0, ttftMs: 5, tokenMs: 20, tokens: 25 });
  const b = await startModelServer({ port: 0, ttftMs: 5, tokenMs: 20, tokens: 25 });
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const g = await startGateway(t, {
    noModel: true,
    upstreamsYaml: () => `upstreams:\n  east-a: { url: "${a.url}" }\n  east-b: { url: "${b.url}" }\nmodels:\n  ghost-small: { upstream: east-a }`,
    policies: { 'split.yaml': split(100, 0) },
  });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const st = open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { 'x-request-id': 'before-reload' });
  const inflight = collect(st);
  await firstData(st);
  g.write('policies/split.yaml', split(0, 100));
  const r = await (await fetch(`${g.adminUrl}/-/reload`, { method: 'POST' })).json() as { ok: boolean };
  t.equal(r.ok, true);
  const after = await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'y', stream: true }, { 'x-request-id': 'after-reload' });
  t.equal(after.events.at(-1), '[DONE]');
  const before = await inflight;
  t.equal(before.events.at(-1), '[DONE]', 'the in-flight request finished');
  t.ok(a.requests().some((x) => x.id === 'before-reload'), 'the in-flight request stayed on east-a');
  t.notOk(b.requests().some((x) => x.id === 'before-reload'));
  t.ok(b.requests().some((x) => x.id === 'after-reload'), 'the new request went to east-b');
  t.equal(a.stats().aborted, 0, 'nothing was cut on east-a');
});
