/**
 * The life of one completion request, whatever adapter brought it (Fastify's route, the HTTP/2
 * or HTTP/1.1 fast lane): run the compiled pipeline, take the last look at the client, admit it
 * against the per-connection and per-address caps, make the upstream attempt(s), relay
 * (relay.ts), and account for it once at the end. Cancellation (the client's reset, or the
 * gateway's) reaches the upstream through the exchange's signal in every phase.
 *
 * Over 250 lines on purpose: this is one state machine whose methods are its transitions, all on
 * the same few fields (`finished`, `headersSent`, `upstreamBody`, `failover`). The parts that need
 * none of its transitions live beside it: admission.ts, relay.ts, outbound.ts, error-reply.ts.
 */
import { performance } from 'node:perf_hooks';
import { GatewayError } from '../errors.ts';
import type { GatewayExchange } from '../exchange.ts';
import type { CompiledPipeline } from '../pipeline.ts';
import type { Runtime } from '../runtime.ts';
import type { SessionGuard } from '../server/client-sessions.ts';
import type { LocalReply, Outcome, UpstreamResponse } from '../types.ts';
import { UpstreamAbortError } from '../upstream/client.ts';
import { Failover } from '../upstream/failover.ts';
import type { ManagedUpstream } from '../upstream/client.ts';
import { failStarted, internal, JSON_TYPE, writeError } from './error-reply.ts';
import { admit } from './admission.ts';
import { outboundRequest } from './outbound.ts';
import { cancelUpstream, clearStall, relay } from './relay.ts';
import type { ClientResponse } from './response.ts';
import { clientGone } from './response.ts';
import type { RoutePath } from './routes.ts';
import type { GatewayState } from './state.ts';

/** The life of one proxied request. A class so V8 sees one shape and closures are few. */
export class Call {
  readonly gw: GatewayState;
  readonly rt: Runtime;
  readonly p: CompiledPipeline;
  readonly ex: GatewayExchange;
  readonly res: ClientResponse;
  readonly rawBody: Buffer | undefined;
  readonly path: RoutePath;
  readonly asked: string;
  upstreamName = '';
  status = 0;
  headersSent = false;
  finished = false;
  /** Attempts made upstream (0 until the first is sent). */
  attempts = 0;
  /** A model with deployments: the attempt loop's state (core/upstream/failover.ts). */
  failover: Failover | undefined = undefined;
  upstreamBody: UpstreamResponse['body'] | undefined = undefined;
  /** The client session's guard while this request counts against its in-flight cap. */
  guard: SessionGuard | undefined = undefined;
  /** The client address while this request counts against its per-IP in-flight cap. */
  countedIp: string | undefined = undefined;
  /** Armed while the relay waits for the client to take bytes (relay.ts, `stallCheck`). */
  stallTimer: NodeJS.Timeout | undefined = undefined;
  stallLength = 0;
  /** The upstream response ended and the client has not taken all of it yet (relay.ts). */
  delivering = false;

  constructor(gw: GatewayState, rt: Runtime, p: CompiledPipeline, ex: GatewayExchange, res: ClientResponse, rawBody: Buffer | undefined, path: RoutePath, asked: string) {
    this.gw = gw; this.rt = rt; this.p = p; this.ex = ex; this.res = res; this.rawBody = rawBody; this.path = path; this.asked = asked;
  }

  /**
   * Run the pipeline. Not `async`: the common path (no async step) runs synchronously up to the
   * upstream send, with no promise allocated.
   */
  start(): void {
    this.rt.enter(this.ex);
    this.gw.metrics.inflight.inc();
    // on, not once: 'close' comes once, and once() would wrap the listener and remove it again.
    this.res.on('close', () => this.onClientClose());
    this.ex.cancellation.setFinal(() => this.onAbort());
    let r: LocalReply | undefined | Promise<LocalReply | undefined>;
    try {
      r = this.p.run(this.ex);
    } catch (e) {
      return this.failBeforeHeaders(e);
    }
    if (r === undefined) return this.forward();
    if (typeof (r as Promise<unknown>).then === 'function') {
      (r as Promise<LocalReply | undefined>).then((v) => (v === undefined ? this.forward() : this.local(v)), (e) => this.failBeforeHeaders(e));
      return;
    }
    this.local(r as LocalReply);
  }

