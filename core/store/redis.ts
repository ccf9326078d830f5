/**
 * The shared store on Redis (ioredis). Design, per operation:
 *
 * - `lease` (rate-limit, `shared: exact`): one EVALSHA that refills the shared token bucket (on
 *   Redis's clock, so every process sees one bucket), grants up to `want` tokens (deducted) and
 *   answers the grant and the tokens left. The process then allows one request per held token
 *   without a call, and leases the next block in the background before it runs out
 *   (plugins/rate-limit/lease.ts): a request waits for Redis only when its process holds nothing.
 *   The bucket's hash records what each process holds ("p:<instance>" = count and when it lapses)
 *   and counts it as in the bucket: the bucket refills only up to burst less the held tokens, so
 *   bucket + held never exceeds burst and the fleet never allows more than one bucket would, even
 *   when tokens are held while the bucket refills. A lease reports what its process still holds;
 *   what it held before and no longer reports was used. Held tokens lapse `leaseTtlMs` after
 *   their last lease was sent (a process that died frees them then); the process stops using
 *   them by then, by its own clock, from the send time. `giveBack` (the same script, fire and
 *   forget, written at once: rate-limit calls it from an idle timer and on close) adds unused
 *   tokens back. Waiting calls wait at most `timeoutMs`; the command is written at once (no
 *   autopipelining: see below). `npm run bench -- --only store` compares TTFB with the
 *   in-process store; bench/store-cost.ts times the calls alone.
 * - `take` (rate-limit, `shared: fast`): the same bucket, one token per call: awaited near the
 *   limit, else taken with `force` without waiting (counted even if the bucket emptied meanwhile).
 *   Below one token it denies without a call.
 * - `claim` (supersede): one EVALSHA per key a process does not hold yet (plugins/supersede),
 *   never awaited (0 wait on the hot path), written after the turn that forwards the request. It swaps the key's holder and PUBLISHes the previous holder's token on that holder's
 *   own channel (`<prefix>sup:<instance id>`), so only the process holding the superseded
 *   request hears of it; Redis orders the claims, so no clock is compared. A previous holder in
 *   this same process is not told (its own table already cancelled it). Nothing is released when
 *   a request ends: the key keeps the last token until the next claim or its TTL (10 min). A
 *   token names one request and is never reused, so a stale one only points at a finished
 *   request, which its process no longer tracks: told of it, that process does nothing.
 *
 * Fail open: while the store is down (not connected, or a command overran `timeoutMs`), calls
 * answer `undefined` at once without touching Redis, the caller uses its in-process state, and
 * `ghostgate_store_fallback_total` counts it. "Overran" is decided only after the event loop has
 * read its sockets (`afterNextPoll`): when this process was blocked (a GC pause, a long turn) past
 * `timeoutMs`, the budget timer would fire before the poll phase reads an answer that is already
 * there; that is not Redis being slow, and the answer is used (test/store/redis-store.test.ts).
 * A probe (PING within the same budget: `timeoutMs` after a call overran, else every `retryMs`)
 * brings it back up by itself; a probe's PING that overran too is awaited, and its late answer
 * sends the next probe at once (a Redis slow for a moment is back as soon as it answers). Each
 * state change is logged once. The URL (it may carry a password) is never logged: messages name
 * the host and port only.
 *
 * Why one file over 250 lines: the budgeted call and the up/down state machine are one fail-open
 * contract, used by every operation. The Lua scripts are in redis-scripts.ts.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { Counter, Gauge, Histogram } from 'prom-client';
import type { Registry } from 'prom-client';
import type { Logger } from '../types.ts';
import type { LeaseResult, SharedStore, TakeResult } from './types.ts';
import { CLAIM, LEASE, TAKE } from './redis-scripts.ts';

export interface RedisStoreOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://` (TLS). A secret: never printed. */
  url: string;
  /** Longest the hot path waits on Redis (ms). */
  timeoutMs: number;
  /** While down: how often to reconnect and probe (ms). */
  retryMs: number;
  /** Prefix of every key and channel (several fleets can share one Redis). */
  keyPrefix: string;
  /** How long leased tokens may be used after the lease was sent (ms; default LEASE_TTL_MS). */
  leaseTtlMs?: number;
}

