/**
 * End to end: a real gateway (HTTP/2 over loopback) running traffic-split + ab-test + mirror
 * against three real model servers, checking what each upstream actually received.
 */
import t from 'tap';
import http2 from 'node:http2';
import { startModelServer } from '../../model-server/server.ts';
import type { AbortRecord, RequestRecord } from '../../model-server/server.ts';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, open, post, waitFor, within } from '../helpers/h2.ts';

const POLICY = `
name: e2e-b
match: { paths: [/v1/completions] }
steps:
  - use: traffic-split
    params:
      stickyOn: request.headers.x-user
      seed: ghost-small
      targets:
        - { upstream: east-a, model: ghost-a, weight: 50 }
        - { upstream: east-b, model: ghost-b, weight: 50 }
  - use: ab-test
    params:
      experiment: temp
      stickyOn: request.headers.x-user
      arms:
        - { name: control, weight: 50 }
        - { name: hot, weight: 50, set: { /temperature: 0.9 } }
  - use: mirror
    params: { upstream: shadow, percent: 100, maxConcurrent: 64 }
`;


t.test('traffic-split + ab-test + mirror through the real gateway', async (t) => {
  const eastB = await startModelServer({ port: 0, ttftMs: 20, tokenMs: 20, tokens: 50 });
  const shadow = await startModelServer({ port: 0, ttftMs: 100, tokenMs: 20, tokens: 50 });
  t.teardown(() => eastB.close());
  t.teardown(() => shadow.close());
  const up = (url: string) => `{ url: ${url}, protocol: h2c, pool: { size: 1 }, timeouts: { connectMs: 1000 } }`;
  const g = await startGateway(t, {
    modelArgs: ['--ttft-ms', '20', '--token-ms', '20', '--tokens', '50'],
    upstreamsYaml: (eastA) => [
      'upstreams:',
      `  east-a: ${up(eastA.url)}`,
      `  east-b: ${up(eastB.url)}`,
      `  shadow: ${up(shadow.url)}`,
      'models:',
      '  ghost-small: { upstream: east-a }',
    ].join('\n'),
    extraConfig: 'facts: { headers: [x-user, x-ghostgate-document] }',
    policies: { 'e2e-b.yaml': POLICY },
  });
  const session = await connect(g.url);
  t.teardown(() => session.close());

  // 16 users, two requests each.
  const USERS = 16;
  const body = { model: 'ghost-small', prompt: 'def fib(', stream: true, max_tokens: 8 };
  const results = await Promise.all(Array.from({ length: USERS * 2 }, (_, i) => {
    const user = `user-${i % USERS}`;
    return post(session, '/v1/completions', body, { 'x-user': user, 'x-request-id': `e2e-${i}` }).then((r) => ({ user, id: `e2e-${i}`, r }));
  }));
  const byUser = new Map<string, Array<{ model: string; arm: string }>>();
  const armOf = new Map<string, string>();
  for (const { user, id, r } of results) {
    t.equal(r.status, 200, `${id} ok`);
    t.ok(r.complete, `${id} complete`);
    const header = String(r.headers['x-ghostgate-experiment']);
    t.match(header, /^temp=(control|hot)$/, 'experiment header');
    const arm = header.slice('temp='.length);
    armOf.set(id, arm);
    const model = (JSON.parse(r.events[0]!) as { model: string }).model;
    byUser.set(user, [...(byUser.get(user) ?? []), { model, arm }]);
  }
  for (const [user, seen] of byUser) t.same(seen[1], seen[0], `${user} stays on one deployment and one arm`);
  const models = new Set([...byUser.values()].map((s) => s[0]!.model));
  const arms = new Set([...byUser.values()].map((s) => s[0]!.arm));
  t.same([...models].sort(), ['ghost-a', 'ghost-b'], 'both deployments serve users');
  t.same([...arms].sort(), ['control', 'hot'], 'both arms have users');

  // What the upstreams received.
  const aReqs = (await g.modelRequests()) as unknown as RequestRecord[];
  const bReqs = eastB.requests();
  t.equal(aReqs.length + bReqs.length, USERS * 2, 'every request reached exactly one primary');
  for (const rec of aReqs) t.equal((rec.body as { model: string }).model, 'ghost-a', 'east-a gets its deployment model name');
  for (const rec of bReqs) t.equal((rec.body as { model: string }).model, 'ghost-b', 'east-b gets its deployment model name');
  const primaries = new Map([...aReqs, ...bReqs].map((r) => [r.id, r]));
  for (const [id, arm] of armOf) {
    const b = primaries.get(id)!.body as { temperature?: number };
    if (arm === 'hot') t.equal(b.temperature, 0.9, `${id}: hot arm sets temperature`);
    else t.equal(b.temperature, undefined, `${id}: control arm leaves the body alone`);
  }

  await waitFor('every copy to complete on the shadow', () => shadow.stats().completed === USERS * 2);
  const copies = shadow.requests();
  t.equal(copies.length, USERS * 2, 'the shadow got one copy of each request');
  for (const c of copies) {
    const p = primaries.get(c.id);
    t.ok(p, `copy ${c.id} matches a primary request`);
    t.same(c.body, p?.body, `copy ${c.id} is the final upstream body`);
    t.equal(c.headers['x-ghostgate-mirror'], '1');
  }

  const scrape = async (): Promise<string> => (await fetch(`${g.adminUrl}/metrics`)).text();
  // The shadow counts a completion when it ends the stream; the gateway counts it on reading the end.
  await waitFor('32 ok copies in the metrics', async () => /ghostgate_mirror_requests_total\{side="shadow",upstream="shadow",outcome="ok"\} 32/.test(await scrape()));
  const metrics = await scrape();
  t.match(metrics, /ghostgate_mirror_ttfb_seconds_count\{side="shadow",upstream="shadow"\} 32/);
  t.match(metrics, /ghostgate_mirror_ttfb_seconds_count\{side="primary",upstream="east-a"\} \d+/);
  t.match(metrics, /ghostgate_requests_total\{[^}]*arm="hot"[^}]*\} \d+/, 'arm is a metrics label');

  // A client that cancels mid-stream: the primary and its shadow copy are both reset.
  const shadowAbort = new Promise<AbortRecord>((res) => shadow.events.once('abort', res));
  const st = open(session, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }, { 'x-user': 'user-0', 'x-request-id': 'e2e-cancel' });
  const done = collect(st);
  await within('first primary token', new Promise<void>((res) => st.once('data', () => res())));
  st.close(http2.constants.NGHTTP2_CANCEL);
  await done;
  const rec = await within('the shadow to see the reset', shadowAbort);
  t.equal(rec.id, 'e2e-cancel');
  t.equal(rec.rstCode, http2.constants.NGHTTP2_CANCEL);
  await waitFor('the primary to see the reset', async () => (await g.modelStats()).aborted + eastB.stats().aborted === 1);
  t.equal(shadow.stats().completed, USERS * 2, 'no shadow completion for the cancelled request');
  await waitFor('cancelled metric', async () => /ghostgate_mirror_requests_total\{side="shadow",upstream="shadow",outcome="cancelled"\} 1/.test(await scrape()));
});