  /** The client's stream or socket closed. Before we ended the response, that is a cancel; after, the end of its delivery. */
  onClientClose(): void {
    if (this.finished) return;
    if (this.delivering) return this.finish('ok');
    if (this.res.writableEnded) return;
    this.ex.clientGone();
  }

  /**
   * The exchange's signal fired: the client went away, or a step/gateway cancelled it. This runs
   * after every other abort listener, so the upstream client has already reset its stream
   * (RST_STREAM CANCEL, or the HTTP/1.1 socket closed): the histogram times noticed → reset sent.
   */
  onAbort(): void {
    const ex = this.ex;
    // before_first_byte = during the prefill (no token relayed yet): the expensive window.
    const phase = this.upstreamName === '' ? 'before_forward' : ex.firstByteAt === 0 ? 'before_first_byte' : 'streaming';
    this.gw.metrics.cancelPropagation.labels(phase).observe((performance.now() - ex.cancelledAt) / 1000);
    if (ex.cancelCode !== undefined) {
      // Cancelled by the gateway (e.g. superseded): tell the client why, if it is still there.
      const err = new GatewayError(ex.cancelCode);
      this.endWithError(err, ex.cancelCode === 'GW_ERR_POLICY_SUPERSEDED' ? 'superseded' : err.status >= 500 ? 'error' : 'local');
      return;
    }
    if (this.upstreamName !== '') this.finish('client_cancelled');
    // before forwarding: forward() takes the last look and finishes.
  }

  /** A step answered locally. */
  local(r: LocalReply): void {
    if (this.finished) return;
    if (this.ex.cancellation.aborted) return this.finish('cancelled_before_forward');
    try {
      const code = (r.body as { error?: { code?: string } }).error?.code;
      if (code) this.gw.metrics.errors.labels(code).inc();
      // headersSent only once writeHead took them: a body that does not serialise or a header
      // value Node refuses (a step's bug) throws first, and the client gets a coded JSON error.
      const body = JSON.stringify(r.body);
      this.res.writeHead(r.status, { 'content-type': JSON_TYPE, 'cache-control': 'no-store', 'x-request-id': this.ex.id, ...this.ex.responseHeaders, ...r.headers, 'content-length': Buffer.byteLength(body) });
      this.status = r.status;
      this.headersSent = true;
      this.res.end(body);
      this.finish('local');
    } catch (e) {
      if (!this.headersSent) this.failBeforeHeaders(e);
      else this.endWithError(internal(e, this.gw.log), 'error');
    }
  }

  /**
   * The pipeline let the request through. Forward it after the last look, which waits for the
   * input already read from this client's connection to be processed: a client may send its
   * request and its RST_STREAM (or an HTTP/1.1 request and its FIN) in one write, and the reset
   * is handled only once the code that parsed the request has returned. See `lastLook`.
   */
  forward(): void {
    if (this.finished) return;
    setImmediate(lastLook, this, this.ex.facts.request.protocol === 'h1' ? 1 : 0);
  }

