/**
 * The Redis store itself (core/store/redis.ts) against a real redis-server: one token bucket for
 * all its clients, claims that reach the holder's process, fail open while Redis is away, and
 * recovery by itself.
 */
import net from 'node:net';
import t from 'tap';
import type { Test } from 'tap';
import { Registry } from 'prom-client';
import { RedisStore } from '../../core/store/redis.ts';
import type { Logger } from '../../core/types.ts';
import type { TakeResult } from '../../core/store/types.ts';
import { startRedis } from '../helpers/redis.ts';
import { waitFor, within } from '../helpers/h2.ts';

interface Line { level: string; msg: string; fields: Record<string, unknown> }
function recordingLog(): Logger & { lines: Line[] } {
  const lines: Line[] = [];
  const at = (level: string) => (o: object | string, msg?: string): void => {
    lines.push(typeof o === 'string' ? { level, msg: o, fields: {} } : { level, msg: msg ?? '', fields: o as Record<string, unknown> });
  };
  return { lines, info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') };
}

async function open(t: Test, url: string, o: { timeoutMs?: number; prefix?: string } = {}) {
  const log = recordingLog();
  const registry = new Registry();
  const store = new RedisStore({ url, timeoutMs: o.timeoutMs ?? 2000, retryMs: 50, keyPrefix: o.prefix ?? 'gg-test:' }, log, registry);
  t.teardown(() => store.close());
  t.ok(await store.whenUp(15_000), 'the store connects');
  const metric = async (name: string): Promise<string> => registry.getSingleMetricAsString(name);
  return { store, log, metric };
}

/** `n` takes from `key`, alternating between the stores, one after another. */
async function takes(stores: RedisStore[], key: string, n: number, perMs: number, burst: number): Promise<Array<TakeResult | undefined>> {
  const out: Array<TakeResult | undefined> = [];
  for (let i = 0; i < n; i++) out.push(await stores[i % stores.length]!.take(key, perMs, burst));
  return out;
}

t.test('two clients share one token bucket: burst, then waits (no token created twice)', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const a = await open(t, r.url);
  const b = await open(t, r.url);
  const got = await takes([a.store, b.store], 'alice', 12, 1 / 60_000, 5); // 1 token a minute
  t.same(got.slice(0, 5).map((r) => r?.taken), [true, true, true, true, true], 'the burst of 5 is taken, across both clients');
  t.same(got.slice(0, 5).map((r) => Math.round(r!.tokens)), [4, 3, 2, 1, 0], 'each answer says how many are left');
  for (const r of got.slice(5)) t.ok(r !== undefined && !r.taken && r.tokens >= 0 && r.tokens < 0.1, `then none is taken (${r?.tokens} left)`);
  t.same((await takes([a.store], 'bob', 1, 1 / 60_000, 5)).map((r) => r?.taken), [true], 'another key has its own bucket');
  const forced = await b.store.take('alice', 1 / 60_000, 5, true);
  t.ok(forced?.taken && forced.tokens < -0.9 && forced.tokens >= -1.01, `a forced take goes into debt (${forced?.tokens})`);
  const after = await a.store.take('alice', 1 / 60_000, 5);
  t.ok(after && !after.taken && after.tokens < -0.9, 'which the next take sees');
  for (let i = 0; i < 10; i++) await a.store.take('alice', 1 / 60_000, 5, true);
  t.ok((await a.store.take('alice', 1 / 60_000, 5))!.tokens >= -5, 'debt is bounded by burst');
  const ttl = Number(r.cli('PTTL', 'gg-test:rl:alice'));
  t.ok(ttl > 9 * 60_000 && ttl <= 10 * 60_000 + 1000, `the bucket key expires once it would be full again: 10 tokens at 1/min (${ttl} ms)`);
});

t.test('a claim reaches the process holding the key, and only it; nothing is released, the key expires', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const a = await open(t, r.url);
  const b = await open(t, r.url);
  const heard = { a: [] as string[], b: [] as string[] };
  a.store.onSuperseded((tok) => heard.a.push(tok));
  b.store.onSuperseded((tok) => heard.b.push(tok));
  const key = 'alice|/v1/completions|doc';
  const t1 = a.store.newToken();
  a.store.claim(key, t1);
  await waitFor('the first claim to be stored', () => r.cli('GET', `gg-test:sup:k:${key}`).trim() === t1);
  const ttl = Number(r.cli('PTTL', `gg-test:sup:k:${key}`));
  t.ok(ttl > 9 * 60_000 && ttl <= 10 * 60_000, `the claim expires after 10 min (${ttl} ms)`);
  const t2 = a.store.newToken();
  a.store.claim(key, t2); // A's own newer request: A's table cancels the older one, Redis tells no one
  const t3 = b.store.newToken();
  t.not(t1, t3, 'tokens are unique across processes');
  b.store.claim(key, t3);
  await waitFor('A to hear that its request was superseded', () => heard.a.length >= 1);
  t.same(heard.a, [t2], 'A is told of its newest claim only: not of the one its own newer claim replaced (that message would have come first)');
  const t4 = a.store.newToken();
  a.store.claim(key, t4);
  await waitFor('B to hear of the newer claim', () => heard.b.length === 1);
  t.same(heard.b, [t3], 'B is told');
  t.equal(r.cli('GET', `gg-test:sup:k:${key}`).trim(), t4, 'the key holds the newest claim');
  t.same(heard.a, [t2], 'a process is never told about its own newest claim');
});

