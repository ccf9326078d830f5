/**
 * rate-limit and supersede with a shared store, step by step, against a scripted store (what the
 * Redis store answers is tested in redis-store.test.ts): who decides, and when the store is asked.
 */
import t from 'tap';
import { Registry } from 'prom-client';
import rateLimit from '../../plugins/rate-limit/index.ts';
import supersede from '../../plugins/supersede/index.ts';
import type { SharedStore } from '../../core/store/types.ts';
import type { LocalReply, OutboundRequest } from '../../core/types.ts';
import { loadStep } from '../helpers/plugin-step.ts';
import { makeExchange } from '../helpers/exchange.ts';

/** A store whose `take` answers from a queue: a number (ms to wait), 'down' (sync undefined) or 'timeout' (async undefined). */
function scripted() {
  const answers: Array<number | 'down' | 'timeout'> = [];
  const takes: string[] = [];
  const claims: Array<[string, string]> = [];
  const releases: Array<[string, string]> = [];
  const handlers: Array<(tok: string) => void> = [];
  let n = 0;
  const store: SharedStore = {
    take(key) {
      takes.push(key);
      const a = answers.shift() ?? 0;
      if (a === 'down') return undefined;
      return Promise.resolve(a === 'timeout' ? undefined : a);
    },
    claim(key, token) { claims.push([key, token]); },
    release(key, token) { releases.push([key, token]); },
    newToken: () => `me ${++n}`,
    onSuperseded(fn) { handlers.push(fn); },
  };
  return { store, answers, takes, claims, releases, supersededElsewhere: (tok: string) => { for (const h of handlers) h(tok); } };
}

const hit = async (step: { request?: (ex: never) => unknown }, sub: string) =>
  (await step.request!(makeExchange({ claims: { sub } }) as never)) as LocalReply | undefined;

t.test('rate-limit: the store decides; a denial is remembered (no store call) until a token can be free', async (t) => {
  const s = scripted();
  const { step } = await loadStep(rateLimit, { ratePerSecond: 1, burst: 1 }, { store: s.store });
  s.answers.push(0, 30_000);
  t.equal(await hit(step, 'alice'), undefined, 'store says taken: allowed');
  const denied = await hit(step, 'alice');
  t.equal(denied?.status, 429, 'store says wait 30 s: 429');
  t.equal(denied?.headers?.['retry-after'], '30', 'Retry-After from the store\'s wait');
  t.equal(s.takes.length, 2);
  const again = await hit(step, 'alice');
  t.equal(again?.status, 429, 'still denied');
  t.ok(Number(again?.headers?.['retry-after']) >= 29, 'with what is left of the wait');
  t.equal(s.takes.length, 2, 'without asking the store');
  t.equal(await hit(step, 'bob'), undefined, 'another subject is asked about');
  t.equal(s.takes.length, 3);
  t.match(s.takes[0], /alice$/, 'the store key names the subject');
  t.not(s.takes[0], s.takes[2]);
});

t.test('rate-limit: store down or over budget → this process\'s bucket decides (fail open, as without a store)', async (t) => {
  const s = scripted();
  const { step } = await loadStep(rateLimit, { ratePerSecond: 0.001, burst: 2 }, { store: s.store });
  s.answers.push('down', 'timeout', 'down');
  const r = [await hit(step, 'carol'), await hit(step, 'carol'), await hit(step, 'carol')];
  t.same(r.map((x) => x?.status), [undefined, undefined, 429], 'the local bucket (burst 2) limits');
  s.answers.push('down');
  const sync = step.request!(makeExchange({ claims: { sub: 'dave' } }));
  t.notOk(sync instanceof Promise, 'store down: decided synchronously, no wait at all');
  t.equal(sync, undefined, 'and allowed by dave\'s own bucket');
});

t.test('supersede: claims in the store, releases when done, and cancels what the store says was superseded elsewhere', async (t) => {
  const s = scripted();
  const reg = new Registry();
  const { step } = await loadStep(supersede, { keyFrom: { bodyPointer: '/doc' } }, { store: s.store, metrics: reg });
  const out: OutboundRequest = { upstream: 'local', path: '/v1/completions', headers: {}, body: Buffer.from('{}') };
  const a = makeExchange({ claims: { sub: 'alice' }, body: { model: 'm', prompt: 'x', doc: 'a.py' } });
  step.forwarding!(a, out);
  t.equal(s.claims.length, 1, 'a forwarded request claims its key');
  const [key, token] = s.claims[0]!;
  t.match(key, /alice/);
  s.supersededElsewhere('me 999');
  t.notOk(a.signal.aborted, 'an unknown token cancels nothing');
  s.supersededElsewhere(token);
  t.ok(a.signal.aborted, 'the store says a newer request elsewhere took the key: cancelled');
  t.equal(a.signal.reason, 'GW_ERR_POLICY_SUPERSEDED');
  t.match(await reg.getSingleMetricAsString('ghostgate_superseded_total'), /ghostgate_superseded_total 1/);
  s.supersededElsewhere(token);
  t.match(await reg.getSingleMetricAsString('ghostgate_superseded_total'), /ghostgate_superseded_total 1/, 'counted once');
  step.done!(a, 'superseded');
  t.same(s.releases, [[key, token]], 'done releases the claim');
  const b = makeExchange({ claims: { sub: 'alice' }, body: { model: 'm', prompt: 'x', doc: 'a.py' } });
  const c = makeExchange({ claims: { sub: 'alice' }, body: { model: 'm', prompt: 'x', doc: 'a.py' } });
  step.forwarding!(b, out);
  step.forwarding!(c, out);
  t.ok(b.signal.aborted, 'in one process, the newer request cancels the older at once (no store round trip)');
  t.equal(s.claims.length, 3, 'both claimed');
});
