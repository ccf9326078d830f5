// Loaded only by benchmarks (`node --import`), never by the gateway otherwise: replaces
// AsyncResource.prototype.bind with the same function minus the deprecated (DEP0172)
// `asyncResource` accessor it defines on every bound function. That accessor's getter and setter
// are fresh closures over the resource and the bound function, stored in a map V8 allocates in
// the old generation, so whatever the bound function reaches (for ClientHttp2Session.request():
// the stream, and all that hangs off it) survives every scavenge until a mark-compact
// (bench/README.md, GC).
import { AsyncResource } from 'node:async_hooks';

AsyncResource.prototype.bind = function bind(fn, thisArg) {
  if (typeof fn !== 'function') throw new TypeError('fn must be a function');
  const resource = this;
  const bound = thisArg === undefined
    ? function (...args) { return resource.runInAsyncScope(fn, this, ...args); }
    : resource.runInAsyncScope.bind(resource, fn, thisArg);
  Object.defineProperty(bound, 'length', { configurable: true, enumerable: false, value: fn.length, writable: false });
  return bound;
};
