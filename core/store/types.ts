/**
 * The shared store plugins see as `ctx.store`: undefined when state is in process only (no
 * `store.redis` in the config), else a store shared by every worker and instance that points at
 * the same Redis. Every call is bounded: it answers within `store.redis.timeoutMs` or says it
 * could not (`undefined`), and the caller then decides in process (fail open). See
 * core/store/redis.ts for the design and its cost.
 */

/** What a shared bucket answered: whether a token was taken, and the tokens left after it (may be < 0 after forced takes). */
export interface TakeResult { readonly taken: boolean; readonly tokens: number }

/** What a lease answered: tokens granted (now held by the caller), and the tokens left in the shared bucket after it. */
export interface LeaseResult { readonly granted: number; readonly tokens: number }

export interface SharedStore {
  /**
   * Lease up to `want` tokens of the shared token bucket `key` (refill `perMs` per ms, at most
   * `burst`): they are deducted from the bucket now, and this process uses them later, one per
   * request, without a call. `held`: tokens this process still holds of earlier leases of `key`
   * (the store counts them as its own until the next lease or `giveBack`; what it counted before
   * and is not in `held` was used). Tokens held by any process count as in the bucket: it refills
   * only up to `burst` minus them, so the fleet never allows more than one bucket would. A
   * process's held tokens lapse `leaseTtlMs` after its last lease of the key was sent (the store
   * then frees them: a process that died does not keep them). Answers as `take` does:
   * `undefined` (at once when down) means "decide in process".
   */
  lease(key: string, perMs: number, burst: number, want: number, held: number): Promise<LeaseResult | undefined> | undefined;
  /**
   * Give back `n` unused leased tokens of `key` (added to the bucket, which stays at most `burst`
   * less what other processes hold); this process then holds none of it. Fire and forget,
   * written at once: call it off the request path (an idle timer, close).
   */
  giveBack(key: string, perMs: number, burst: number, n: number): void;
  /** How long leased tokens may be used after their lease was sent (ms). */
  readonly leaseTtlMs: number;
  /**
   * Take one token from the shared token bucket `key` (refill `perMs` tokens per ms, at most
   * `burst`). With `force`, the token is taken even from an empty bucket (it goes into debt, at
   * most `-burst`): for a request already allowed on an estimate, so the shared count still holds
   * it. Returns a promise of the outcome, or `undefined` when the store cannot answer now or
   * within its budget: the caller falls back to its in-process bucket. The synchronous
   * `undefined` (store down) costs no wait at all.
   */
  take(key: string, perMs: number, burst: number, force?: boolean): Promise<TakeResult | undefined> | undefined;
  /**
   * Record that `token` (from `newToken`) now holds `key`. If a token of another process held it,
   * that process is told (its `onSuperseded` handlers run), wherever it runs; a previous token of
   * this process is not (decide that in process). Fire and forget. There is no release: the key
   * keeps the last token until the next claim or for 10 minutes, so a process may be told of a
   * token whose request already ended (ignore it: tokens are never reused).
   */
  claim(key: string, token: string): void;
  /**
   * Run `fn` shortly after this event-loop turn (a couple of ms: see `hurry`), when this turn's claims are written: the store commands
   * it issues (a `lease` that can wait a turn, e.g. a prefetch) go out in the same write as the
   * claims and each other, one write per turn instead of one per command. For calls no request
   * waits on; a request waiting for an answer should call at once.
   */
  soon(fn: () => void): void;
  /**
   * Write what `soon` and `claim` queued now (after this turn) rather than a moment later: a
   * request is waiting on it.
   */
  hurry(): void;
  /** How long the store keeps a key's last claim (ms): claim again before it lapses to stay its holder. */
  readonly claimTtlMs: number;
  /**
   * Changes each time the store comes (back) up: what was written before may be gone (Redis
   * restarted) or may never have arrived (written while down). Claims made in an earlier epoch
   * should be made again.
   */
  readonly epoch: number;
  /** A token unique in the fleet (this process's id and a counter). */
  newToken(): string;
  /** Run `fn` with each token of this process that a claim anywhere superseded. */
  onSuperseded(fn: (token: string) => void): void;
}

/** Where the gateway keeps its open store in the map that outlives reloads (`ctx.shared`'s map). */
export const STORE_KEY = 'core:store';
