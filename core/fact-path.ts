/**
 * Dotted fact paths in plugin params (`stickyOn: claims.sub`, `identity: request.ip`): the same
 * language as a `when` condition's `{var: "claims.sub"}`, compiled once at load into a reader.
 * Rules are those of `core/conditions.ts`: the first segment is a fact root, no empty segments,
 * no `__proto__`/`prototype`/`constructor`, own properties only.
 */
import { FORBIDDEN_KEYS } from './safe-object.ts';
import { FACT_ROOTS } from './types.ts';
import type { Facts } from './types.ts';

export type FactReader = (facts: Facts) => unknown;

const hasOwn = Object.prototype.hasOwnProperty;

/**
 * Compile `claims.sub` into `(facts) => facts.claims.sub` (undefined when any step is missing).
 * Throws an `Error` whose message names the problem; callers wrap it in `ctx.error(...)`.
 *
 * @example
 *   const sub = compileFactPath('claims.sub');
 *   sub(ex.facts); // 'user-1' | undefined
 */
export function compileFactPath(path: string, roots: readonly string[] = FACT_ROOTS): FactReader {
  const segments = path.split('.');
  for (const s of segments) {
    if (s === '' || FORBIDDEN_KEYS.has(s)) throw new Error(`fact path "${path}" has a forbidden or empty segment "${s}"`);
  }
  if (!roots.includes(segments[0]!)) {
    throw new Error(`fact path "${path}" must start with one of ${roots.join(', ')}`);
  }
  if (segments.length === 2) {
    const [a, b] = segments as [string, string];
    return (f) => {
      const x = (f as unknown as Record<string, unknown>)[a];
      if (x === null || typeof x !== 'object') return undefined;
      return hasOwn.call(x, b) ? (x as Record<string, unknown>)[b] : undefined;
    };
  }
  return (f) => {
    let x: unknown = f;
    for (const s of segments) {
      if (x === null || typeof x !== 'object') return undefined;
      x = hasOwn.call(x, s) ? (x as Record<string, unknown>)[s] : undefined;
    }
    return x;
  };
}

/**
 * A fact value usable as a key: non-empty strings as they are, finite numbers and booleans as
 * text; anything else (missing, null, objects, arrays, '') is `undefined`.
 */
export function factKey(v: unknown): string | undefined {
  if (typeof v === 'string') return v === '' ? undefined : v;
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : undefined;
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  return undefined;
}
