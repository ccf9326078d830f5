/**
 * `when` conditions: json-logic, compiled once per load into plain closures.
 *
 * We accept the json-logic language (and test our results against json-logic-js, the reference
 * implementation), but we do not interpret rules per request: `compileCondition` walks the rule
 * once, rejects operators outside the allow-list and `var` paths outside the fact roots, and
 * returns a closure. Evaluating a compiled rule is a few property reads and comparisons, with no
 * parsing, no string splitting and no `eval`; it allocates nothing except `cat`'s result string
 * (and the one-time parse of a version string not seen before). `bench/conditions.ts` measures
 * time and bytes per evaluation against json-logic-js.
 *
 * Beyond json-logic we add `semver<`, `semver<=`, `semver>`, `semver>=`, `semver==` (e.g.
 * `{"semver<": [{"var": "client.version"}, "1.200.0"]}`); an unparseable version compares false.
 */
import { FORBIDDEN_KEYS } from './safe-object.ts';
import { FACT_ROOTS } from './types.ts';

export type Evaluator = (facts: object) => unknown;
export type Predicate = (facts: object) => boolean;

/** Operators a `when` may use. */
export const ALLOWED_OPERATORS = [
  'var', '==', '===', '!=', '!==', '!', '!!', 'and', 'or', 'if', '?:',
  '<', '<=', '>', '>=', 'in', 'cat', '+', '-', '*', '/', '%', 'min', 'max',
  'semver<', 'semver<=', 'semver>', 'semver>=', 'semver==',
] as const;
const ALLOWED = new Set<string>(ALLOWED_OPERATORS);

export class ConditionError extends Error {
  /** Path inside the rule, e.g. `and[1]`. */
  readonly at: string;
  constructor(message: string, at: string) { super(at ? `${message} (at ${at})` : message); this.at = at; }
}

/** json-logic truthiness: like JS, except that an empty array is false. */
export function truthy(v: unknown): boolean {
  return Array.isArray(v) ? v.length > 0 : Boolean(v);
}

/** Compile a `when` rule into a predicate. Throws ConditionError naming the problem. */
export function compileCondition(rule: unknown, roots: readonly string[] = FACT_ROOTS): Predicate {
  const ev = compile(rule, '', new Set(roots));
  if (typeof rule === 'boolean') return rule ? () => true : () => false;
  return (facts) => truthy(ev(facts));
}

function compile(rule: unknown, at: string, roots: ReadonlySet<string>): Evaluator {
  if (Array.isArray(rule)) {
    const items = rule.map((r, i) => compile(r, `${at}[${i}]`, roots));
    return (f) => items.map((e) => e(f));
  }
  if (rule === null || typeof rule !== 'object') return () => rule;
  const keys = Object.keys(rule);
  if (keys.length !== 1) {
    throw new ConditionError(`a rule object must have exactly one operator, found ${keys.length ? keys.join(', ') : 'none'}`, at);
  }
  const op = keys[0]!;
  if (!ALLOWED.has(op)) throw new ConditionError(`operator "${op}" is not allowed (allowed: ${ALLOWED_OPERATORS.join(' ')})`, at);
  const raw = (rule as Record<string, unknown>)[op];
  const here = at ? `${at}.${op}` : op;
  if (op === 'var') return compileVar(raw, here, roots);
  const argRules = Array.isArray(raw) ? raw : [raw];
  const args = argRules.map((r, i) => compile(r, `${here}[${i}]`, roots));
  return compileOp(op, args, here);
}

function compileVar(raw: unknown, at: string, roots: ReadonlySet<string>): Evaluator {
  const [pathRaw, defRaw] = Array.isArray(raw) ? raw : [raw];
  if (typeof pathRaw !== 'string' || pathRaw === '') {
    throw new ConditionError('var needs a literal dotted path like "claims.sub" (the whole fact set is not readable)', at);
  }
  const segments = pathRaw.split('.');
  for (const s of segments) {
    if (s === '' || FORBIDDEN_KEYS.has(s)) throw new ConditionError(`var path "${pathRaw}" has a forbidden segment "${s}"`, at);
  }
  if (!roots.has(segments[0]!)) {
    throw new ConditionError(`var path "${pathRaw}" is outside the fact roots (${[...roots].join(', ')})`, at);
  }
  const def = defRaw === undefined ? null : defRaw;
  const hasOwn = Object.prototype.hasOwnProperty;
  // Unrolled for the common depths; the general loop for the rest.
  if (segments.length === 2) {
    const [a, b] = segments as [string, string];
    return (f) => {
      const x = (f as Record<string, unknown>)[a] as Record<string, unknown> | null | undefined;
      if (x === null || x === undefined || typeof x !== 'object') return def;
      const v = hasOwn.call(x, b) ? x[b] : undefined;
      return v === undefined ? def : v;
    };
  }
  return (f) => {
    let x: unknown = f;
    for (const s of segments) {
      if (x === null || x === undefined || typeof x !== 'object') return def;
      x = hasOwn.call(x, s) ? (x as Record<string, unknown>)[s] : undefined;
    }
    return x === undefined ? def : x;
  };
}

function arity(op: string, args: Evaluator[], min: number, max: number, at: string): void {
  if (args.length < min || args.length > max) {
    throw new ConditionError(`"${op}" takes ${min === max ? min : `${min} to ${max}`} argument(s), got ${args.length}`, at);
  }
}