  /** The last look, then admission (in-flight caps), then the first attempt. */
  forwardNow(): void {
    if (this.finished) return;
    const ex = this.ex;
    try {
      // Last look: a client already gone is never sent upstream (no wasted prefill).
      if (!ex.cancellation.aborted && clientGone(this.res)) ex.clientGone();
      if (ex.cancellation.aborted) return this.finish('cancelled_before_forward');
    } catch (e) {
      return this.failBeforeHeaders(e);
    }
    // A model with deployments: a deployment is picked per attempt, and a failed attempt picks
    // again (`nextAttempt`). A step that routed the request elsewhere (traffic-split,
    // model-rewrite to a deployment) pins it to that upstream: one target, as below.
    const model = this.rt.models.get(ex.route.model);
    if (model?.deployments !== undefined && ex.route.upstream === model.upstream && ex.route.upstreamModel === model.upstreamModel) {
      if (!admit(this)) return;
      this.failover = new Failover(model.deployments);
      return this.nextAttempt(undefined);
    }
    const upstream = this.rt.upstreams.get(ex.route.upstream);
    if (upstream === undefined) return this.failBeforeHeaders(new GatewayError('GW_ERR_ROUTE_UNKNOWN_MODEL', [this.asked]));
    if (!admit(this)) return;
    this.attempt(upstream);
  }

  /**
   * THE SEAM for failover (#9): one attempt of this request on one upstream target. Its outcome
   * is `relay` (response headers arrived) or `failBeforeHeaders`. A loop of attempts goes around
   * this function: the backend (deployment) is picked per attempt where `forwardNow` passes
   * `upstream`, and a failure before any response byte (`failBeforeHeaders`, no headers sent,
   * not cancelled) may call `attempt` again with the next target instead of answering the error.
   */
  attempt(upstream: ManagedUpstream): void {
    const ex = this.ex;
    try {
      this.upstreamName = upstream.name;
      const out = outboundRequest(ex, upstream.name, upstream.config.forwardHeaders, this.path, this.res.req?.headers, this.rawBody);
      // Forwarding-phase steps (e.g. mirror) see the request once, on its first attempt.
      if (this.attempts++ === 0 && this.p.forwarding.length) this.p.runForwarding(ex, out);
      ex.forwardedAt = performance.now();
      const f = this.failover;
      upstream.send({ path: out.path, headers: out.headers as Record<string, string>, body: out.body, signal: ex.cancellation, firstByteTimeoutMs: f?.firstByteTimeoutMs(upstream), owner: this.countedIp }).then(
        // A 5xx or 429 from a deployment, with another to try: dropped unrelayed, next attempt.
        (r) => (f !== undefined && f.retryOnResponse(r, ex.cancellation.aborted || this.finished) ? this.nextAttempt(undefined) : relay(this, r)),
        (e) => this.attemptFailed(e, upstream),
      );
    } catch (e) {
      this.failBeforeHeaders(e);
    }
  }

  /**
   * An attempt failed before any response header (connect refused, reset, timeout, unavailable).
   * A model with deployments goes on to the next one if the call is not finished or cancelled and
   * the failover allows another try (core/upstream/failover.ts); otherwise answer the error.
   */
  attemptFailed(e: unknown, _target: ManagedUpstream): void {
    if (this.failover !== undefined && this.failover.retryOnError(e, this.ex.cancellation.aborted || this.finished)) return this.nextAttempt(e);
    this.failBeforeHeaders(e);
  }

  /**
   * The next attempt of a model with deployments: pick one (the client may have gone meanwhile:
   * then nothing is sent), route the request to it (its upstream, the model name it expects),
   * and make the attempt. No deployment left: the last error, or a coded 503 with Retry-After.
   */
  nextAttempt(last: unknown): void {
    if (this.finished) return;
    const ex = this.ex;
    if (ex.cancellation.aborted) return this.failBeforeHeaders(new UpstreamAbortError());
    const d = this.failover!.next(last);
    if (d instanceof GatewayError) return this.failBeforeHeaders(d);
    const upstream = this.rt.upstreams.get(d.config.upstream);
    if (upstream === undefined) return this.failBeforeHeaders(new GatewayError('GW_ERR_ROUTE_UNKNOWN_MODEL', [this.asked]));
    ex.route.upstream = d.config.upstream;
    ex.route.upstreamModel = d.config.model;
    this.attempt(upstream);
  }

