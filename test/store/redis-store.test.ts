/**
 * The Redis store itself (core/store/redis.ts) against a real redis-server: one token bucket for
 * all its clients, claims that reach the holder's process, fail open while Redis is away, and
 * recovery by itself.
 */
import { readFileSync } from 'node:fs';
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

async function open(t: Test, url: string, o: { timeoutMs?: number; retryMs?: number; prefix?: string; leaseTtlMs?: number } = {}) {
  const log = recordingLog();
  const registry = new Registry();
  const store = new RedisStore({ url, timeoutMs: o.timeoutMs ?? 2000, retryMs: o.retryMs ?? 50, keyPrefix: o.prefix ?? 'gg-test:', leaseTtlMs: o.leaseTtlMs }, log, registry);
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

t.test('leases: tokens held by processes count as in the bucket (it never refills over burst less them); given back, used, lapsed', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const a = await open(t, r.url);
  const b = await open(t, r.url);
  // 1 token per ms, burst 8: full again within 8 ms of any call.
  t.same(await a.store.lease('fast', 1, 8, 3, 0), { granted: 3, tokens: 5 }, 'A leases 3 of 8');
  await new Promise((resolve) => setTimeout(resolve, 30)); // any time past 8 ms: the bucket is as full as it gets
  t.same(await b.store.lease('fast', 1, 8, 8, 0), { granted: 5, tokens: 0 }, 'refilled, B gets 5, not 8: A\'s 3 still count as in the bucket');
  const fields = r.cli('HKEYS', 'gg-test:rl:fast').split('\n').filter((f) => f.startsWith('p:')).sort();
  t.same(fields, [`p:${a.store.instanceId}`, `p:${b.store.instanceId}`].sort(), 'Redis records who holds tokens');
  t.equal(r.cli('HGET', 'gg-test:rl:fast', `p:${a.store.instanceId}`).split(' ')[0], '3');
  a.store.giveBack('fast', 1, 8, 3);
  await waitFor('A\'s give-back', () => r.cli('HEXISTS', 'gg-test:rl:fast', `p:${a.store.instanceId}`).trim() === '0');
  t.same(await b.store.lease('fast', 1, 8, 8, 5), { granted: 3, tokens: 0 }, 'given back: B (still holding its 5) gets A\'s 3');

  // 1 token a minute: no refill during the test.
  const slow = 1 / 60_000;
  t.same(await a.store.lease('slow', slow, 8, 4, 0), { granted: 4, tokens: 4 });
  t.match(await a.store.lease('slow', slow, 8, 1, 3), { granted: 1 }, 'A used 1 of its 4 and keeps 3: that one is gone');
  a.store.giveBack('slow', slow, 8, 4);
  await waitFor('A\'s give-back', () => r.cli('HEXISTS', 'gg-test:rl:slow', `p:${a.store.instanceId}`).trim() === '0');
  const leasedAt = performance.now();
  t.match(await b.store.lease('slow', slow, 8, 8, 0), { granted: 7 }, '8 - 1 used: 7 are back in the bucket');
  const ttl = Number(r.cli('PTTL', 'gg-test:rl:slow'));
  // Less what went by between the lease and the PTTL (a busy machine takes a while to run redis-cli).
  const since = performance.now() - leasedAt;
  t.ok(ttl > 480_000 + 10_000 - since && ttl <= 480_000 + 1000 + 10_000, `while someone holds tokens, the key lives until full again (8 tokens at 1/min) plus their lease TTL (${ttl} ms, read ${since.toFixed(0)} ms after the lease)`);

  // A process that holds tokens and dies: its lease lapses after its TTL, and its tokens with it.
  // Its TTL long enough that a busy machine does not let it lapse between C's lease and B's.
  const c = await open(t, r.url, { leaseTtlMs: 2000 });
  t.same(await c.store.lease('lapse', 1, 4, 4, 0), { granted: 4, tokens: 0 }, 'C (lease TTL 2 s) holds the whole bucket');
  t.match(await b.store.lease('lapse', 1, 4, 4, 0), { granted: 0 }, 'B gets nothing while C holds it');
  await c.store.close();
  await waitFor('C\'s lease to lapse', async () => (await b.store.lease('lapse', 1, 4, 4, 0))?.granted === 4);
  t.equal(r.cli('HEXISTS', 'gg-test:rl:lapse', `p:${c.store.instanceId}`).trim(), '0', 'and its field is gone');
  const take = await b.store.take('fast', 1, 8);
  t.match(take, { taken: false }, 'take (shared: fast) counts held tokens too: B holds all 8');
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
  const epoch = store.epoch;
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
  store.hurry(); // claims are written a moment after the turn; now, right after it
  await new Promise((resolve) => setImmediate(resolve));
  t.match(await metric('ghostgate_store_fallback_total'), /op="take",reason="down"} 20/, 'each fallback is counted');
  t.match(await metric('ghostgate_store_fallback_total'), /op="claim",reason="down"} 1/);
  t.match(await metric('ghostgate_store_up'), /ghostgate_store_up 0/);
  const downs = log.lines.filter((l) => /down/.test(l.msg));
  t.equal(downs.length, 1, 'one log line for the state change, not one per call');
  t.equal(downs[0]!.level, 'warn');
  await r.restart();
  await waitFor('the store to come back by itself', () => store.up, 20_000);
  t.equal(log.lines.filter((l) => /up again/.test(l.msg)).length, 1, 'one log line for the recovery');
  t.equal(store.epoch, epoch + 1, 'a new epoch: what was written before (claims) may be gone');
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
  const call = Promise.resolve(store.take('k2', 1 / 60_000, 5));
  // The store times the call from its own send, somewhere between `started` and `sentBy`.
  const sentBy = performance.now();
  t.equal(await within('the call to give up on Redis', call, 10_000), undefined, 'no answer within the budget: decide in process');
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
  t.ok(sum * 1000 >= paused - sentBy - 1 && sum * 1000 <= performance.now() - started, `the answer Redis gave after SIGCONT is recorded as late: ${(sum * 1000).toFixed(0)} ms after sending (given up after ${waited.toFixed(0)} ms, resumed after ${(paused - started).toFixed(0)} ms)`);
  t.match(await store.take('k2', 1 / 60_000, 5), { taken: true }, 'answers again');
  // Fire-and-forget calls (supersede) notice a slow Redis too: a call that finds an earlier one
  // unanswered past timeoutMs marks the store down (no timer per call).
  r.pause();
  await waitFor('claims alone to notice the stall', () => { store.claim('doc', store.newToken()); return !store.up; });
  t.match(await metric('ghostgate_store_fallback_total'), /op="claim",reason="timeout"} 1/, 'counted as a timeout');
  r.resume();
  await waitFor('back again', () => store.up, 20_000);
});

