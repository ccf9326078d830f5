/**
 * Verified tokens, keyed by the token string, kept until they expire. A bounded Map in insertion
 * order: when full, the oldest entries go first (tokens are issued with one lifetime, so the
 * oldest are also the nearest to expiry). Hits are not reordered: a hit is one Map lookup.
 * An entry proves only the signature and fixed claims; expiry and revocation are re-checked on
 * every hit by the verifier.
 */

export interface CachedToken {
  /** Deep-frozen verified claims (shared by every request carrying this token). */
  readonly claims: Readonly<Record<string, unknown>>;
  /** `exp`, seconds since the epoch. */
  readonly exp: number;
  readonly sub: string;
  readonly jti: string | undefined;
}

export class TokenCache {
  readonly maxEntries: number;
  readonly #map = new Map<string, CachedToken>();

  constructor(maxEntries: number) {
    this.maxEntries = maxEntries;
  }

  get size(): number { return this.#map.size; }

  get(token: string): CachedToken | undefined {
    return this.#map.get(token);
  }

  delete(token: string): void {
    this.#map.delete(token);
  }

  set(token: string, entry: CachedToken, nowSec: number): void {
    if (this.maxEntries === 0) return;
    if (this.#map.size >= this.maxEntries) this.#evict(nowSec);
    this.#map.set(token, entry);
  }

  clear(): void { this.#map.clear(); }

  /** Drop expired entries from the old end, then at least one (the oldest) to make room. */
  #evict(nowSec: number): void {
    let dropped = 0;
    for (const [k, v] of this.#map) {
      if (dropped > 0 && v.exp > nowSec) break;
      this.#map.delete(k);
      dropped++;
      if (dropped >= 1024) break;
    }
  }
}