t.test('Redis killed: calls answer undefined at once (fail open), counted and logged once; restarted: back by itself', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const { store, log, metric } = await open(t, r.url, { timeoutMs: 2000 });
  t.match(await store.take('k1', 1 / 60_000, 2), { taken: true });
  t.match(await metric('ghostgate_store_up'), /ghostgate_store_up 1/);
  r.kill();
  await waitFor('the store to notice', () => !store.up);
  const started = performance.now();
  const answers: Array<TakeResult | undefined> = [];
  for (let i = 0; i < 20; i++) {
    const p = store.take('k1', 1 / 60_000, 2);
    answers.push(p === undefined ? undefined : await p);
  }
  t.same(answers, new Array(20).fill(undefined), 'every call says "decide in process"');
  t.ok(performance.now() - started < 1000, 'without waiting on Redis');
  store.claim('x', store.newToken());
  await new Promise((resolve) => setImmediate(resolve)); // claims are written after the turn
  t.match(await metric('ghostgate_store_fallback_total'), /op="take",reason="down"} 20/, 'each fallback is counted');
  t.match(await metric('ghostgate_store_fallback_total'), /op="claim",reason="down"} 1/);
  t.match(await metric('ghostgate_store_up'), /ghostgate_store_up 0/);
  const downs = log.lines.filter((l) => /down/.test(l.msg));
  t.equal(downs.length, 1, 'one log line for the state change, not one per call');
  t.equal(downs[0]!.level, 'warn');
  await r.restart();
  await waitFor('the store to come back by itself', () => store.up, 20_000);
  t.equal(log.lines.filter((l) => /up again/.test(l.msg)).length, 1, 'one log line for the recovery');
  const again = await takes([store], 'k1', 3, 1 / 60_000, 2);
  t.same(again.map((r) => r?.taken), [true, true, false], 'Redis decides again (the restarted one started empty: a full bucket that runs out)');
});

t.test('Redis slow (SIGSTOP): a call waits at most timeoutMs, then the store is down and calls do not wait; SIGCONT: back', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const { store, log, metric } = await open(t, r.url, { timeoutMs: 300 });
  t.match(await store.take('k2', 1 / 60_000, 5), { taken: true });
  r.pause();
  const started = performance.now();
  t.equal(await within('the call to give up on Redis', Promise.resolve(store.take('k2', 1 / 60_000, 5)), 10_000), undefined, 'no answer within the budget: decide in process');
  const waited = performance.now() - started;
  t.ok(waited >= 290 && waited < 5000, `waited about timeoutMs, loosely bounded (${waited.toFixed(0)} ms)`);
  t.match(await metric('ghostgate_store_fallback_total'), /op="take",reason="timeout"} 1/, 'counted as a timeout');
  t.notOk(store.up, 'the store is down now');
  t.equal(store.take('k2', 1 / 60_000, 5), undefined, 'so the next call answers at once, without a promise');
  t.equal(log.lines.filter((l) => /down/.test(l.msg)).length, 1, 'logged once');
  t.match(log.lines.find((l) => /down/.test(l.msg))!.fields, { reason: /timeoutMs \(300 ms\)/ });
  const paused = performance.now();
  r.resume();
  await waitFor('the probe to bring it back', () => store.up, 20_000);
  const lateMetric = async (): Promise<string> => metric('ghostgate_store_late_answer_seconds');
  await waitFor('the late answer to be recorded', async () => /_count\{op="take"\} 1/.test(await lateMetric()));
  const sum = Number((await lateMetric()).match(/_sum\{op="take"\} (\S+)/)![1]);
  t.ok(sum * 1000 >= paused - started - 1 && sum * 1000 <= performance.now() - started, `the answer Redis gave after SIGCONT is recorded as late: ${(sum * 1000).toFixed(0)} ms after sending (given up after ${waited.toFixed(0)} ms, resumed after ${(paused - started).toFixed(0)} ms)`);
  t.match(await store.take('k2', 1 / 60_000, 5), { taken: true }, 'answers again');
  // Fire-and-forget calls (supersede) notice a slow Redis too: a call that finds an earlier one
  // unanswered past timeoutMs marks the store down (no timer per call).
  r.pause();
  await waitFor('claims alone to notice the stall', () => { store.claim('doc', store.newToken()); return !store.up; });
  t.match(await metric('ghostgate_store_fallback_total'), /op="claim",reason="timeout"} 1/, 'counted as a timeout');
  r.resume();
  await waitFor('back again', () => store.up, 20_000);
});