/**
 * How long a supersede key keeps its last claim. A request in flight longer than this is no
 * longer cancelled from other processes (its own process still does it).
 */
const CLAIM_TTL_MS = 10 * 60_000;

/**
 * How long after a turn its background commands (claims, prefetched leases) are written (ms).
 * Not at once: the turn that queued them has just forwarded a request, and writing to Redis then
 * (a write that wakes redis-server, then its answer to read) competes for the CPU with the model
 * server receiving that request, on a host they share, and delays the next request arriving
 * here. A request waiting on one of them calls `hurry`.
 */
const BACKGROUND_DELAY_MS = 2;

/** Default of RedisStoreOptions.leaseTtlMs. */
export const LEASE_TTL_MS = 10_000;

type Op = 'take' | 'lease' | 'giveback' | 'claim';
type Reason = 'down' | 'timeout' | 'error';

interface Scripted {
  ggTake(key: string, perMs: number, burst: number, force: '0' | '1', ttlMs: number): Promise<[number, number]>;
  ggLease(key: string, perMs: number, burst: number, me: string, want: number, keep: number, give: number, ttlMs: number): Promise<[number, number]>;
  ggClaim(key: string, token: string, channelPrefix: string, ttlMs: number): Promise<number>;
}

const noop = (): void => {};

/**
 * Run `fn` once the event loop has polled its sockets after now, so that what arrived while this
 * process was blocked (a GC pause, a long turn) has been read: used before deciding that Redis did
 * not answer in time. One immediate does it from where this is called, the timers phase (budget
 * timers) and the check phase (claims are written there): it runs after the next poll phase.
 * (From the poll phase it would not: it would run before the next poll.)
 */
const afterNextPoll = (fn: () => void): void => { setImmediate(fn); };
const toTakeResult = (a: [number, number]): TakeResult => ({ taken: a[0] === 1, tokens: a[1] / 1000 });
const toLeaseResult = (a: [number, number]): LeaseResult => ({ granted: a[0], tokens: a[1] / 1000 });

export class RedisStore implements SharedStore {
  readonly instanceId = randomBytes(8).toString('hex');
  readonly leaseTtlMs: number;
  /** This process's field in bucket hashes (who holds leased tokens). */
  readonly #me = `p:${this.instanceId}`;
  readonly #o: RedisStoreOptions;
  readonly #log: Logger;
  readonly #client: Redis & Scripted;
  readonly #sub: Redis;
  readonly #where: string;
  readonly #fallbacks: Counter<'op' | 'reason'>;
  readonly #upGauge: Gauge;
  readonly #late: Histogram<'op'>;
  readonly #handlers: Array<(token: string) => void> = [];
  #up = false;
  /** Whether a down state was already logged (the first connect is not a recovery). */
  #wasUp = false;
  #probe: NodeJS.Timeout | undefined;
  #probing = false;
  /** A probe's PING that overran the budget is still unanswered (at most one is outstanding). */
  #pingOutstanding = false;
  readonly #probes: Counter<'result'>;
  #closed = false;
  #seq = 0;
  /** Send times (performance.now) of unanswered fire-and-forget calls, oldest at #pendingHead. */
  #pending: number[] = [];
  #pendingHead = 0;
  /** Fire-and-forget calls answered so far (identifies the oldest unanswered one across compactions). */
  #answeredCount = 0;
  /** A check of an overdue fire-and-forget call is scheduled (setImmediate). */
  #overdueCheck = false;
  #firstUp: Array<() => void> = [];
  /** Claims to write after this turn: key, token, key, token… */
  #claims: string[] = [];
  /** Callbacks to run after this turn, before the claims are written (`soon`). */
  #soon: Array<() => void> = [];
  /** #flush is scheduled for this turn's claims and `soon` callbacks (its timer, or an immediate after `hurry`). */
  #flushScheduled = false;
  #flushTimer: NodeJS.Timeout | undefined;

