/**
 * Type-level assertions, checked by `npx tsc -p .` (which `npm test` runs first): a file of
 * `Expect<Equal<A, B>>` lines fails to compile when A and B differ in any way (optional vs
 * required, readonly, a wider or narrower type).
 */
export type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
export type Expect<T extends true> = T;
/** `K` is an optional key of `T` (may be absent). */
export type Optional<T, K extends keyof T> = {} extends Pick<T, K> ? true : false;
