/**
 * Sticky weighted choice, shared by `traffic-split` and `ab-test` (and `mirror`'s sampling).
 *
 * A user must stay on one deployment / one experiment arm for as long as the config allows, and
 * a reload that changes weights must move only the users it has to. We use **weighted rendezvous
 * hashing** (highest random weight, "HRW"): for a key and each item `i`, draw a uniform
 * `u_i ∈ (0,1)` from a hash of (key, item id) and pick the item with the highest
 * `weight_i / -ln(u_i)`. Item `i` wins with probability `weight_i / Σ weight`, and:
 *
 * - changing item A's weight only moves keys between A and the others (every other pair keeps
 *   its order), so 90/10 → 80/20 moves ≈10% of keys, all from A to B, which is the minimum;
 * - adding an item moves only its own share; removing one moves only the keys it had;
 * - the order of items in the config does not matter (ids, not positions, are hashed).
 *
 * Cumulative ranges over [0,1) would be cheaper, but reordering targets or changing two weights
 * at once (50/50/0 → 0/50/50) can move far more keys than needed; HRW never does. The cost is
 * one 32-bit mix and one `Math.log` per item, with no allocation (items are a handful).
 *
 * The hash is part of the contract: changing it reassigns every user. It is
 *   keyHash  = FNV-1a 32 over the UTF-8 bytes of `seed + "\0" + key`
 *   itemSalt = FNV-1a 32 over the UTF-8 bytes of `seed + "\0" + itemId`
 *   u_i      = (murmur3_32(keyHash as 4 little-endian bytes, seed = itemSalt) + 0.5) / 2^32
 * so an analytics job can recompute assignments elsewhere. `test/core/sticky-hash.test.ts`
 * pins known values.
 */

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
const TWO_32 = 4294967296;

/** FNV-1a 32 over the UTF-8 encoding of `s`, continuing from state `h` (no allocation). */
export function fnv1a32(s: string, h: number = FNV_OFFSET): number {
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      h = Math.imul(h ^ c, FNV_PRIME);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd; // lone surrogate: encoded as U+FFFD, like TextEncoder
    if (c < 0x800) {
      h = Math.imul(h ^ (0xc0 | (c >> 6)), FNV_PRIME);
    } else if (c < 0x10000) {
      h = Math.imul(h ^ (0xe0 | (c >> 12)), FNV_PRIME);
      h = Math.imul(h ^ (0x80 | ((c >> 6) & 0x3f)), FNV_PRIME);
    } else {
      h = Math.imul(h ^ (0xf0 | (c >> 18)), FNV_PRIME);
      h = Math.imul(h ^ (0x80 | ((c >> 12) & 0x3f)), FNV_PRIME);
      h = Math.imul(h ^ (0x80 | ((c >> 6) & 0x3f)), FNV_PRIME);
    }
    h = Math.imul(h ^ (0x80 | (c & 0x3f)), FNV_PRIME);
  }
  return h >>> 0;
}

/** murmur3_32 of one 4-byte little-endian block `k` with `seed`. */
export function murmur3Int(k: number, seed: number): number {
  let k1 = Math.imul(k, 0xcc9e2d51);
  k1 = (k1 << 15) | (k1 >>> 17);
  k1 = Math.imul(k1, 0x1b873593);
  let h = seed ^ k1;
  h = (h << 13) | (h >>> 19);
  h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  h ^= 4;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The FNV state after `seed + "\0"`: precompute once, then `fnv1a32(key, state)` per request. */
export function seedState(seed: string): number {
  return fnv1a32('\0', fnv1a32(seed));
}

/** A uniform number in (0,1) for `key` under `seed` (e.g. for sampling). */
export function stickyUnit(state: number, key: string, salt = 0): number {
  return (murmur3Int(fnv1a32(key, state), salt) + 0.5) / TWO_32;
}

export interface WeightedItem<T> {
  /** Stable identity of the item (hashed): an arm name, `upstream\0model`. Must be unique. */
  id: string;
  /** ≥ 0; items with weight 0 are never chosen. */
  weight: number;
  value: T;
}

/**
 * Compile a sticky weighted picker. At least one item must have a positive weight (the caller
 * checks and reports a config error). Returns `pick(key)`.
 *
 * @example
 *   const pick = compileWeightedPicker('exp-1', [{ id: 'a', weight: 90, value: 'a' }, { id: 'b', weight: 10, value: 'b' }]);
 *   pick('user-42'); // always the same arm for user-42 under these weights
 */
export function compileWeightedPicker<T>(seed: string, items: ReadonlyArray<WeightedItem<T>>): (key: string) => T {
  const live = items.filter((it) => it.weight > 0).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  if (live.length === 0) throw new Error('at least one item needs a positive weight');
  const state = seedState(seed);
  if (live.length === 1) {
    const only = live[0]!.value;
    return () => only;
  }
  const n = live.length;
  const salts = new Int32Array(n);
  const weights = new Float64Array(n);
  const values = live.map((it) => it.value);
  for (let i = 0; i < n; i++) {
    salts[i] = fnv1a32(live[i]!.id, state);
    weights[i] = live[i]!.weight;
  }
  return function pickWeighted(key: string): T {
    const kh = fnv1a32(key, state);
    let best = 0;
    let bestScore = -1;
    for (let i = 0; i < n; i++) {
      const u = (murmur3Int(kh, salts[i]!) + 0.5) / TWO_32;
      const score = weights[i]! / -Math.log(u);
      if (score > bestScore) { bestScore = score; best = i; }
    }
    return values[best]!;
  };
}
