/**
 * The one place for two small safety rules every part of ghostgate shares (fact paths, `when`
 * conditions, JSON Pointers, admin JSON, plugin params), so they cannot disagree:
 *
 * - `FORBIDDEN_KEYS`: property names that reach an object's prototype machinery. A path or
 *   pointer segment, or a JSON key where the parser allows it, with one of these names is refused.
 * - `deepFreeze`: freeze a JSON value in depth, for values built at load and shared by requests.
 */

/** Keys that must never be used as a path segment or object key taken from input. */
export const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(['__proto__', 'prototype', 'constructor']);

/** Whether `key` is one of {@link FORBIDDEN_KEYS}. */
export function isForbiddenKey(key: string): boolean {
  return FORBIDDEN_KEYS.has(key);
}

/**
 * Freeze a value and everything reachable through its own enumerable properties, then return it.
 * Meant for JSON-like values (no cycles): replies, params values and claims built once and shared
 * by every request, so no request can change what the next one sees.
 *
 * @example
 *   const reply = deepFreeze({ status: 426, body: { error: { code: 'GW_ERR_POLICY_UPGRADE_REQUIRED', message } } });
 */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const x of Object.values(value)) deepFreeze(x);
    Object.freeze(value);
  }
  return value;
}