t.test('Redis slow past a probe too: the store is back as soon as Redis answers the probe it gave up on, not retryMs later', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  // retryMs far beyond the test's own timeout: only the late PING's answer can bring it back in time.
  const { store, metric } = await open(t, r.url, { timeoutMs: 200, retryMs: 600_000 });
  r.pause();
  t.equal(await within('the call to give up on Redis', Promise.resolve(store.take('k3', 1 / 60_000, 5)), 10_000), undefined, 'no answer within the budget');
  t.notOk(store.up, 'down');
  await waitFor('a probe to overrun its budget as well', async () => /ghostgate_store_probes_total\{result="timeout"\} 1/.test(await metric('ghostgate_store_probes_total')), 20_000);
  t.notOk(store.up, 'still down');
  r.resume();
  await waitFor('the store to come back up', () => store.up, 20_000);
  const probes = await metric('ghostgate_store_probes_total');
  t.match(probes, /result="ok"\} 2/, 'by a probe sent when the late PING was answered (the first ok is the connect)');
  t.match(probes, /result="timeout"\} 1/, 'and only one PING was outstanding while Redis was paused');
  t.match(await store.take('k3', 1 / 60_000, 5), { taken: true }, 'answers again');
});

t.test('claims and a probe\'s PING in flight when the connection drops: after Redis is back the store comes up and stays up', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  // An unanswered claim would look overdue forever, and a PING the probe waits for would keep it
  // from sending another. ioredis settles them (rejects) only because maxRetriesPerRequest is 0:
  // it flushes its queue at the first reconnect; otherwise, with autoResendUnfulfilledCommands
  // off, ioredis 6.0.0 drops them unsettled (redis/ioredis#2193).
  const { store, metric } = await open(t, r.url, { timeoutMs: 200 });
  r.pause();
  for (let i = 0; i < 3; i++) store.claim(`doc${i}`, store.newToken());
  store.hurry(); // written right after this turn (not a moment later), before the take
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(await within('the take to give up', Promise.resolve(store.take('k4', 1 / 60_000, 5)), 10_000), undefined, 'a take gives up on the paused Redis');
  await waitFor('a probe to overrun its budget too', async () => /result="timeout"\} 1/.test(await metric('ghostgate_store_probes_total')), 20_000);
  r.kill(); // claims and a PING unanswered on the connection
  r.resume();
  await r.restart();
  await waitFor('the store to come back', () => store.up, 20_000);
  t.match(await store.take('k4', 1 / 60_000, 5), { taken: true }, 'Redis answers');
  store.claim('doc0', store.newToken()); // finds the oldest unanswered claim, if any, overdue
  store.hurry();
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  t.match(await store.take('k4', 1 / 60_000, 5), { taken: true }, 'and goes on answering');
  t.ok(store.up, 'the store stays up: the claims lost with the old connection do not count as overdue');
  t.notMatch(await metric('ghostgate_store_fallback_total'), /op="claim",reason="timeout"/, 'no claim counted as timed out');
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
  // Its answer may take longer than 50 ms on a busy machine (a fallback then): what is tested is
  // that the call goes to Redis, not how fast Redis answers.
  const next = store.take('blocked', 1 / 3_600_000, 5);
  t.ok(next instanceof Promise, 'and the next call goes to Redis (a promise, not an answer in process)');
  await next;
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
  // A take answered after it (in order, one connection): nothing of the claim is left to hold. A
  // take a busy machine delays past the 50 ms budget falls back and the store probes its way back
  // up: then try again. What that counted is the baseline of the checks at the end.
  await waitFor('a take answered after the claim', async () => store.up && (await store.take('warm', 1, 5)) !== undefined, 30_000);
  const fallbacks = await metric('ghostgate_store_fallback_total');
  const downs = log.lines.filter((l) => /down/.test(l.msg)).length;
  const held = proxy.holdNext();
  store.claim('doc-a', store.newToken());
  await held; // Redis answered; the proxy holds it. We go on in the poll phase, as a request does:
  proxy.release(); // the answer is in the store's socket now, unread until the next poll
  const t0 = performance.now();
  while (performance.now() - t0 < 200) { /* blocked past timeoutMs (a GC pause, a long turn) */ }
  store.claim('doc-b', store.newToken());
  store.hurry(); // written in this turn's check phase, before the next poll: finds doc-a's unanswered
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  t.ok(store.up, 'the store is still up');
  t.equal(await metric('ghostgate_store_fallback_total'), fallbacks, 'no fallback counted');
  t.equal(log.lines.filter((l) => /down/.test(l.msg)).length, downs, 'nothing logged as down');
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