/* eslint-disable eqeqeq -- json-logic's == and != are JavaScript's loose equality, on purpose. */
function compileOp(op: string, a: Evaluator[], at: string): Evaluator {
  const [x, y, z] = a as [Evaluator, Evaluator, Evaluator];
  switch (op) {
    case '==': arity(op, a, 2, 2, at); return (f) => x(f) == y(f);
    case '===': arity(op, a, 2, 2, at); return (f) => x(f) === y(f);
    case '!=': arity(op, a, 2, 2, at); return (f) => x(f) != y(f);
    case '!==': arity(op, a, 2, 2, at); return (f) => x(f) !== y(f);
    case '!': arity(op, a, 1, 1, at); return (f) => !truthy(x(f));
    case '!!': arity(op, a, 1, 1, at); return (f) => truthy(x(f));
    case 'and': arity(op, a, 1, 64, at); return (f) => {
      let v: unknown;
      for (const e of a) { v = e(f); if (!truthy(v)) return v; }
      return v;
    };
    case 'or': arity(op, a, 1, 64, at); return (f) => {
      let v: unknown;
      for (const e of a) { v = e(f); if (truthy(v)) return v; }
      return v;
    };
    case 'if': case '?:': return (f) => {
      let i = 0;
      for (; i + 1 < a.length; i += 2) if (truthy(a[i]!(f))) return a[i + 1]!(f);
      return i < a.length ? a[i]!(f) : null;
    };
    case '<': arity(op, a, 2, 3, at);
      return a.length === 3 ? (f) => { const m = y(f) as number; return (x(f) as number) < m && m < (z(f) as number); } : (f) => (x(f) as number) < (y(f) as number);
    case '<=': arity(op, a, 2, 3, at);
      return a.length === 3 ? (f) => { const m = y(f) as number; return (x(f) as number) <= m && m <= (z(f) as number); } : (f) => (x(f) as number) <= (y(f) as number);
    case '>': arity(op, a, 2, 2, at); return (f) => (x(f) as number) > (y(f) as number);
    case '>=': arity(op, a, 2, 2, at); return (f) => (x(f) as number) >= (y(f) as number);
    case 'in': arity(op, a, 2, 2, at); return (f) => {
      const hay = y(f);
      return (typeof hay === 'string' || Array.isArray(hay)) ? (hay as unknown[]).indexOf(x(f) as never) !== -1 : false;
    };
    case 'cat': return (f) => { let s = ''; for (const e of a) { const v = e(f); if (v !== null && v !== undefined) s += String(v); } return s; };
    case '+': return (f) => { let s = 0; for (const e of a) s += Number(e(f)); return s; };
    case '*': arity(op, a, 1, 64, at); return (f) => { let s = 1; for (const e of a) s *= Number(e(f)); return s; };
    case '-': arity(op, a, 1, 2, at); return a.length === 1 ? (f) => -Number(x(f)) : (f) => Number(x(f)) - Number(y(f));
    case '/': arity(op, a, 2, 2, at); return (f) => Number(x(f)) / Number(y(f));
    case '%': arity(op, a, 2, 2, at); return (f) => Number(x(f)) % Number(y(f));
    // Math.min()/max() semantics (Infinity when empty, NaN wins) without an array per call.
    case 'min': return (f) => { let m = Infinity; for (const e of a) { const v = Number(e(f)); if (v < m || Number.isNaN(v)) m = v; if (Number.isNaN(m)) return m; } return m; };
    case 'max': return (f) => { let m = -Infinity; for (const e of a) { const v = Number(e(f)); if (v > m || Number.isNaN(v)) m = v; if (Number.isNaN(m)) return m; } return m; };
    case 'semver<': case 'semver<=': case 'semver>': case 'semver>=': case 'semver==':
      return compileSemver(op, a, at);
    default: throw new ConditionError(`operator "${op}" is not implemented`, at);
  }
}

function compileSemver(op: string, a: Evaluator[], at: string): Evaluator {
  arity(op, a, 2, 2, at);
  const test: (c: number) => boolean =
    op === 'semver<' ? (c) => c < 0 : op === 'semver<=' ? (c) => c <= 0 : op === 'semver>' ? (c) => c > 0
      : op === 'semver>=' ? (c) => c >= 0 : (c) => c === 0;
  const [x, y] = a as [Evaluator, Evaluator];
  return (f) => {
    const l = parseSemver(x(f));
    const r = parseSemver(y(f));
    return l !== null && r !== null && test(compareSemver(l, r));
  };
}

/** A parsed version: [major, minor, patch, prerelease identifiers]. */
export type Semver = readonly [number, number, number, readonly (string | number)[]];
const SEMVER = /^v?(\d{1,9})(?:\.(\d{1,9}))?(?:\.(\d{1,9}))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/;
const semverCache = new Map<string, Semver | null>();

/** Parse `1.2.3`, `v1.2`, `1.2.3-beta.1+build`; missing minor/patch are 0. null if not a version. */
export function parseSemver(v: unknown): Semver | null {
  if (typeof v !== 'string' || v.length > 64) return null;
  const hit = semverCache.get(v);
  if (hit !== undefined) return hit;
  const m = SEMVER.exec(v);
  const parsed: Semver | null = m
    ? [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0), m[4] ? m[4].split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p)) : []]
    : null;
  if (semverCache.size > 10_000) semverCache.clear(); // bounded: versions seen in the wild are few
  semverCache.set(v, parsed);
  return parsed;
}

/** Semver precedence: <0, 0, >0. */
export function compareSemver(a: Semver, b: Semver): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number);
  const pa = a[3], pb = b[3];
  if (pa.length === 0 || pb.length === 0) return pb.length - pa.length; // release > prerelease
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const x = pa[i]!, y = pb[i]!;
    if (x === y) continue;
    if (typeof x === 'number' && typeof y === 'number') return x - y;
    if (typeof x === 'number') return -1;
    if (typeof y === 'number') return 1;
    return x < y ? -1 : 1;
  }
  return pa.length - pb.length;
}
