/**
 * rate-limit with a shared store, `shared: exact` (the default): token leases. The shared bucket
 * lives in the store; this process leases tokens from it in small blocks and allows one request
 * per held token without a store call. A token is deducted in the store when leased, so the
 * fleet never allows more than the bucket (and the store counts held tokens as in the bucket: it
 * never refills past burst less what processes hold).
 *
 * - Held ≥ 1: allowed at once, no wait. When held drops below half the lease size, the next
 *   lease is sent in the background (after the turn, as supersede's claims are), so a
 *   subject's steady traffic never waits.
 * - Held < 1: the request waits for the lease in flight, or sends one (one round trip: the first
 *   request of a subject, or demand outrunning the prefetch). A lease that leaves this request
 *   nothing → 429 with Retry-After from the tokens the store says are left; more left (others in
 *   this process took the grant) → lease again.
 * - Below one token left per the store's last answer (refilled), 429 at once without a call, for
 *   idleMs after that answer (other processes may give tokens back meanwhile; then ask again).
 * - Lease size starts at 1 and is at most ceil(burst / 4): it doubles when a lease follows the
 *   previous one within growMs or a request found nothing held while a lease was in flight, else
 *   fits about targetMs of the subject's recent rate (nextSize), and halves at each give-back.
 * - Given back (a timer, never on the request path): what a key holds once it has been idle for
 *   idleMs, or once its tokens are half-way to lapsing (the store's lease TTL); everything when
 *   the last step using the bucket set closes. Until then, other processes may deny a subject
 *   early, by at most what this process holds.
 * - The store down or slow: the in-process bucket decides (fail open); held tokens are still used
 *   (they were deducted in the store).
 */
import { performance } from 'node:perf_hooks';
import type { LeaseResult, LocalReply, SharedStore } from '../../core/plugin-api.ts';

/**
 * Timings (ms), read when used (tests may change them):
 * - `idleMs`: a key idle this long gives its held tokens back; a denial from the last answer is
 *   trusted this long.
 * - `growMs`: a lease sent within this of the previous one (of the key) doubles the size.
 * - `targetMs`: otherwise a lease is sized to last about this long (nextSize).
 * - `tickMs`: how often the give-back timer looks at keys holding tokens (read at create).
 */
export const LEASE_TIMING = { idleMs: 1000, growMs: 100, tickMs: 250, targetMs: 500 };

/**
 * The next lease size of a key: `size` now, `used` tokens used since the previous lease was sent
 * `sinceMs` ago, `outran`: a request found nothing held while a lease was in flight.
 * - Outran, or the previous lease used up within `growMs`: double (demand outruns the block).
 * - Else enough for about `targetMs` at the rate the previous block was used, moving at most
 *   one doubling or halving per lease. A steady subject then leases every `targetMs` or so, not
 *   on every request (a typing user at 4 requests a second: blocks of 2, one lease per two
 *   requests), and one idle for longer than `targetMs` per token halves, down to 1.
 * Always 1 … cap.
 */
export function nextSize(size: number, cap: number, outran: boolean, used: number, sinceMs: number): number {
  if (outran || sinceMs < LEASE_TIMING.growMs) return Math.min(cap, size * 2);
  const fit = Math.ceil((Math.max(0, used) * LEASE_TIMING.targetMs) / sinceMs);
  return Math.max(1, size >> 1, Math.min(cap, size * 2, fit));
}

/** This process's share of one shared bucket. */
export interface Held {
  /** Leased tokens not used yet: each allows one request without a store call. */
  held: number;
  /** What the store counts as this process's (held at the last lease + granted): cleared by a give-back. */
  owed: number;
  /** Held tokens may be used until then (performance.now(): the last lease's send time + lease TTL). */
  until: number;
  /** Tokens left in the shared bucket at `t` (performance.now()) per the last answer (NaN before). */
  tokens: number;
  t: number;
  /** The lease in flight (its answer, undefined if it failed), settled after this record is updated. */
  lease: Promise<LeaseResult | undefined> | undefined;
  /** Requests waiting on `lease`. */
  waiting: number;
  /** Tokens asked for at once when held runs low (adapts: 1 … cap). */
  size: number;
  /** A request found nothing held while `lease` was in flight: the next lease doubles `size`. */
  outran: boolean;
  /** When the last lease was sent (performance.now()). */
  sent: number;
  /** Last request (performance.now()). */
  last: number;
}

export interface LeaseOptions<B> {
  store: SharedStore;
  rate: number;
  burst: number;
  maxKeys: number;
  /** Shared-store key → this process's share; outlives reloads (the bucket set's). */
  shares: Map<string, Held>;
  /** Keys whose `owed` > 0: what the give-back timer looks at. */
  holding: Set<string>;
  replyFor: (seconds: number) => LocalReply;
  /** This process's bucket `k` in `buckets` decides (the store could not answer). */
  local: (buckets: B, k: string) => LocalReply | undefined;
}

