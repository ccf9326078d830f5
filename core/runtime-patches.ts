/**
 * Changes to Node's runtime that the gateway makes in its own processes (`ghostgate start`: a
 * single one, a cluster's primary and workers), never when its modules are imported as a
 * library: an embedder calls `applyRuntimePatches()` itself if it wants them (exported by
 * `ghostgate/fastify`).
 *
 *   applyRuntimePatches();                                    // what `ghostgate start` does
 *   applyRuntimePatches({ keepAsyncResourceProperty: true }); // the config's escape hatch: a no-op
 *
 * One patch: `AsyncResource.prototype.bind` without the deprecated `asyncResource` property.
 * Node 24's `bind` defines on every bound function an `asyncResource` accessor (DEP0172, a
 * runtime deprecation since Node 20: nodejs/node#46432; end of life in nodejs/node#58618,
 * semver-major), whose getter and setter are two fresh `deprecate()` closures.
 * `ClientHttp2Session.request()` binds every request's start with it, and a fresh accessor gives
 * each bound function a new map that V8 allocates in the old generation, so the stream and
 * everything reachable from it (our Call and Exchange included) survive every scavenge until a
 * mark-compact. Without the property: bench/README.md, GC
 * (`npx node bench/gc-survival.ts --only gateway,gateway:keep ...`).
 * Otherwise the same as Node's: `fn` validated by Node itself (the same ERR_INVALID_ARG_TYPE),
 * the bound function runs `fn` in the resource's async scope (`runInAsyncScope`, so
 * AsyncLocalStorage and async_hooks see what they saw), with `thisArg` or the caller's `this`,
 * and has `fn`'s `length` (test/core/runtime-patches.test.ts).
 */
import { AsyncResource } from 'node:async_hooks';

/** Node's own `bind`, kept for its argument validation. */
const nodeBind = AsyncResource.prototype.bind;
const { apply } = Reflect;
const bindFn = Function.prototype.bind;

export interface RuntimePatchOptions {
  /**
   * Leave Node's `AsyncResource.prototype.bind` as it is (bound functions keep the deprecated
   * `asyncResource` property). Config: `server.keepAsyncResourceProperty`. Default false.
   */
  keepAsyncResourceProperty?: boolean;
}

type Fn = (...args: unknown[]) => unknown;

/** `AsyncResource.prototype.bind` as Node 24 has it, minus the `asyncResource` accessor. */
function bind(this: AsyncResource, fn: Fn, thisArg?: unknown): Fn {
  // Anything but a function: Node's bind throws its own ERR_INVALID_ARG_TYPE.
  if (typeof fn !== 'function') return apply(nodeBind, this, [fn, thisArg]) as Fn;
  let bound: Fn;
  if (thisArg === undefined) {
    const resource = this;
    bound = function (this: unknown, ...args: unknown[]) {
      return apply(resource.runInAsyncScope, resource, [fn, this, ...args]);
    };
  } else {
    bound = apply(bindFn, this.runInAsyncScope, [this, fn, thisArg]) as Fn;
  }
  Object.defineProperty(bound, 'length', { __proto__: null, configurable: true, enumerable: false, value: fn.length, writable: false } as PropertyDescriptor);
  return bound;
}

/** Apply the patches `o` does not turn off. Idempotent; nothing is ever undone. */
export function applyRuntimePatches(o: RuntimePatchOptions = {}): void {
  if (!o.keepAsyncResourceProperty) AsyncResource.prototype.bind = bind as unknown as typeof AsyncResource.prototype.bind;
}

