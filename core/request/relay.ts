/**
 * Relay an upstream response to the client: headers (hop-by-hop dropped, the gateway's added),
 * then bytes as they arrive with back-pressure, SSE events to the steps that asked for them, and
 * a clean end only when the upstream's response was complete. A client that stops reading for
 * `limits.clientStallMs` is cut (the stall timer).
 */
import http2 from 'node:http2';
import type { OutgoingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import { GatewayError } from '../errors.ts';
import type { GatewayExchange } from '../exchange.ts';
import type { CompiledPipeline } from '../pipeline.ts';
import type { Runtime } from '../runtime.ts';
import { SseSplitter } from '../server/sse.ts';
import type { Outcome, UpstreamResponse } from '../types.ts';
import { internal } from './error-reply.ts';
import type { ClientResponse } from './response.ts';
import { resetClient } from './response.ts';
import type { GatewayState } from './state.ts';

const { NGHTTP2_CANCEL } = http2.constants;

/** What the relay reads and writes of its Call (call.ts; declared here so this file need not import it). */
export interface RelayCall {
  readonly gw: GatewayState;
  readonly rt: Runtime;
  readonly p: CompiledPipeline;
  readonly ex: GatewayExchange;
  readonly res: ClientResponse;
  readonly upstreamName: string;
  readonly finished: boolean;
  status: number;
  headersSent: boolean;
  upstreamBody: UpstreamResponse['body'] | undefined;
  stallTimer: NodeJS.Timeout | undefined;
  stallLength: number;
  /** The upstream response ended; the client has not taken all of it yet. */
  delivering: boolean;
  failBeforeHeaders(e: unknown): void;
  endWithError(err: GatewayError, outcome: Outcome): void;
  finish(outcome: Outcome): void;
}
type Call = RelayCall;

/** Upstream response headers we never relay (hop-by-hop, or the gateway's to set). */
const DROP_RESPONSE_HEADERS = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te', 'trailer', 'http2-settings', 'content-length', 'set-cookie', 'server', 'date', 'x-request-id']);

/** Relay `r` to the call's client; any throw (e.g. a header Node refuses) ends the call, never the process. */
export function relay(call: Call, r: UpstreamResponse): void {
  try {
    relayUnsafe(call, r);
  } catch (e) {
    cancelUpstream(r.body);
    if (!call.headersSent) call.failBeforeHeaders(e);
    else call.endWithError(internal(e, call.gw.log), 'error');
  }
}

function relayUnsafe(call: Call, r: UpstreamResponse): void {
  const ex = call.ex;
  const res = call.res;
  const p = call.p;
  const body = r.body;
  call.upstreamBody = body;
  if (call.finished || ex.cancellation.aborted) { cancelUpstream(body); return; }
  if (p.responseHeaders.length) p.runResponseHeaders(ex, r.status, r.headers);
  const out: OutgoingHttpHeaders = {};
  for (const k in r.headers) {
    if (k.charCodeAt(0) === 58 /* ':' */ || DROP_RESPONSE_HEADERS.has(k)) continue;
    out[k] = r.headers[k];
  }
  out['x-request-id'] = ex.id;
  Object.assign(out, ex.responseHeaders);
  // Marked sent only once writeHead took the headers: one it refuses (a responseHeaders phase's
  // bad value) throws first, and the client gets a coded 500, not this status and an SSE error.
  res.writeHead(r.status, out);
  call.status = r.status;
  call.headersSent = true;
  const sse = p.wantsEvents ? new SseSplitter((data) => p.runResponseEvent(ex, data)) : undefined;
  let first = true;
  // HTTP/1.1: what arrives from upstream in one loop iteration goes out in one write (below).
  const batch = res.stream !== undefined || !res.socket ? undefined : new WriteBatch(res, res.socket);
  body.on('data', (chunk: Buffer) => {
    if (first) { first = false; ex.firstByteAt = performance.now(); }
    if (sse) sse.push(chunk);
    if (batch !== undefined) batch.hold();
    if (!res.write(chunk)) {
      // Back-pressure: stop reading upstream (its flow-control window then stops the upstream)
      // until the client has taken what is buffered, and watch for a client that never does.
      body.pause();
      res.once('drain', () => { clearStall(call); body.resume(); });
      armStall(call);
    }
  });
  // on, not once, for events that come once: once() wraps each listener and removes it again.
  body.on('end', () => {
    if (call.finished || ex.cancellation.aborted) return;
    if (!r.complete()) return call.endWithError(new GatewayError('GW_ERR_UPSTREAM_ABORTED', [call.upstreamName]), 'upstream_aborted');
    res.end();
    // An HTTP/2 client whose window is closed has not taken the end of the response: it stays
    // open, holding its bytes, until the client takes them (the Call's 'close': ok) or takes
    // none for clientStallMs (the stall timer: reset, client_stalled).
    if (res.writableLength > 0 && armStall(call)) { call.delivering = true; return; }
    call.finish('ok');
  });
  let failure: GatewayError | undefined;
  body.on('close', () => {
    // Closed without 'end': the upstream failed mid-response (or we cancelled it).
    if (call.finished || ex.cancellation.aborted) return;
    if (!body.readableEnded) call.endWithError(failure ?? new GatewayError('GW_ERR_UPSTREAM_ABORTED', [call.upstreamName]), 'upstream_aborted');
  });
  body.on('error', (e) => { if (e instanceof GatewayError) failure = e; /* reported on 'close' */ });
}

/**
 * HTTP/1.1 writes batched per loop iteration. Node corks the socket on each response write and
 * uncorks it on the next tick, so the chunks of one upstream read leave in one writev, but the
 * chunk terminator res.end() writes (the upstream's END_STREAM arrives in the same read, its
 * 'end' event a tick later) leaves in a write of its own: two syscalls where one does. Corked
 * here until the check phase of the loop iteration (setImmediate) instead, the response's last
 * chunk and its end go out together (res.end() uncorks the socket fully). The socket, not the
 * response: a corked http.ServerResponse collects chunks that its end() then writes after the
 * terminator. HTTP/2 needs none of this: Node's session sends what the iteration wrote at once.
 * Measured by `bench/lane-cpu.ts`.
 */
class WriteBatch {
  readonly #res: ClientResponse;
  readonly #socket: { cork(): void; uncork(): void };
  #held = false;
  readonly #flush = (): void => {
    this.#held = false;
    // end() flushed it all already; the socket may be the next response's by now.
    if (!this.#res.writableEnded) this.#socket.uncork();
  };
  constructor(res: ClientResponse, socket: { cork(): void; uncork(): void }) { this.#res = res; this.#socket = socket; }
  hold(): void {
    if (this.#held) return;
    this.#held = true;
    this.#socket.cork();
    setImmediate(this.#flush);
  }
}

/**
 * The client stopped taking bytes: if it takes none for `limits.clientStallMs`, the request is
 * cancelled upstream and the client's stream reset (HAProxy's `timeout client`), so a reader
 * that never reads does not hold an upstream stream, and the bytes buffered for it, forever.
 */
function armStall(call: Call): boolean {
  const ms = call.rt.config.limits.clientStallMs;
  if (ms === 0 || call.finished) return false;
  if (call.stallTimer !== undefined) return true;
  call.stallLength = call.res.writableLength;
  call.stallTimer = setTimeout(stallCheck, ms, call, ms);
  return true;
}

export function clearStall(call: Call): void {
  if (call.stallTimer === undefined) return;
  clearTimeout(call.stallTimer);
  call.stallTimer = undefined;
}

/** The stall timer fired: a client that took some bytes meanwhile gets another period. */
function stallCheck(call: Call, ms: number): void {
  call.stallTimer = undefined;
  if (call.finished) return;
  const len = call.res.writableLength;
  // Delivering: all taken, the stream's close is on its way.
  if (call.delivering && len === 0) return call.finish('ok');
  if (len < call.stallLength) {
    call.stallLength = len;
    call.stallTimer = setTimeout(stallCheck, ms, call, ms);
    return;
  }
  // No byte taken for `clientStallMs`: cancel upstream (unless it already ended), reset the client.
  if (!call.delivering && call.upstreamBody && !call.upstreamBody.destroyed) cancelUpstream(call.upstreamBody);
  call.finish('client_stalled');
  resetClient(call.res, 'client stalled');
}

/** Stop an upstream response: RST_STREAM(CANCEL) on h2 (a plain destroy would send NO_ERROR), socket close on h1. */
export function cancelUpstream(body: UpstreamResponse['body']): void {
  const h2 = body as unknown as { close?: (code: number) => void; rstCode?: number };
  // RST_STREAM(CANCEL), then destroy: a stream whose upstream already sent END_STREAM while we
  // had paused it (a client that does not read) is kept open by Node until its readable side is
  // consumed, so close() alone never ends it: it held its buffered response and its session's
  // stream count (a GOAWAYed session stayed draining forever). test/core/upstream-stream-release.test.ts
  if (typeof h2.close === 'function' && 'rstCode' in h2) h2.close(NGHTTP2_CANCEL);
  body.destroy();
}