  /** Failure before any response byte: a coded JSON error (unless the client is gone). */
  failBeforeHeaders(e: unknown): void {
    if (this.finished) return;
    if (e instanceof UpstreamAbortError || this.ex.cancellation.aborted) {
      if (this.ex.cancelCode === undefined) this.finish(this.upstreamName === '' ? 'cancelled_before_forward' : 'client_cancelled');
      return;
    }
    const err = e instanceof GatewayError ? e : internal(e, this.gw.log);
    // 5xx from the gateway itself (a plugin crash, a bug) counts against the SLO; 4xx do not.
    const outcome: Outcome = err.code.startsWith('GW_ERR_UPSTREAM_') ? 'upstream_error' : err.status >= 500 ? 'error' : 'local';
    this.endWithError(err, outcome);
  }

  /** End with an error: a JSON error before headers, an SSE error event and an abnormal end after. */
  endWithError(err: GatewayError, outcome: Outcome): void {
    if (this.finished) return;
    const res = this.res;
    if (this.upstreamBody && !this.upstreamBody.destroyed) cancelUpstream(this.upstreamBody);
    if (res.destroyed || res.stream?.destroyed) {
      this.gw.metrics.errors.labels(err.code).inc();
      return this.finish(outcome);
    }
    if (!this.headersSent) {
      this.status = err.status;
      this.headersSent = true;
      writeError(res, err, this.gw, undefined, { requestId: this.ex.id, github: this.ex.responseHeaders['x-github-request-id'] });
      return this.finish(outcome);
    }
    this.gw.metrics.errors.labels(err.code).inc();
    this.finish(outcome);
    failStarted(res, err);
  }

  /** Account for the request, once: caps released, metrics, health, the steps' done phase. */
  finish(outcome: Outcome): void {
    if (this.finished) return;
    this.finished = true;
    const ex = this.ex;
    const now = performance.now();
    const m = this.gw.metrics;
    if (this.stallTimer !== undefined) clearStall(this);
    if (this.guard !== undefined) { this.guard.upstreamInflight--; this.guard = undefined; }
    if (this.countedIp !== undefined) { this.gw.clientInflight.release(this.countedIp); this.countedIp = undefined; }
    if (this.failover !== undefined) this.failover.done(outcome, this.status);
    if (outcome === 'cancelled_before_forward') m.cancelledBeforeForward.inc();
    const model = ex.route.model;
    const up = ex.route.upstream || 'none';
    const arm = ex.labels.arm ?? '';
    m.inflight.dec();
    m.requests.labels(this.path, model, up, outcome, statusText(this.status), arm).inc();
    m.duration.labels(this.path, model, up, outcome, arm).observe((now - ex.startedAt) / 1000);
    if (ex.firstByteAt > 0) m.ttfb.labels(this.path, model, up, arm).observe((ex.firstByteAt - ex.startedAt) / 1000);
    // An upstream 5xx relayed as-is still means this instance is failing its users.
    if (outcome === 'ok') this.gw.health.record(this.status < 500);
    else if (outcome === 'local') this.gw.health.record(true);
    else if (outcome === 'upstream_error' || outcome === 'upstream_aborted' || outcome === 'error') this.gw.health.record(false);
    if (this.p.done.length) this.p.runDone(ex, outcome);
    this.rt.leave(this.ex);
  }
}

/**
 * The last look's wait: one turn of the event loop (setImmediate runs after the poll phase in
 * which the request was read), so input nghttp2 had already received from the same read, such as
 * an RST_STREAM right behind the request's DATA, has been processed. HTTP/1.1 needs a second
 * turn: libuv returns from a short read before it reads the EOF behind it, so a FIN sent with the
 * request is seen only at the next poll (which does not block while an immediate is pending).
 */
function lastLook(call: Call, turns: number): void {
  if (turns > 0) setImmediate(lastLook, call, turns - 1);
  else call.forwardNow();
}

const STATUS_TEXT: string[] = [];
function statusText(s: number): string { return (STATUS_TEXT[s] ??= String(s)); }