  constructor(o: RedisStoreOptions, log: Logger, registry: Registry) {
    this.#o = o;
    this.leaseTtlMs = o.leaseTtlMs ?? LEASE_TTL_MS;
    this.#log = log;
    const u = new URL(o.url);
    this.#where = `${u.protocol}//${u.hostname}:${u.port || 6379}`;
    this.#fallbacks = (registry.getSingleMetric('ghostgate_store_fallback_total') as Counter<'op' | 'reason'> | undefined) ?? new Counter({
      name: 'ghostgate_store_fallback_total',
      help: 'Shared-store operations answered in process instead (fail open): op lease, giveback (rate-limit, shared: exact), take (rate-limit, shared: fast), claim (supersede); reason down (not connected or overran timeoutMs earlier), timeout (this call overran store.redis.timeoutMs), error.',
      labelNames: ['op', 'reason'], registers: [registry],
    });
    this.#upGauge = (registry.getSingleMetric('ghostgate_store_up') as Gauge | undefined)
      // With --workers, /metrics shows the lowest worker's value (1 only if every worker is up).
      ?? new Gauge({ name: 'ghostgate_store_up', help: '1 while the shared store (Redis) answers within its budget, else 0 (in-process fallback); with workers, the lowest.', registers: [registry], aggregator: 'min' });
    this.#upGauge.set(0);
    this.#late = (registry.getSingleMetric('ghostgate_store_late_answer_seconds') as Histogram<'op'> | undefined) ?? new Histogram({
      name: 'ghostgate_store_late_answer_seconds',
      help: 'For calls given up on after store.redis.timeoutMs (they fell back): the time from sending to the answer that came after all. Shows how much budget would have sufficed.',
      labelNames: ['op'], buckets: [0.005, 0.0075, 0.01, 0.015, 0.02, 0.05, 0.1, 0.5, 1, 5], registers: [registry],
    });
    this.#probes = (registry.getSingleMetric('ghostgate_store_probes_total') as Counter<'result'> | undefined) ?? new Counter({
      name: 'ghostgate_store_probes_total',
      help: 'PINGs sent while the shared store was down, by result: ok (up again), timeout (no answer within store.redis.timeoutMs; when it answers later, the next probe goes at once), error.',
      labelNames: ['result'], registers: [registry],
    });
    const common = {
      // No autopipelining: it holds each command until setImmediate (one more event-loop turn
      // before the write, milliseconds under load) to batch it; a request waiting on `take`
      // would wait for that turn too. Each command is written at once instead.
      enableAutoPipelining: false,
      // Never queue while disconnected, never replay after a reconnect: the caller has moved on.
      // maxRetriesPerRequest 0 also makes ioredis reject what was in flight on a dropped
      // connection at its first reconnect; with autoResendUnfulfilledCommands off it would
      // otherwise never settle it (redis/ioredis#2193), and an unanswered claim or probe PING
      // would keep the store down (test/store/redis-store.test.ts, "in flight when the connection drops").
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      connectTimeout: Math.max(1000, o.timeoutMs * 10),
      retryStrategy: () => o.retryMs,
      lazyConnect: false,
    };
    this.#client = new Redis(o.url, { ...common, connectionName: `ghostgate-${this.instanceId}` }) as Redis & Scripted;
    this.#client.defineCommand('ggTake', { numberOfKeys: 1, lua: TAKE });
    this.#client.defineCommand('ggLease', { numberOfKeys: 1, lua: LEASE });
    this.#client.defineCommand('ggClaim', { numberOfKeys: 1, lua: CLAIM });
    this.#client.on('ready', () => this.#probeNow());
    this.#client.on('close', () => this.#down('connection closed'));
    this.#client.on('error', (e: Error) => this.#down(e.message));
    // Pub/sub needs its own connection. It subscribes on every 'ready', not by ioredis's
    // autoResubscribe: that resubscribes only to channels whose SUBSCRIBE was answered, so a
    // connection that dropped again before the answer came back unsubscribed for good (this
    // process deaf to supersedes), and it let that SUBSCRIBE's rejection go unhandled
    // (test/store/redis-resubscribe.test.ts).
    this.#sub = new Redis(o.url, { ...common, autoResubscribe: false, connectionName: `ghostgate-${this.instanceId}-sub` });
    this.#sub.on('error', noop);
    this.#sub.on('message', (_channel: string, token: string) => {
      for (const h of this.#handlers) { try { h(token); } catch { /* a handler must not break the others */ } }
    });
    const channel = `${o.keyPrefix}sup:${this.instanceId}`;
    this.#sub.on('ready', () => { this.#sub.subscribe(channel).catch(noop); });
  }

  /** Resolves once the store is up, or after `ms` (the gateway starts either way: fail open). */
  whenUp(ms: number): Promise<boolean> {
    if (this.#up) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      timer.unref();
      this.#firstUp.push(() => { clearTimeout(timer); resolve(true); });
    });
  }

  get up(): boolean { return this.#up; }

  readonly claimTtlMs = CLAIM_TTL_MS;
  #epoch = 0;
  get epoch(): number { return this.#epoch; }

  take(key: string, perMs: number, burst: number, force = false): Promise<TakeResult | undefined> | undefined {
    if (!this.#up) { this.#fallbacks.labels('take', 'down').inc(); return undefined; }
    return this.#budget(this.#client.ggTake(this.#o.keyPrefix + 'rl:' + key, perMs, burst, force ? '1' : '0', this.leaseTtlMs), 'take', toTakeResult);
  }

  lease(key: string, perMs: number, burst: number, want: number, held: number): Promise<LeaseResult | undefined> | undefined {
    if (!this.#up) { this.#fallbacks.labels('lease', 'down').inc(); return undefined; }
    return this.#budget(this.#client.ggLease(this.#o.keyPrefix + 'rl:' + key, perMs, burst, this.#me, want, held, 0, this.leaseTtlMs), 'lease', toLeaseResult);
  }

  /** Written at once (callers call it off the request path), not awaited: timed as claims are. */
  giveBack(key: string, perMs: number, burst: number, n: number): void {
    if (this.#closed || !this.#sendable('giveback')) return;
    this.#sent(this.#client.ggLease(this.#o.keyPrefix + 'rl:' + key, perMs, burst, this.#me, 0, 0, n, this.leaseTtlMs), 'giveback');
  }

  /**
   * Written after this event-loop turn (BACKGROUND_DELAY_MS later), not at once: supersede claims in the
   * `forwarding` phase, just before the request goes upstream, and a call that writes to Redis
   * stalls the turn for tens of µs (the write wakes redis-server; bench/store-cost.ts). Node
   * sends the upstream HTTP/2 frames from a native immediate, which runs before JavaScript
   * immediates, so the request leaves first (bench/store-write-order.ts shows the syscalls).
   * Written together with this turn's other deferred commands (`soon`): see #flush.
   */
  claim(key: string, token: string): void {
    this.#schedule();
    this.#claims.push(this.#o.keyPrefix + 'sup:k:' + key, token);
  }

  soon(fn: () => void): void {
    this.#schedule();
    this.#soon.push(fn);
  }

  #schedule(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    this.#flushTimer = setTimeout(this.#flush, BACKGROUND_DELAY_MS);
  }

  hurry(): void {
    if (this.#flushTimer === undefined) return;
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    setImmediate(this.#flush);
  }

  /**
   * This turn's deferred commands (`soon` callbacks, e.g. rate-limit's prefetched leases, then
   * claims) go out in ONE write: the socket is corked while they are issued, so the kernel sees
   * one writev and redis-server is woken once, not once per command (a write to a loopback
   * socket costs ~25 µs of this process's CPU, most of it waking the reader:
   * bench/store-cost.ts, "batch"). Their answers then come back in one read.
   */
  readonly #flush = (): void => {
    this.#flushScheduled = false;
    this.#flushTimer = undefined;
    const soon = this.#soon;
    const q = this.#claims;
    this.#soon = [];
    this.#claims = [];
    const stream = this.#up && !this.#closed ? this.#client.stream : undefined;
    stream?.cork();
    try {
      for (const fn of soon) { try { fn(); } catch { /* one caller's failure must not drop the others' commands */ } }
      if (this.#closed) return;
      for (let i = 0; i < q.length; i += 2) {
        if (!this.#sendable('claim')) continue;
        this.#sent(this.#client.ggClaim(q[i]!, q[i + 1]!, this.#o.keyPrefix + 'sup:', CLAIM_TTL_MS), 'claim');
      }
    } finally {
      stream?.uncork();
    }
  };

  /**
   * Fire-and-forget calls get no timer each: their send times queue in order (one connection
   * answers in order), and a call that finds the oldest unanswered one past `timeoutMs` marks the
   * store down, as an awaited call's timer would — but only after the next poll phase: when our
   * own loop was blocked (a GC pause, a long turn), the answer may be waiting in the socket,
   * unread, and that is not Redis being slow. This call is sent either way. Called from the check
   * phase (#flush) or the timers phase (give-backs from rate-limit's idle timer), where
   * afterNextPoll's one immediate suffices (a give-back at close may come from another phase: its
   * check could then decide before reading; the store closes right after anyway).
   */
  #sendable(op: Op): boolean {
    if (!this.#up) { this.#fallbacks.labels(op, 'down').inc(); return false; }
    const sentAt = this.#pending[this.#pendingHead];
    if (sentAt !== undefined && !this.#overdueCheck && performance.now() - sentAt > this.#o.timeoutMs) {
      this.#overdueCheck = true;
      const oldest = this.#answeredCount;
      afterNextPoll(() => {
        this.#overdueCheck = false;
        if (this.#answeredCount !== oldest || !this.#up) return; // answered meanwhile, or already down
        this.#fallbacks.labels(op, 'timeout').inc();
        this.#down(`no answer within store.redis.timeoutMs (${this.#o.timeoutMs} ms)`, true);
      });
    }
    return true;
  }

  #sent(p: Promise<unknown>, op: Op): void {
    this.#pending.push(performance.now());
    p.then(this.#answered, () => { this.#answered(); this.#fallbacks.labels(op, 'error').inc(); });
  }

  readonly #answered = (): void => {
    this.#answeredCount++;
    if (++this.#pendingHead >= 1024 && this.#pendingHead * 2 >= this.#pending.length) {
      this.#pending.splice(0, this.#pendingHead);
      this.#pendingHead = 0;
    }
  };

  newToken(): string { return `${this.instanceId} ${++this.#seq}`; }

  onSuperseded(fn: (token: string) => void): void { this.#handlers.push(fn); }

  /**
   * Fire-and-forget calls already written (give-backs of a closing rate-limit) are answered
   * first, within timeoutMs (a PING after them is answered after them); then the connections drop.
   */
  async close(): Promise<void> {
    if (this.#up && !this.#closed && this.#pendingHead < this.#pending.length) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.#client.ping().catch(noop), new Promise((r) => { timer = setTimeout(r, this.#o.timeoutMs); })]);
      clearTimeout(timer);
    }
    this.#closed = true;
    if (this.#probe) clearTimeout(this.#probe);
    this.#up = false;
    this.#client.disconnect();
    this.#sub.disconnect();
  }

  /** `p`'s answer if it comes within the budget, else undefined (and the store is down until a probe passes). */
  #budget<T, U>(p: Promise<T>, op: Op, map: (v: T) => U): Promise<U | undefined> {
    const sentAt = performance.now();
    return new Promise<U | undefined>((resolve) => {
      let settled = false;
      // At the deadline, first read what already arrived (afterNextPoll): an answer that waited
      // behind our own busy event loop is not Redis being slow. And Node reckons timers in whole
      // milliseconds, so one can fire up to 1 ms short of timeoutMs: wait out what is left.
      const expire = (): void => {
        if (settled) return;
        const left = this.#o.timeoutMs - (performance.now() - sentAt);
        if (left > 0) { timer = setTimeout(afterNextPoll, Math.ceil(left), expire); return; }
        settled = true;
        this.#fallbacks.labels(op, 'timeout').inc();
        this.#down(`no answer within store.redis.timeoutMs (${this.#o.timeoutMs} ms)`, true);
        resolve(undefined);
        p.then(() => this.#late.labels(op).observe((performance.now() - sentAt) / 1000), noop);
      };
      let timer = setTimeout(afterNextPoll, this.#o.timeoutMs, expire);
      p.then((v) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(map(v));
      }, () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#fallbacks.labels(op, 'error').inc();
        resolve(undefined);
      });
    });
  }

  /** `slow`: a call overran its budget (the connection is fine): probe again soon, not after retryMs. */
  #down(why: string, slow = false): void {
    if (this.#closed) return;
    if (this.#up) {
      this.#up = false;
      this.#upGauge.set(0);
      this.#log.warn({ store: this.#where, reason: why }, 'shared store (Redis) down: rate-limit and supersede use in-process state until it answers again');
    } else if (!this.#wasUp && !this.#loggedInitialDown) {
      this.#loggedInitialDown = true;
      this.#log.warn({ store: this.#where, reason: why }, 'shared store (Redis) not reachable yet: rate-limit and supersede use in-process state until it answers');
    }
    this.#scheduleProbe(slow ? this.#o.timeoutMs : this.#o.retryMs);
  }

  #loggedInitialDown = false;

  #scheduleProbe(ms = this.#o.retryMs): void {
    if (this.#closed || this.#probe) return;
    this.#probe = setTimeout(() => { this.#probe = undefined; this.#probeNow(); }, ms);
    this.#probe.unref();
  }

  /**
   * PING within the budget: up if it answers. A PING that overran it is not abandoned: Redis that
   * was slow for a moment (paused, swapping, not given a core) answers it later, and then the next
   * probe goes at once rather than after `retryMs` (every call meanwhile falls back). Until then no
   * other PING is sent (a hung Redis does not collect one per probe); the `retryMs` timer still
   * probes, and a dropped connection rejects the PING, so the store never waits on it forever.
   */
  #probeNow(): void {
    if (this.#closed || this.#up || this.#probing) return;
    if (this.#client.status !== 'ready') { this.#scheduleProbe(); return; }
    if (this.#pingOutstanding) { this.#scheduleProbe(); return; }
    this.#probing = true;
    this.#pingOutstanding = true;
    const sentAt = performance.now();
    const expire = (): void => { // as in #budget
      const left = this.#o.timeoutMs - (performance.now() - sentAt);
      if (left > 0) timer = setTimeout(afterNextPoll, Math.ceil(left), expire); else done('timeout');
    };
    let timer = setTimeout(afterNextPoll, this.#o.timeoutMs, expire);
    const done = (result: 'ok' | 'timeout' | 'error'): void => {
      if (!this.#probing) return;
      this.#probing = false;
      clearTimeout(timer);
      this.#probes.labels(result).inc();
      if (result === 'ok') this.#setUp(); else this.#scheduleProbe();
    };
    const answered = (ok: boolean): void => {
      this.#pingOutstanding = false;
      if (this.#probing) { done(ok ? 'ok' : 'error'); return; }
      // The answer to a PING given up on: Redis answers again, so probe again now.
      if (ok && !this.#up && !this.#closed) {
        if (this.#probe) { clearTimeout(this.#probe); this.#probe = undefined; }
        this.#probeNow();
      }
    };
    this.#client.ping().then(() => answered(true), () => answered(false));
  }

  #setUp(): void {
    if (this.#closed || this.#up) return;
    this.#up = true;
    this.#epoch++;
    this.#upGauge.set(1);
    this.#log.info({ store: this.#where }, this.#wasUp ? 'shared store (Redis) up again: rate-limit and supersede are shared' : 'shared store (Redis) connected: rate-limit and supersede are shared');
    this.#wasUp = true;
    this.#loggedInitialDown = true;
    const waiters = this.#firstUp;
    this.#firstUp = [];
    for (const w of waiters) w();
  }
}