t.test('supersede through the real gateway: the older completion for a document is reset upstream', async (t) => {
  const g = await startGateway(t, {
    modelArgs: ['--ttft-ms', '20', '--token-ms', '20', '--tokens', '50'],
    extraConfig: 'facts: { headers: [x-user, x-ghostgate-document] }',
    policies: {
      'supersede.yaml': [
        'name: supersede',
        'steps:',
        '  - use: supersede',
        '    params: { keyFrom: { header: x-ghostgate-document }, identity: request.headers.x-user }',
      ].join('\n'),
    },
  });
  const session = await connect(g.url);
  t.teardown(() => session.close());
  const body = { model: 'ghost-small', prompt: 'def f(', stream: true };
  const doc = { 'x-user': 'alice', 'x-ghostgate-document': 'file:///a.py' };
  const first = open(session, '/v1/completions', body, { ...doc, 'x-request-id': 'older' });
  const firstDone = collect(first);
  await within('first token of the older request', new Promise<void>((res) => first.once('data', () => res())));
  const other = post(session, '/v1/completions', { ...body, max_tokens: 4 }, { 'x-user': 'bob', 'x-ghostgate-document': 'file:///a.py', 'x-request-id': 'bob' });
  const second = await post(session, '/v1/completions', { ...body, max_tokens: 4 }, { ...doc, 'x-request-id': 'newer' });
  const older = await firstDone;
  t.equal(second.status, 200);
  t.ok(second.complete, 'the newer request completes');
  t.notOk(older.complete, 'the older one is cut');
  t.match(older.text, /GW_ERR_POLICY_SUPERSEDED/, 'and told why (SSE error event)');
  t.ok((await other).complete, "another user's request for the same document is untouched");
  await waitFor('the upstream to see the reset', async () => (await g.modelStats()).aborted === 1);
  const stats = await g.modelStats();
  t.equal(stats.aborts[0]!.id, 'older', 'the older stream was reset upstream');
  t.equal(stats.aborts[0]!.phase, 'streaming');
  t.equal(stats.aborts[0]!.rstCode, http2.constants.NGHTTP2_CANCEL, 'reset with CANCEL');
});
