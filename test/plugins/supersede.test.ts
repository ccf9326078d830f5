import t from 'tap';
import type { Test } from 'tap';
import { Registry } from 'prom-client';
import supersede from '../../plugins/supersede/index.ts';
import { GatewayError } from '../../core/errors.ts';
import type { GatewayExchange } from '../../core/exchange.ts';
import type { JsonObject, OutboundRequest, Step } from '../../core/types.ts';
import { makeExchange } from '../helpers/exchange.ts';
import { loadStep } from '../helpers/plugin-step.ts';

const out: OutboundRequest = { upstream: 'local', path: '/v1/completions', headers: {}, body: Buffer.from('{}') };

async function make(params: unknown, sharedStore = new Map<string, unknown>(), metrics = new Registry()): Promise<Step> {
  return (await loadStep(supersede, params, { sharedStore, metrics })).step;
}
function req(sub: string | undefined, doc: string | undefined, extra: { id?: string; path?: string; header?: boolean } = {}): GatewayExchange {
  const body: JsonObject = { model: 'ghost-small', prompt: 'x', extra: doc === undefined ? {} : { document_uri: doc } };
  return makeExchange({
    id: extra.id, path: extra.path, body,
    claims: sub === undefined ? undefined : { sub },
    headers: extra.header && doc !== undefined ? { 'x-ghostgate-document': doc } : {},
  });
}
/** What the core does: forwarding (the request really goes upstream). */
const forward = (step: Step, ex: GatewayExchange): void => step.forwarding!(ex, out);

async function rejects(t: Test, params: unknown, msg: RegExp): Promise<void> {
  const err = await loadStep(supersede, params).then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof GatewayError);
  t.equal((err as GatewayError).code, 'GW_ERR_CONFIG_PLUGIN_PARAMS');
  t.match((err as GatewayError).message, msg);
}

t.test('bad params are refused at load', async (t) => {
  await rejects(t, {}, /keyFrom/);
  await rejects(t, { keyFrom: {} }, /fewer than 1|keyFrom/);
  await rejects(t, { keyFrom: { bodyPointer: 'extra/doc' } }, /pattern/);
  await rejects(t, { keyFrom: { bodyPointer: '/a/__proto__' } }, /forbidden/);
  await rejects(t, { keyFrom: { header: 'bad header' } }, /pattern/);
  await rejects(t, { keyFrom: { header: 'x-doc' }, identity: 'env.USER' }, /identity/);
  await rejects(t, { keyFrom: { header: 'x-doc' }, maxEntries: 0 }, /maxEntries|>= 1/);
  await rejects(t, { keyFrom: { header: 'x-doc' }, nope: 1 }, /unknown property/);
});

t.test('a newer request for the same document and identity cancels the older one', async (t) => {
  const reg = new Registry();
  const step = await make({ keyFrom: { bodyPointer: '/extra/document_uri' } }, new Map(), reg);
  const first = req('alice', 'file:///a.py', { id: 'r1' });
  forward(step, first);
  t.notOk(first.signal.aborted, 'alone: untouched');
  const second = req('alice', 'file:///a.py', { id: 'r2' });
  forward(step, second);
  t.ok(first.signal.aborted, 'older is cancelled');
  t.equal(first.signal.reason, 'GW_ERR_POLICY_SUPERSEDED');
  t.equal(first.cancelCode, 'GW_ERR_POLICY_SUPERSEDED');
  t.notOk(second.signal.aborted, 'newer continues');
  const third = req('alice', 'file:///a.py', { id: 'r3' });
  forward(step, third);
  t.ok(second.signal.aborted, 'and the newer one is superseded in turn');
  t.notOk(third.signal.aborted);
  const metric = await reg.getSingleMetricAsString('ghostgate_superseded_total');
  t.match(metric, /ghostgate_superseded_total 2/);
});