t.test('hurry: what soon and claim queued is written right after the turn, not after the short delay', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const { store } = await open(t, r.url);
  // Settle both connections first (the lease script loaded, the supersede channel subscribed):
  // the count below is of this process's every write.
  t.same(await store.lease('warm', 1, 100, 1, 0), { granted: 1, tokens: 99 });
  await waitFor('the store\'s subscription', () => r.cli('PUBSUB', 'NUMSUB', `gg-test:sup:${store.instanceId}`).trim().endsWith('1'));
  const writes = (): number => Number(/syscw: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))![1]);
  let lease: Promise<unknown> | undefined;
  store.soon(() => { lease = store.lease('hurried', 1, 100, 1, 0); });
  const w0 = writes();
  store.hurry();
  await new Promise((r) => setImmediate(r));
  const afterTurn = writes() - w0;
  t.equal(afterTurn, 1, 'written in the check phase of this turn');
  t.same(await lease, { granted: 1, tokens: 99 }, 'and answered');
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
 * The rate-limit step as `n` processes would run it: each with its own store connection and its
 * own reload-surviving map (no shared in-process state), one Redis. undefined when Redis cannot run.
 */
async function processes(t: Test, params: Record<string, unknown>, sub: string, n = 2) {
  const r = await startRedis(t);
  if (!r) return undefined;
  const { default: rateLimit } = await import('../../plugins/rate-limit/index.ts');
  const { loadStep } = await import('../helpers/plugin-step.ts');
  const { makeExchange } = await import('../helpers/exchange.ts');
  const procs = [];
  for (let i = 0; i < n; i++) {
    const o = await open(t, r.url);
    const closers: Array<() => void | Promise<void>> = [];
    const { step } = await loadStep(rateLimit, params, { store: o.store, sharedStore: new Map(), closers });
    t.teardown(() => Promise.all(closers.map((c) => c())));
    procs.push({ ...o, step, close: async () => { await Promise.all(closers.map((c) => c())); await o.store.close(); } });
  }
  type P = typeof procs[number];
  const hit = (p: P) => Promise.resolve(p.step.request!(makeExchange({ claims: { sub } })));
  /** A request, and whether it was decided in its own turn (no promise: no store call waited for). */
  const hitSync = (p: P) => {
    const v = p.step.request!(makeExchange({ claims: { sub } }));
    return { sync: !(v instanceof Promise), reply: Promise.resolve(v) };
  };
  return { r, procs, a: procs[0]!, b: procs[1]!, hit, hitSync };
}
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