/**
 * Block this event loop (as a long GC pause or a busy turn does) until Redis has run the command
 * (seen from another connection, redis-cli: its answer is in our socket then) and `ms` have passed.
 */
function blockUntil(applied: () => boolean, ms: number): number {
  const t0 = performance.now();
  let seen = false;
  while (!seen || performance.now() - t0 < ms) {
    if (!seen) seen = applied();
    if (!seen && performance.now() - t0 > 15_000) throw new Error('Redis did not run the command within 15 s');
  }
  return performance.now() - t0;
}

t.test('a take\'s answer that arrived while our own event loop was blocked past timeoutMs is used, not a fallback', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const { store, log, metric } = await open(t, r.url, { timeoutMs: 50 });
  // take (awaited): its budget timer fires first when the loop resumes; the answer is read in the same turn.
  const p = store.take('blocked', 1 / 3_600_000, 5);
  const blocked = blockUntil(() => r.cli('HEXISTS', 'gg-test:rl:blocked', 'k').trim() === '1', 200);
  t.ok(blocked >= 200, `the loop was blocked ${blocked.toFixed(0)} ms (timeoutMs 50)`);
  t.match(await p, { taken: true, tokens: 4 }, 'Redis\'s answer is used');
  t.ok(store.up, 'the store is still up after the take');
  t.match(await store.take('blocked', 1 / 3_600_000, 5), { taken: true, tokens: 3 }, 'and the next call goes to Redis');
});

/**
 * A TCP proxy to Redis in this process that can hold Redis's answers: `holdNext()` resolves (in
 * the poll phase, from the socket's data event) once an answer is held; `release()` passes it on.
 */
