/**
 * RFC 6901 JSON Pointers, parsed once at load, applied copy-on-write: only the containers along
 * the pointer's path are copied, so a large prompt string is never duplicated and the original
 * body stays intact (conditions and mirrors read it).
 */
import { FORBIDDEN_KEYS } from './safe-object.ts';
import type { JsonObject, JsonValue } from './types.ts';

export type ParsedPointer = readonly string[];

/** Parse `/a/b~1c/0` into segments; throws on a malformed or unsafe pointer. */
export function parsePointer(pointer: string): ParsedPointer {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw new Error(`JSON Pointer "${pointer}" must start with "/"`);
  const segs = pointer.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  for (const s of segs) if (FORBIDDEN_KEYS.has(s)) throw new Error(`JSON Pointer "${pointer}" has a forbidden segment "${s}"`);
  return segs;
}

const cache = new Map<string, ParsedPointer>();
/** Parse with a cache (pointers come from config: a small, fixed set). */
export function pointer(p: string): ParsedPointer {
  let v = cache.get(p);
  if (!v) { v = parsePointer(p); cache.set(p, v); }
  return v;
}

type Container = JsonObject | JsonValue[];
const isContainer = (v: unknown): v is Container => v !== null && typeof v === 'object';
const copy = (c: Container): Container => (Array.isArray(c) ? c.slice() : { ...c });

export function getAt(root: JsonValue, segs: ParsedPointer): JsonValue | undefined {
  let x: JsonValue | undefined = root;
  for (const s of segs) {
    if (!isContainer(x)) return undefined;
    x = Array.isArray(x) ? x[s === '-' ? x.length : Number(s)] : (Object.prototype.hasOwnProperty.call(x, s) ? x[s] : undefined);
  }
  return x;
}

/**
 * Return a new root with `value` set at `segs`, copying only the path. `owned` holds containers
 * already copied for this exchange (they may be mutated in place).
 */
export function setAt(root: JsonObject, segs: ParsedPointer, value: JsonValue, owned: WeakSet<object>): JsonObject {
  if (segs.length === 0) throw new Error('cannot replace the whole body');
  const own = (c: Container): Container => { if (owned.has(c)) return c; const n = copy(c); owned.add(n); return n; };
  const newRoot = own(root) as JsonObject;
  let parent: Container = newRoot;
  for (let i = 0; i < segs.length - 1; i++) {
    const s = segs[i]!;
    const cur: JsonValue | undefined = Array.isArray(parent) ? parent[Number(s)] : parent[s];
    const next: Container = isContainer(cur) ? own(cur) : (owned.add({}), {});
    if (!isContainer(cur)) owned.add(next);
    if (Array.isArray(parent)) parent[Number(s)] = next; else parent[s] = next;
    parent = next;
  }
  const last = segs[segs.length - 1]!;
  if (Array.isArray(parent)) {
    if (last === '-') parent.push(value); else parent[Number(last)] = value;
  } else parent[last] = value;
  return newRoot;
}

/** Like setAt, removing; returns the same root object when nothing was there. */
export function removeAt(root: JsonObject, segs: ParsedPointer, owned: WeakSet<object>): JsonObject {
  if (segs.length === 0 || getAt(root, segs) === undefined) return root;
  const own = (c: Container): Container => { if (owned.has(c)) return c; const n = copy(c); owned.add(n); return n; };
  const newRoot = own(root) as JsonObject;
  let parent: Container = newRoot;
  for (let i = 0; i < segs.length - 1; i++) {
    const s = segs[i]!;
    const cur = (Array.isArray(parent) ? parent[Number(s)] : parent[s]) as Container;
    const next = own(cur);
    if (Array.isArray(parent)) parent[Number(s)] = next; else parent[s] = next;
    parent = next;
  }
  const last = segs[segs.length - 1]!;
  if (Array.isArray(parent)) { parent.splice(Number(last), 1); return newRoot; }
  // Rebuild rather than `delete`: deleting a key drops V8 objects into slow dictionary mode,
  // which makes this edit and the JSON.stringify that follows several times slower.
  const rebuilt: JsonObject = {};
  for (const k in parent) if (k !== last) rebuilt[k] = parent[k]!;
  owned.add(rebuilt);
  if (segs.length === 1) return rebuilt;
  const gp = getAt(newRoot, segs.slice(0, -2)) as Container;
  const pk = segs[segs.length - 2]!;
  if (Array.isArray(gp)) gp[Number(pk)] = rebuilt; else gp[pk] = rebuilt;
  return newRoot;
}