t.test('rate-limit (shared: fast) in two "processes" on one Redis: concurrent bursts may overshoot on estimates, and Redis keeps the debt', async (t) => {
  const two = await processes(t, { ratePerSecond: 0.001, burst: 8, shared: 'fast' }, 'zoe');
  if (!two) return;
  const { a, b, hit } = two;
  const first = [await hit(a), await hit(b)];
  t.same(first, [undefined, undefined], 'one request each: both counted in Redis');
  const burst = await Promise.all([...Array.from({ length: 10 }, () => hit(a)), ...Array.from({ length: 10 }, () => hit(b))]);
  const allowed = 2 + burst.filter((x) => x === undefined).length;
  t.ok(allowed >= 8, `at least the burst is allowed (${allowed})`);
  t.ok(allowed <= 8 + 2 * 6, `at most what each process could allow on its estimate (${allowed})`);
  const k = (await a.store.take(`claims.sub 0.001/s burst 8\0sub\0zoe`, 0.001 / 1000, 8))!;
  t.notOk(k.taken, 'the bucket is empty now');
  t.ok(Math.abs(k.tokens - (8 - allowed)) < 0.05, `Redis counted every allowed request: ${k.tokens} left = 8 - ${allowed} (a debt when over)`);
  t.equal((await hit(a) as { status?: number } | undefined)?.status, 429, 'and the next request is denied');
});

t.test('rate-limit (default, exact) in two "processes" on one Redis: a concurrent burst allows exactly burst', async (t) => {
  const two = await processes(t, { ratePerSecond: 0.001, burst: 8 }, 'yan');
  if (!two) return;
  const { a, b, hit } = two;
  await hit(a);
  await hit(b);
  const burst = await Promise.all([...Array.from({ length: 10 }, () => hit(a)), ...Array.from({ length: 10 }, () => hit(b))]);
  t.equal(2 + burst.filter((x) => x === undefined).length, 8, 'eight allowed in all');
});

const allowedOf = (replies: unknown[]): number => replies.filter((x) => x === undefined).length;

t.test('rate-limit (exact): three processes hammering one subject never allow more than the bucket, and come close to it', async (t) => {
  const rate = 200;
  const burst = 100; // a stall of this machine up to 0.5 s loses no refill
  const three = await processes(t, { ratePerSecond: rate, burst }, 'max', 3);
  if (!three) return;
  const { procs, hit } = three;
  let allowed = 0;
  const t0 = performance.now();
  // Two users-in-a-loop per process, until 400 are allowed in all (a count, not a time window:
  // about 1.5 s of refill after the burst).
  await Promise.all(procs.flatMap((p) => [0, 1].map(async () => {
    while (allowed < 400) {
      if ((await hit(p)) === undefined) allowed++;
      await tick(); // let the sockets be read between requests (held tokens answer without a turn)
    }
  })));
  const bound = burst + (rate * (performance.now() - t0)) / 1000;
  t.ok(allowed <= bound, `allowed ${allowed} ≤ burst + rate × elapsed = ${bound.toFixed(1)}`);
  t.ok(allowed >= bound * 0.5, `and not far under it (${allowed} of ${bound.toFixed(1)})`);
});