t.test('different identity, document, or path: untouched; no key: untouched', async (t) => {
  const step = await make({ keyFrom: { bodyPointer: '/extra/document_uri' } });
  const a = req('alice', 'file:///a.py');
  forward(step, a);
  forward(step, req('bob', 'file:///a.py'));
  forward(step, req('alice', 'file:///b.py'));
  forward(step, req('alice', 'file:///a.py', { path: '/v1/chat/completions' }));
  t.notOk(a.signal.aborted, 'other user, other document, other endpoint: not superseded');
  const noKey1 = req('alice', undefined);
  forward(step, noKey1);
  forward(step, req('alice', undefined));
  t.notOk(noKey1.signal.aborted, 'requests without a key are untouched');
});

t.test('identity falls back to request.ip; header key wins over the body pointer', async (t) => {
  const step = await make({ keyFrom: { header: 'X-Ghostgate-Document', bodyPointer: '/extra/document_uri' } });
  const anon = req(undefined, 'doc-1', { header: true });
  forward(step, anon);
  forward(step, req(undefined, 'doc-1', { header: true }));
  t.ok(anon.signal.aborted, 'same ip, no claims: superseded');
  const viaBody = req('carol', 'doc-2');
  forward(step, viaBody);
  const viaHeader = makeExchange({ claims: { sub: 'carol' }, headers: { 'x-ghostgate-document': 'doc-2' }, body: { extra: { document_uri: 'other' } } });
  forward(step, viaHeader);
  t.ok(viaBody.signal.aborted, 'header doc-2 matches body doc-2 of the earlier request');
});

t.test('done cleans up, only for the same exchange; already finished requests are not cancelled', async (t) => {
  const store = new Map<string, unknown>();
  const step = await make({ keyFrom: { bodyPointer: '/extra/document_uri' } }, store);
  const table = store.get('supersede:inflight') as { byKey: Map<string, unknown> };
  const first = req('dave', 'd');
  forward(step, first);
  t.equal(table.byKey.size, 1);
  step.done!(first, 'ok');
  t.equal(table.byKey.size, 0, 'done removes the entry');
  const next = req('dave', 'd');
  forward(step, next);
  t.notOk(first.signal.aborted, 'a finished request is never cancelled');
  t.notOk(next.signal.aborted);

  // The older one finishes after being superseded: its done must not remove the newer entry.
  const newer = req('dave', 'd');
  forward(step, newer);
  t.ok(next.signal.aborted);
  step.done!(next, 'superseded');
  t.equal(table.byKey.size, 1, 'the newer entry stays');
  const newest = req('dave', 'd');
  forward(step, newest);
  t.ok(newer.signal.aborted, 'so the newer one can still be superseded');
  step.done!(newer, 'superseded');
  step.done!(newest, 'ok');
  t.equal(table.byKey.size, 0);
});

t.test('a reload keeps track of requests started under the previous config', async (t) => {
  const store = new Map<string, unknown>();
  const before = await make({ keyFrom: { bodyPointer: '/extra/document_uri' } }, store);
  const after = await make({ keyFrom: { bodyPointer: '/extra/document_uri' }, maxEntries: 1000 }, store);
  const old = req('erin', 'doc');
  forward(before, old);
  forward(after, req('erin', 'doc'));
  t.ok(old.signal.aborted, 'the new step cancels the request the old step tracked');
});

t.test('memory is bounded: the oldest entries are forgotten, not cancelled', async (t) => {
  const store = new Map<string, unknown>();
  const step = await make({ keyFrom: { header: 'x-ghostgate-document' }, maxEntries: 100, maxKeyLength: 64 }, store);
  const table = store.get('supersede:inflight') as { byKey: Map<string, unknown> };
  const all: GatewayExchange[] = [];
  for (let i = 0; i < 1000; i++) { const ex = req(`u${i}`, `doc${i}`, { header: true }); all.push(ex); forward(step, ex); }
  t.equal(table.byKey.size, 100);
  t.notOk(all.some((e) => e.signal.aborted), 'eviction cancels nobody');
  forward(step, req('u999', 'doc999', { header: true }));
  t.ok(all[999]!.signal.aborted, 'recent entries still supersede');
  const long = req('zed', 'x'.repeat(65), { header: true });
  forward(step, long);
  forward(step, req('zed', 'x'.repeat(65), { header: true }));
  t.notOk(long.signal.aborted, 'keys longer than maxKeyLength are ignored');
});