async function holdingProxy(t: Test, port: number) {
  let hold = false;
  const held: Array<[net.Socket, Buffer]> = [];
  let onHeld: (() => void) | undefined;
  const clients = new Set<net.Socket>();
  const server = net.createServer((c) => {
    clients.add(c);
    const up = net.connect(port, '127.0.0.1');
    c.on('data', (d) => up.write(d));
    up.on('data', (d) => {
      if (!hold) { c.write(d); return; }
      held.push([c, d]);
      onHeld?.();
    });
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
    c.on('close', () => up.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => { server.close(); for (const c of clients) c.destroy(); });
  return {
    url: `redis://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    holdNext(): Promise<void> { hold = true; return new Promise((resolve) => { onHeld = resolve; }); },
    release(): void { hold = false; onHeld = undefined; for (const [c, d] of held.splice(0)) c.write(d); },
  };
}

t.test('a claim\'s answer that arrived while the loop was blocked is used: the next claim does not count it late', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const proxy = await holdingProxy(t, r.port);
  const { store, log, metric } = await open(t, proxy.url, { timeoutMs: 50 });
  const warm = store.newToken();
  store.claim('doc-warm', warm); // Redis loads the script (a first EVALSHA is answered NOSCRIPT, then EVAL)
  await waitFor('the first claim', () => r.cli('GET', 'gg-test:sup:k:doc-warm').trim() === warm);
  t.ok(await store.take('warm', 1, 5), 'answered in order after it: nothing of the claim is left to hold');
  const held = proxy.holdNext();
  store.claim('doc-a', store.newToken());
  await held; // Redis answered; the proxy holds it. We go on in the poll phase, as a request does:
  proxy.release(); // the answer is in the store's socket now, unread until the next poll
  const t0 = performance.now();
  while (performance.now() - t0 < 200) { /* blocked past timeoutMs (a GC pause, a long turn) */ }
  store.claim('doc-b', store.newToken()); // written in this turn's check phase: finds doc-a's unanswered
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  t.ok(store.up, 'the store is still up');
  t.notMatch(await metric('ghostgate_store_fallback_total'), /ghostgate_store_fallback_total\{/, 'no fallback counted');
  t.equal(log.lines.filter((l) => /down/.test(l.msg)).length, 0, 'nothing logged as down');
});

t.test('a claim is written after the caller\'s turn (the request goes upstream first), all of the turn\'s claims together', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const { store } = await open(t, r.url);
  const tokens = [store.newToken(), store.newToken()];
  store.claim('turn-a', tokens[0]!);
  store.claim('turn-b', tokens[1]!);
  // Had it been written at once, Redis (another process) would hold it within this busy wait.
  const t0 = performance.now();
  let early = '';
  while (performance.now() - t0 < 100 && early === '') early = r.cli('GET', 'gg-test:sup:k:turn-a').trim();
  t.equal(early, '', 'nothing reached Redis during the turn');
  await waitFor('both claims to reach Redis', () => r.cli('GET', 'gg-test:sup:k:turn-b').trim() === tokens[1]);
  t.equal(r.cli('GET', 'gg-test:sup:k:turn-a').trim(), tokens[0]);
});

t.test('the budget is timeoutMs of real time: a timer that fires early (Node times timers in whole ms) does not cut it short', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const stores = [];
  for (let i = 0; i < 10; i++) stores.push((await open(t, r.url, { timeoutMs: 5 })).store);
  r.pause();
  const waits: number[] = [];
  for (const s of stores) {
    const started = performance.now();
    const p = s.take('k3', 1, 5);
    // The turn goes on a while after the call (as under load): the loop then polls with a timeout
    // reckoned from whole milliseconds, and a plain timer fires up to 1 ms short.
    while (performance.now() - started < 2.5) { /* busy */ }
    t.equal(await within('the take to give up', Promise.resolve(p), 10_000), undefined);
    waits.push(performance.now() - started);
  }
  r.resume();
  t.ok(waits.every((w) => w >= 5), `each of 10 calls waited at least 5 ms (${waits.map((w) => w.toFixed(2)).join(', ')})`);
});

/**
 * The rate-limit step as two processes would run it: each with its own store connection and its
 * own reload-surviving map (no shared in-process state), one Redis. undefined when Redis cannot run.
 */
async function twoProcesses(t: Test, params: Record<string, unknown>, sub: string) {
  const r = await startRedis(t);
  if (!r) return undefined;
  const { default: rateLimit } = await import('../../plugins/rate-limit/index.ts');
  const { loadStep } = await import('../helpers/plugin-step.ts');
  const { makeExchange } = await import('../helpers/exchange.ts');
  const a = await open(t, r.url);
  const b = await open(t, r.url);
  const stepA = (await loadStep(rateLimit, params, { store: a.store, sharedStore: new Map() })).step;
  const stepB = (await loadStep(rateLimit, params, { store: b.store, sharedStore: new Map() })).step;
  const hit = (s: typeof stepA) => Promise.resolve(s.request!(makeExchange({ claims: { sub } })));
  return { a, stepA, stepB, hit };
}

t.test('rate-limit (shared: fast) in two "processes" on one Redis: concurrent bursts may overshoot on estimates, and Redis keeps the debt', async (t) => {
  const two = await twoProcesses(t, { ratePerSecond: 0.001, burst: 8, shared: 'fast' }, 'zoe');
  if (!two) return;
  const { a, stepA, stepB, hit } = two;
  const first = [await hit(stepA), await hit(stepB)];
  t.same(first, [undefined, undefined], 'one request each: both counted in Redis');
  const burst = await Promise.all([...Array.from({ length: 10 }, () => hit(stepA)), ...Array.from({ length: 10 }, () => hit(stepB))]);
  const allowed = 2 + burst.filter((x) => x === undefined).length;
  t.ok(allowed >= 8, `at least the burst is allowed (${allowed})`);
  t.ok(allowed <= 8 + 2 * 6, `at most what each process could allow on its estimate (${allowed})`);
  const k = (await a.store.take(`claims.sub 0.001/s burst 8\0sub\0zoe`, 0.001 / 1000, 8))!;
  t.notOk(k.taken, 'the bucket is empty now');
  t.ok(Math.abs(k.tokens - (8 - allowed)) < 0.05, `Redis counted every allowed request: ${k.tokens} left = 8 - ${allowed} (a debt when over)`);
  t.equal((await hit(stepA) as { status?: number } | undefined)?.status, 429, 'and the next request is denied');
});

t.test('rate-limit (default, exact) in two "processes" on one Redis: a concurrent burst allows exactly burst', async (t) => {
  const two = await twoProcesses(t, { ratePerSecond: 0.001, burst: 8 }, 'yan');
  if (!two) return;
  const { stepA, stepB, hit } = two;
  await hit(stepA);
  await hit(stepB);
  const burst = await Promise.all([...Array.from({ length: 10 }, () => hit(stepA)), ...Array.from({ length: 10 }, () => hit(stepB))]);
  t.equal(2 + burst.filter((x) => x === undefined).length, 8, 'eight allowed in all');
});
