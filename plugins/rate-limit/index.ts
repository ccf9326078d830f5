/**
 * rate-limit: a token bucket per subject, in process. Each request takes one token; a bucket
 * holds at most `burst` tokens and refills at `ratePerSecond`. An empty bucket answers
 * `GW_ERR_POLICY_RATE_LIMITED` (default 429) with `Retry-After` (whole seconds, at least 1).
 *
 * Buckets live in the gateway's shared store, by bucket set (default: the limit itself), so a
 * config reload keeps them; a set no step uses any more is freed. Memory is bounded:
 * a bucket that has been idle long enough to be full again is the same as no bucket, so a
 * periodic sweep (an unref'd timer, stopped when a reload retires the step) deletes those, and
 * at `maxKeys` the oldest bucket makes room for a new one.
 *
 * With a shared store (`store.redis`), the bucket is the store's: one limit across every worker
 * and instance.
 * - `shared: exact` (default): token leases (lease.ts). Each process leases small blocks of
 *   tokens (deducted in the store at once) and allows one request per held token without a
 *   store call; it leases the next block in the background before it runs out, so a request
 *   waits for the store (at most `store.redis.timeoutMs`) only when its process holds nothing
 *   (a subject's first request, or demand outrunning the prefetch). The store counts held tokens
 *   as in the bucket, so the fleet never allows more than the bucket. The price: a subject may be
 *   denied early, by what other processes hold of it (at most ceil(burst / 4) each, plus what
 *   they used since their last store call), until they give it back (after 1 s idle, or on
 *   close).
 * - `shared: fast`: each answer from the store tells this process how many tokens were left;
 *   below 1 → 429 at once, no store call; more than 1 + a quarter of `burst` left → allowed at
 *   once, the token taken in the store without waiting (forced: counted even if others emptied
 *   the bucket meanwhile, a debt paid by later denials, so the long-run rate stays exact); else
 *   the step waits for the store. Bursts are approximate: each process may allow on an estimate
 *   that others already spent.
 * When the store cannot answer (down, slow), this process's bucket decides as without a store
 * (fail open, counted by the store).
 */
import { performance } from 'node:perf_hooks';
import { compileFactPath, definePlugin, factKey, GatewayError } from '../../core/plugin-api.ts';
import type { FactReader, LocalReply, FromSchema, JsonSchema, TakeResult } from '../../core/plugin-api.ts';
import { leasing } from './lease.ts';
import type { Held } from './lease.ts';


/** One subject's bucket: tokens left at time `t` (ms, performance.now()). */
interface Bucket { tokens: number; t: number }
type Buckets = Map<string, Bucket>;
/**
 * What this process knows of a shared bucket: `tokens` left at `t` (performance.now()) per the
 * store's last answer (NaN before the first), and takes sent since that are not answered yet.
 */
interface Known { tokens: number; t: number; inflight: number }
/**
 * The buckets of one bucket set, and how many live steps use them (freed at zero). `known`
 * (`shared: fast`): shared-store key → what the store last said about that bucket. `shares`
 * (`shared: exact`): shared-store key → the tokens this process leased (lease.ts); `holding`: the
 * keys of those the store counts as holding some.
 */
interface BucketSet {
  readonly bySubject: Buckets; readonly byIp: Buckets; readonly known: Map<string, Known>;
  readonly shares: Map<string, Held>; readonly holding: Set<string>; users: number;
}

/** Cached replies for Retry-After 1..MAX_CACHED s (a limited client retries a lot: no allocation). */
const MAX_CACHED = 3600;

/**
 * - `key`: fact path of the subject (`claims.sub`, `request.headers.x-team`); falls back to `request.ip`.
 * - `ratePerSecond`: refill rate, tokens per second. `burst`: bucket size (requests allowed at once after idling).
 * - `status`: status of the reply (429). `maxKeys`: most buckets kept per bucket set (100000).
 * - `bucketSet`: name of the bucket set; steps with the same name share buckets. Default: the
 *   limit itself (`key`, `ratePerSecond`, `burst`), so editing anything else keeps the buckets across a reload.
 * - `shared`: with a shared store, `exact` (default: token leases, never over the bucket; a
 *   subject may be denied early while other processes hold its tokens) or `fast` (no wait while a
 *   quarter of the bucket is to spare; approximate bursts).
 */
const paramsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['ratePerSecond', 'burst'],
  properties: {
    key: { type: 'string', minLength: 1, maxLength: 256, default: 'claims.sub' },
    ratePerSecond: { type: 'number', exclusiveMinimum: 0, maximum: 1e6 },
    burst: { type: 'integer', minimum: 1, maximum: 1e6 },
    status: { type: 'integer', minimum: 400, maximum: 599, default: 429 },
    maxKeys: { type: 'integer', minimum: 1, maximum: 10_000_000, default: 100_000 },
    bucketSet: { type: 'string', minLength: 1, maxLength: 256 },
    shared: { enum: ['exact', 'fast'], default: 'exact' },
  },
} as const satisfies JsonSchema;

/** The params after validation (defaults applied), derived from the schema. */
export type RateLimitParams = FromSchema<typeof paramsSchema>;

export default definePlugin<RateLimitParams>({
  name: 'rate-limit',
  description: 'Token bucket per subject (a fact path, falling back to the client IP); 429 with Retry-After.',
  paramsSchema,
  create(params, ctx) {
    if (!params.key.includes('.')) throw ctx.error(`"${params.key}" names a whole fact root; name a field in it (e.g. claims.sub)`, 'key');
    let readKey: FactReader;
    try { readKey = compileFactPath(params.key); } catch (e) { throw ctx.error((e as Error).message, 'key'); }
    const { ratePerSecond: rate, burst, status, maxKeys } = params;
    const perMs = rate / 1000;
    // Bucket sets outlive reloads in the shared store; one that no live step uses any more is
    // freed when the last step using it is retired (a reload creates the new step first).
    const sets = ctx.shared('bucket-sets', () => new Map<string, BucketSet>());
    const setName = params.bucketSet ?? `${params.key} ${rate}/s burst ${burst}`;
    let set = sets.get(setName);
    if (set === undefined) sets.set(setName, (set = { bySubject: new Map(), byIp: new Map(), known: new Map(), shares: new Map(), holding: new Set(), users: 0 }));
    set.users++;
    const { bySubject, byIp, known, shares, holding } = set;
    const shared = ctx.store;
    const exact = shared !== undefined && params.shared === 'exact';

    const replies: LocalReply[] = [];
    const replyFor = (seconds: number): LocalReply => {
      const cached = seconds <= MAX_CACHED ? replies[seconds] : undefined;
      if (cached !== undefined) return cached;
      const e = new GatewayError('GW_ERR_POLICY_RATE_LIMITED', [seconds]);
      const reply: LocalReply = Object.freeze({
        status,
        body: Object.freeze({ error: Object.freeze({ code: e.code, message: e.message, retry_after: seconds }) }),
        headers: Object.freeze({ 'retry-after': String(seconds) }),
      }) as LocalReply;
      if (seconds <= MAX_CACHED) replies[seconds] = reply;
      return reply;
    };

    /** Delete buckets that have refilled completely (equivalent to having none). */
    const sweep = (buckets: Buckets, now: number): void => {
      for (const [k, b] of buckets) if (b.tokens + (now - b.t) * perMs >= burst) buckets.delete(k);
    };
    /** Make room for one more bucket: sweep, then drop the oldest if still full. */
    const makeRoom = (buckets: Buckets, now: number): void => {
      sweep(buckets, now);
      if (buckets.size >= maxKeys) buckets.delete(buckets.keys().next().value!);
    };

    /** This process's bucket for `k` decides (no store, or the store could not answer). */
    const local = (buckets: Buckets, k: string): LocalReply | undefined => {
      const now = performance.now();
      const b = buckets.get(k);
      if (b === undefined) {
        if (buckets.size >= maxKeys) makeRoom(buckets, now);
        buckets.set(k, { tokens: burst - 1, t: now });
        return undefined;
      }
      const tokens = b.tokens + (now - b.t) * perMs;
      b.t = now;
      if (tokens >= 1) {
        b.tokens = (tokens > burst ? burst : tokens) - 1;
        return undefined;
      }
      b.tokens = tokens;
      return replyFor(Math.max(1, Math.ceil((1 - tokens) / rate)));
    };

    // A full refill takes burst/rate seconds; sweeping more often than that finds little.
    const sweepMs = Math.min(60_000, Math.max(5_000, Math.ceil((burst / rate) * 1000)));
    const leases = exact ? leasing({ store: shared, rate, burst, maxKeys, shares, holding, replyFor, local }) : undefined;
    const timer = setInterval(function sweepBuckets() {
      const now = performance.now();
      sweep(bySubject, now);
      sweep(byIp, now);
      for (const [k, kn] of known) if (kn.inflight === 0 && !(kn.tokens + (now - kn.t) * perMs < burst)) known.delete(k);
      leases?.sweep(now);
    }, sweepMs);
    timer.unref();
    ctx.onClose(() => {
      clearInterval(timer);
      const last = --set.users === 0;
      // The last step of the set gives back what it holds (a reload keeps the set, and its tokens).
      leases?.close(last);
      if (last && sets.get(setName) === set) sets.delete(setName);
    });

    if (shared === undefined) {
      return {
        request: function rateLimit(ex) {
          const subject = factKey(readKey(ex.facts));
          return subject === undefined ? local(byIp, ex.facts.request.ip) : local(bySubject, subject);
        },
      };
    }

    const storePrefix = `${setName}\0`;
    if (leases !== undefined) {
      return {
        request: function rateLimitLeased(ex) {
          const subject = factKey(readKey(ex.facts));
          if (subject === undefined) return leases.decide(storePrefix + 'ip\0' + ex.facts.request.ip, byIp, ex.facts.request.ip);
          return leases.decide(storePrefix + 'sub\0' + subject, bySubject, subject);
        },
      };
    }
    // `shared: fast`: no wait while more than a quarter of the bucket is to spare.
    const headroom = Math.max(1, Math.ceil(burst / 4));
    /** Tokens in the shared bucket now, at most: the last answer, refilled, less our takes in flight. */
    const estimate = (kn: Known, now: number): number => {
      const v = kn.tokens + (now - kn.t) * perMs;
      return (v > burst ? burst : v) - kn.inflight;
    };
    const sent = (sk: string): void => {
      let kn = known.get(sk);
      if (kn === undefined) {
        if (known.size >= maxKeys) known.delete(known.keys().next().value!);
        known.set(sk, (kn = { tokens: NaN, t: 0, inflight: 0 }));
      }
      kn.inflight++;
    };
    const answered = (sk: string, r: TakeResult | undefined): void => {
      const kn = known.get(sk);
      if (kn === undefined) return;
      if (kn.inflight > 0) kn.inflight--;
      if (r !== undefined) { kn.tokens = r.tokens; kn.t = performance.now(); }
    };
    return {
      request: function rateLimitShared(ex) {
        const subject = factKey(readKey(ex.facts));
        const buckets = subject === undefined ? byIp : bySubject;
        const k = subject === undefined ? ex.facts.request.ip : subject;
        const sk = (subject === undefined ? storePrefix + 'ip\0' : storePrefix + 'sub\0') + k;
        const kn = known.get(sk);
        if (kn !== undefined) {
          const est = estimate(kn, performance.now());
          if (est < 1) return replyFor(Math.max(1, Math.ceil((1 - est) / rate)));
          if (est - 1 >= headroom) {
            const p = shared.take(sk, perMs, burst, true);
            if (p === undefined) return local(buckets, k);
            kn.inflight++;
            p.then((r) => answered(sk, r), () => answered(sk, undefined));
            return undefined;
          }
        }
        const p = shared.take(sk, perMs, burst);
        if (p === undefined) return local(buckets, k);
        sent(sk);
        return p.then((r) => {
          answered(sk, r);
          if (r === undefined) return local(buckets, k);
          return r.taken ? undefined : replyFor(Math.max(1, Math.ceil((1 - r.tokens) / rate)));
        });
      },
    };
  },
});