t.test('rate-limit (exact): requests allowed on held tokens make no store call; 100 in a row cost far fewer than 100 leases', async (t) => {
  const one = await processes(t, { ratePerSecond: 1000, burst: 1000 }, 'ada', 1);
  if (!one) return;
  const { r, a, hitSync } = one;
  const before = r.scriptCalls();
  let sync = 0;
  for (let i = 0; i < 100; i++) {
    const h = hitSync(a);
    if (h.sync) sync++;
    t.equal(await h.reply, undefined);
    await tick();
  }
  const calls = r.scriptCalls() - before;
  t.ok(sync >= 90, `${sync} of 100 decided in their own turn, on a held token (no store call on their path)`);
  t.ok(calls <= 25, `${calls} leases for 100 requests: the lease size grows while they are used up at once`);
  const held = r.bucket('ada').holders[a.store.instanceId] ?? 0;
  t.ok(held >= 1 && held <= 250, `what this process holds is counted in Redis, at most burst / 4 (${held})`);
  // Prefetch: the next lease goes out while held tokens still answer, so no request waits for it.
  const c1 = r.scriptCalls();
  let n = 0;
  let waited = 0;
  while (r.scriptCalls() === c1 && n < 300) {
    const h = hitSync(a);
    if (!h.sync) waited++;
    await h.reply;
    n++;
    await tick();
  }
  t.ok(n < 300, 'a lease was sent');
  t.equal(waited, 0, `before it, ${n} requests were answered from held tokens; none waited for it (it was sent ahead)`);
});

t.test('rate-limit (exact): a process that stops sending gives its held tokens back after idling; another process then uses them', async (t) => {
  // No refill during the test (1 token per 1000 s); burst 8: at most 2 held per process.
  const two = await processes(t, { ratePerSecond: 0.001, burst: 8 }, 'kim');
  if (!two) return;
  const { r, a, b, hit } = two;
  t.equal(await hit(a), undefined, 'A: one request');
  t.equal(r.bucket('kim').holders[a.store.instanceId], 2, 'A leased 2: one for it, one held');
  const first = [];
  for (let i = 0; i < 10; i++) first.push(await hit(b));
  const before = 1 + allowedOf(first);
  t.ok(before === 7 || before === 8, `B: ${before - 1} of 10 (6 unless A had already given its held token back)`);
  await waitFor('A and B to give back after idling', () => Object.keys(r.bucket('kim').holders).length === 0, 20_000);
  t.equal(Math.round(r.bucket('kim').k), 8 - before, 'Redis has what no one used back');
  const after = [];
  for (let i = 0; i < 3; i++) after.push(await hit(b));
  t.equal(before + allowedOf(after), 8, `B used it: 8 allowed in all (${after.map((x) => (x as { status?: number } | undefined)?.status ?? 200).join(' ')})`);
});

t.test('rate-limit (exact): closing the last step of a bucket set gives back what it holds, at once', async (t) => {
  const two = await processes(t, { ratePerSecond: 0.001, burst: 8 }, 'lou');
  if (!two) return;
  const { r, a, hit } = two;
  t.equal(await hit(a), undefined);
  t.equal(Math.round(r.bucket('lou').k), 6, 'A leased 2 of 8');
  await a.close(); // a retired step (reload, shutdown), then the store closing (it waits for the give-back's answer)
  t.same(r.bucket('lou').holders, {}, 'A holds nothing in Redis any more');
  t.equal(Math.round(r.bucket('lou').k), 7, 'its unused token is back');
});

t.test('a turn\'s background commands (soon + claims) go out in one write, and each is answered', async (t) => {
  const r = await startRedis(t);
  if (!r) return;
  const a = await open(t, r.url);
  const b = await open(t, r.url);
  const told: string[] = [];
  a.store.onSuperseded((tok) => told.push(tok));
  const older = a.store.newToken();
  a.store.claim('doc', older);
  await waitFor('A\'s claim to be stored', () => r.cli('GET', 'gg-test:sup:k:doc').trim() === older);
  // Write system calls of this process (/proc/self/io), read before any assertion (each writes
  // a line of TAP): nothing else writes in these turns.
  const writes = (): number => Number(/syscw: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))![1]);
  const leases: Array<Promise<unknown> | undefined> = [];
  const w0 = writes();
  b.store.soon(() => { leases.push(b.store.lease('batched', 1, 100, 3, 0)); });
  b.store.soon(() => { leases.push(b.store.lease('batched2', 1, 100, 2, 0)); });
  b.store.claim('doc', b.store.newToken());
  const inTurn = writes() - w0;
  await waitFor('the turn\'s commands to be written', () => writes() - w0 > 0);
  await Promise.all(leases);
  const all = writes() - w0;
  t.equal(inTurn, 0, 'nothing is written in the caller\'s turn');
  t.equal(all, 1, 'two leases and a claim: one write');
  t.same(await Promise.all(leases), [{ granted: 3, tokens: 97 }, { granted: 2, tokens: 98 }], 'the leases are answered');
  await waitFor('the claim to reach the previous holder\'s process', () => told.length === 1);
  t.same(told, [older], 'A is told of its superseded claim');
});