/** The decision for one request of shared-store key `sk`, and the timer that gives tokens back. */
export function leasing<B>(o: LeaseOptions<B>) {
  const { store, rate, burst, maxKeys, shares, holding, replyFor, local } = o;
  const perMs = rate / 1000;
  const cap = Math.max(1, Math.ceil(burst / 4));
  const ttl = store.leaseTtlMs;
  const retryAfter = (tokens: number): LocalReply => replyFor(Math.max(1, Math.ceil((1 - tokens) / rate)));
  /** Tokens in the shared bucket now per the last answer, refilled. */
  const estimate = (h: Held, now: number): number => {
    const v = h.tokens + (now - h.t) * perMs;
    return v > burst ? burst : v;
  };

  const giveBack = (sk: string, h: Held): void => {
    holding.delete(sk);
    const n = h.held;
    h.held = 0;
    h.owed = 0;
    h.size = Math.max(1, h.size >> 1);
    store.giveBack(sk, perMs, burst, n);
  };

  /**
   * Send a lease for `h` (now, or after this turn), leaving `h.lease` set. It asks for enough to
   * hold `size` again, plus one per waiting request (`self`: the caller, about to wait). False:
   * the store is down (answered synchronously).
   */
  const send = (sk: string, h: Held, later: boolean, self: 0 | 1): boolean => {
    const ask = (): Promise<LeaseResult | undefined> | undefined => {
      const sentAt = performance.now();
      // Leases used up quickly, or too slowly to keep up: ask for more; slowly: for fewer.
      h.size = nextSize(h.size, cap, h.outran, h.owed - h.held, sentAt - h.sent);
      h.outran = false;
      h.sent = sentAt;
      const keep = h.held;
      const want = Math.max(1, h.size - keep + self + h.waiting);
      const p = store.lease(sk, perMs, burst, want, keep);
      return p?.then((r) => {
        h.lease = undefined;
        if (r === undefined) {
          // It may have been applied: keep + want is what the store may count as ours.
          h.owed = Math.max(h.owed, keep + want);
        } else {
          h.held += r.granted;
          h.owed = keep + r.granted;
          h.until = sentAt + ttl;
          h.tokens = r.tokens;
          h.t = performance.now();
        }
        if (h.owed > 0) holding.add(sk);
        return r;
      });
    };
    if (!later) {
      const p = ask();
      if (p === undefined) return false;
      h.lease = p;
      return true;
    }
    // After this turn, in the same write as this turn's other store commands (its claims).
    h.lease = new Promise<LeaseResult | undefined>((resolve) => {
      store.soon(() => {
        let p: Promise<LeaseResult | undefined> | undefined;
        try { p = ask(); } catch { p = undefined; }
        if (p === undefined) { h.lease = undefined; resolve(undefined); } else p.then(resolve);
      });
    });
    return true;
  };

  /** Take a held token if there is one, and prefetch when held runs low. */
  const takeHeld = (sk: string, h: Held, now: number): boolean => {
    if (h.held < 1 || now >= h.until) return false;
    h.held--;
    if (h.lease === undefined && h.held < Math.ceil(h.size / 2) && estimate(h, now) >= 1) send(sk, h, true, 0);
    return true;
  };

  const wait = (sk: string, h: Held, buckets: B, k: string): Promise<LocalReply | undefined> => {
    h.waiting++;
    return h.lease!.then((r) => {
      h.waiting--;
      if (r === undefined) return local(buckets, k);
      const now = performance.now();
      if (takeHeld(sk, h, now)) return undefined;
      if (r.tokens < 1) return retryAfter(estimate(h, now));
      // What was granted went to requests ahead of this one, and the bucket has more: ask again.
      if (h.lease === undefined && !send(sk, h, false, 1)) return local(buckets, k);
      return wait(sk, h, buckets, k);
    });
  };

  /** Request of key `sk` (subject `k` in `buckets`, for the in-process fallback). */
  const decide = (sk: string, buckets: B, k: string): LocalReply | undefined | Promise<LocalReply | undefined> => {
    const now = performance.now();
    let h = shares.get(sk);
    if (h === undefined) {
      if (shares.size >= maxKeys) evict(now);
      shares.set(sk, (h = { held: 0, owed: 0, until: 0, tokens: NaN, t: 0, lease: undefined, waiting: 0, size: 1, outran: false, sent: -Infinity, last: now }));
    }
    h.last = now;
    if (takeHeld(sk, h, now)) return undefined;
    if (h.lease !== undefined) {
      h.outran = true;
      store.hurry(); // a prefetch may still be queued: this request waits on it
    }
    else {
      const est = estimate(h, now);
      if (est < 1 && now - h.t < LEASE_TIMING.idleMs) return retryAfter(est);
      if (!send(sk, h, false, 1)) return local(buckets, k);
    }
    return wait(sk, h, buckets, k);
  };

  /** Make room for one more key: forget the oldest that holds nothing (else the oldest, given back). */
  const evict = (now: number): void => {
    sweep(now);
    if (shares.size < maxKeys) return;
    const [sk, h] = shares.entries().next().value!;
    if (h.owed > 0) giveBack(sk, h);
    shares.delete(sk);
  };

  /** Forget keys that hold nothing, wait for nothing, and whose bucket would be full again. */
  const sweep = (now: number): void => {
    for (const [sk, h] of shares) {
      if (h.owed === 0 && h.lease === undefined && !(estimate(h, now) < burst)) shares.delete(sk);
    }
  };

  const timer = setInterval(function giveBackIdle() {
    const now = performance.now();
    for (const sk of holding) {
      const h = shares.get(sk);
      if (h === undefined) { holding.delete(sk); continue; }
      if (h.lease !== undefined || h.waiting > 0) continue;
      if (now - h.last >= LEASE_TIMING.idleMs || now >= h.until - ttl / 2) giveBack(sk, h);
    }
  }, LEASE_TIMING.tickMs);
  timer.unref();

  return {
    decide,
    sweep,
    /** Stop the timer; with `all`, give back everything held (the bucket set is freed). */
    close(all: boolean): void {
      clearInterval(timer);
      if (!all) return;
      for (const sk of holding) { const h = shares.get(sk); if (h !== undefined) giveBack(sk, h); }
      holding.clear();
    },
  };
}
