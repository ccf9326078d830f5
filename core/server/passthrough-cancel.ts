/**
 * Cancellation for passthrough routes (core/server/passthrough.ts): the per-request state that
 * shutdown can cut (`InFlight`, in its runtime's `live` set), the way its AbortSignal reaches
 * undici through @fastify/reply-from, and the reset that keeps a body cut short from looking
 * whole. Tests: test/core/passthrough-cancel.test.ts.
 */
import type { ServerHttp2Stream } from 'node:http2';
import type { FastifyReply } from 'fastify';
import type { Agent, Dispatcher } from 'undici';
import { resetClient } from '../request/response.ts';
import type { ClientResponse } from '../request/response.ts';
import type { Cancellable } from '../runtime.ts';
import type { PassthroughTarget } from './passthrough-table.ts';

/**
 * One passthrough request from its authentication to its response's close. It is in its
 * runtime's `live` set meanwhile, so shutdown waits for it and cuts it at the deadline.
 */
export class InFlight implements Cancellable {
  readonly #ac = new AbortController();
  /** Why the upstream request was aborted, once it was. */
  why: 'client' | 'shutdown' | undefined;
  /** Handed to undici with the request. */
  readonly signal = this.#ac.signal;
  /** The entry as the runtime the request started on has it. */
  readonly target: PassthroughTarget;
  constructor(target: PassthroughTarget) { this.target = target; }
  /** The client left: the upstream request is abandoned. */
  clientGone(): void { this.#abort('client'); }
  /** The shutdown deadline (Runtime.live). */
  cancel(): void { this.#abort('shutdown'); }
  #abort(why: 'client' | 'shutdown'): void {
    if (this.why !== undefined) return;
    this.why = why;
    this.#ac.abort();
  }
}

/**
 * How a request's signal reaches undici: reply-from builds undici's request options itself and
 * takes no per-request ones, but it copies the request headers with Object.assign, which keeps a
 * symbol-keyed property. The dispatcher below takes it out again (never sent).
 */
export const SIGNAL = Symbol('ghostgate.passthrough.signal');

/** An undici Agent as reply-from calls it (`request(opts, cb)`), with each request's signal put in. */
export function cancellableDispatcher(agent: Agent): Pick<Dispatcher, 'request'> {
  return {
    request(opts: Dispatcher.RequestOptions, cb?: unknown) {
      const headers = opts.headers as Record<string | symbol, unknown>;
      const signal = headers[SIGNAL] as AbortSignal | undefined;
      delete headers[SIGNAL];
      return (agent.request as (o: Dispatcher.RequestOptions, cb: unknown) => unknown)({ ...opts, signal }, cb);
    },
  } as Pick<Dispatcher, 'request'>;
}

/** The client's response is gone (a reset stream or a destroyed socket) before it ended. */
export function clientGone(res: FastifyReply['raw']): boolean {
  const r = res as { destroyed?: boolean; stream?: { destroyed: boolean } };
  return !res.writableEnded && (r.destroyed === true || r.stream?.destroyed === true);
}

/**
 * A body cut short (the upstream failed mid-body, or we aborted it) must not look whole. Fastify
 * destroys the response: on HTTP/1.1 the connection closes before the last chunk, but an HTTP/2
 * stream destroyed without an error ends with RST_STREAM(NO_ERROR), which Node's client takes for
 * a clean end. So on the body's error the HTTP/2 stream is reset with INTERNAL_ERROR first (resetClient).
 */
export function resetOnBodyError(reply: FastifyReply, body: NodeJS.ReadableStream): void {
  const stream = (reply.raw as { stream?: ServerHttp2Stream }).stream;
  // resetClient, as a completion cut short: destroy(err) sends only the RST; close(code) may send END_STREAM first.
  if (stream) body.once('error', () => { if (!stream.closed) resetClient(reply.raw as unknown as ClientResponse, 'upstream body failed'); });
}
