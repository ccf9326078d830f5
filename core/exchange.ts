/**
 * The per-request object. One class with a fixed shape (V8 keeps it monomorphic); everything
 * that is not needed by most requests (locals) is allocated lazily.
 */
import { performance } from 'node:perf_hooks';
import type { ErrorCode } from './errors.ts';
import { getAt, pointer, removeAt, setAt } from './json-pointer.ts';
import type { CancelSignal, Exchange, Facts, JsonObject, JsonValue, Route } from './types.ts';

const EMPTY_CLAIMS: Readonly<Record<string, unknown>> = Object.freeze({});

export interface ExchangeInit {
  id: string;
  method: string;
  path: string;
  protocol: 'h2' | 'h1';
  ip: string;
  headers: Record<string, string>;
  client: Facts['client'];
  body: JsonObject;
  route: Route;
  startedAt?: number;
  authorization?: string;
}

type MutableFacts = { -readonly [K in keyof Facts]: Facts[K] };

/**
 * The core's own cancellation signal: a plain listener list, no EventTarget. Listeners run in
 * the order they were added, synchronously, once. An AbortSignal is made only for steps that
 * ask for `ex.signal`.
 */
export class Cancellation implements CancelSignal {
  aborted = false;
  reason: unknown = undefined;
  #fns: Array<() => void> | undefined = undefined;
  #final: (() => void) | undefined = undefined;
  addEventListener(_type: 'abort', fn: () => void): void {
    if (this.aborted) return;
    (this.#fns ??= []).push(fn);
  }
  removeEventListener(_type: 'abort', fn: () => void): void {
    const fns = this.#fns;
    if (!fns) return;
    const i = fns.indexOf(fn);
    if (i !== -1) fns.splice(i, 1);
  }
  /**
   * The core's own listener (the request's Call), run once after every other: by then the
   * upstream client's listener has reset the upstream stream, so the Call can time the cancel
   * from the client's reset to the upstream's.
   */
  setFinal(fn: () => void): void {
    if (!this.aborted) this.#final = fn;
  }
  fire(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const fns = this.#fns;
    this.#fns = undefined;
    if (fns) for (const fn of fns) fn();
    const last = this.#final;
    this.#final = undefined;
    if (last !== undefined) last();
  }
}

export class GatewayExchange implements Exchange {
  readonly id: string;
  readonly facts: Facts;
  /** The core's cheap signal; `signal` (an AbortSignal) is derived from it on demand. */
  readonly cancellation = new Cancellation();
  readonly startedAt: number;
  readonly authorization: string | undefined;
  readonly route: Route;
  readonly upstreamHeaders: Record<string, string> = {};
  readonly responseHeaders: Record<string, string> = {};
  readonly labels: Record<string, string> = {};
  /** The body exactly as the client sent it. */
  readonly originalBody: JsonObject;
  /** Set when the exchange was cancelled by the gateway (supersede, shutdown), not the client. */
  cancelCode: ErrorCode | undefined = undefined;
  /** Performance timestamps (ms), filled by the core as the exchange progresses. */
  forwardedAt = 0;
  firstByteAt = 0;
  cancelledAt = 0;
  /** Bit i set = step i of the pipeline was active (its `when` held). */
  activeSteps = 0;
  #controller: AbortController | undefined = undefined;
  #body: JsonObject;
  #owned: WeakSet<object> | undefined = undefined;
  #locals: Map<unknown, unknown> | undefined = undefined;

  constructor(init: ExchangeInit) {
    this.id = init.id;
    this.startedAt = init.startedAt ?? performance.now();
    this.route = init.route;
    this.authorization = init.authorization;
    this.originalBody = init.body;
    this.#body = init.body;
    const facts: MutableFacts = {
      request: { method: init.method, path: init.path, headers: init.headers, protocol: init.protocol, ip: init.ip },
      client: init.client,
      claims: EMPTY_CLAIMS,
      body: init.body,
      route: init.route,
    };
    this.facts = facts;
  }

  /** An AbortSignal for steps (made on first use; most requests never need one). */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      const c = (this.#controller = new AbortController());
      if (this.cancellation.aborted) c.abort(this.cancellation.reason);
      else this.cancellation.addEventListener('abort', () => c.abort(this.cancellation.reason));
    }
    return this.#controller.signal;
  }

  get body(): Readonly<JsonObject> { return this.#body; }
  /** Whether any step changed the body (if not, the client's bytes are forwarded as they came). */
  get bodyChanged(): boolean { return this.#body !== this.originalBody; }
  get locals(): Map<unknown, unknown> { return (this.#locals ??= new Map()); }

  setBody(ptr: string, value: JsonValue): void {
    this.#body = setAt(this.#body, pointer(ptr), value, (this.#owned ??= new WeakSet()));
  }

  removeBody(ptr: string): boolean {
    const segs = pointer(ptr);
    if (getAt(this.#body, segs) === undefined) return false;
    this.#body = removeAt(this.#body, segs, (this.#owned ??= new WeakSet()));
    return true;
  }

  setClaims(claims: Record<string, unknown>): void {
    (this.facts as MutableFacts).claims = claims;
  }

  cancel(code: ErrorCode): void {
    if (this.cancellation.aborted) return;
    this.cancelCode = code;
    this.cancelledAt = performance.now();
    this.cancellation.fire(code);
  }

  /** The client went away (core only). */
  clientGone(): void {
    if (this.cancellation.aborted) return;
    this.cancelledAt = performance.now();
    this.cancellation.fire('client');
  }
}
