/**
 * Compiled pipelines: the ordered steps of every policy that matches a (route, model), built
 * once per load, and the runner that drives them per request.
 *
 * A step's `when` is evaluated once, right before its `request` phase (so it sees routing done
 * by earlier steps); the result is kept as a bit in the exchange's mask, and later phases
 * (forwarding, responseHeaders, responseEvent, done) run only for steps that were active.
 *
 * Over 250 lines on purpose: one runner for every phase, which share the step masks and the
 * failure report (log, metric, coded error); the checks they call live in reply-check.ts.
 */
import { GatewayError } from './errors.ts';
import type { GatewayExchange } from './exchange.ts';
import type { Predicate } from './conditions.ts';
import type { IncomingHttpHeaders } from 'node:http';
import type { Counter } from 'prom-client';
import { badReply, badWrittenHeaders } from './reply-check.ts';
import { stepOrigin } from './plugin-context.ts';
import type { LocalReply, Logger, OutboundRequest, Outcome, Step, StepResult } from './types.ts';

export interface CompiledStep {
  /** Position in this pipeline (bit in the exchange's mask). */
  readonly index: number;
  readonly use: string;
  readonly name: string;
  /** `file:line` of the step, for logs and `explain`. */
  readonly where: string;
  readonly policy: string;
  readonly when: Predicate | undefined;
  readonly whenSource: unknown;
  readonly step: Step;
}

export const MAX_STEPS = 31;

/**
 * A watcher of the request phase (`explain`'s dry run): given to `run`, the production loop
 * reports each step to it. Absent (production), the loop pays one `undefined` check per step.
 */
export interface PipelineTrace {
  /**
   * Step `s` is reached; `held` is its `when` (null: it has none). Return false to skip its
   * request phase: the tracer stood in for it (`explain --claims` does this for `auth`).
   */
  step(s: CompiledStep, ex: GatewayExchange, held: boolean | null): boolean;
  /** The step's request phase returned (a local reply, or undefined to continue), or threw (`failed`). */
  result(s: CompiledStep, reply: LocalReply | undefined, failed: boolean): void;
}

/** Options of a pipeline beyond its steps (the runtime passes both; tests and benches may not). */
export interface PipelineOptions {
  /** Longest a `request` phase's promise may take (`server.stepTimeoutMs`). Default 5000. */
  readonly stepTimeoutMs?: number;
  /** `ghostgate_plugin_failures_total`: counted on failure paths only. */
  readonly failures?: Counter<'plugin' | 'phase' | 'reason'>;
}

export class CompiledPipeline {
  readonly steps: readonly CompiledStep[];
  readonly forwarding: readonly CompiledStep[];
  readonly responseHeaders: readonly CompiledStep[];
  readonly responseEvent: readonly CompiledStep[];
  readonly done: readonly CompiledStep[];
  readonly log: Logger;
  readonly stepTimeoutMs: number;
  readonly failures: Counter<'plugin' | 'phase' | 'reason'> | undefined;
  /**
   * Bit i set = `ex.responseHeaders` and `ex.upstreamHeaders` are checked when step i's `request`,
   * `forwarding` or `responseHeaders` phase returns (badWrittenHeaders): all but built-in
   * plugins' steps (`set-headers` checks at load).
   */
  readonly #checkHeaders: number;
  /** A plugin's (not built-in) `forwarding` phase runs: `out` is frozen for it (runForwarding). */
  readonly #freezeOut: boolean;

  constructor(steps: readonly CompiledStep[], log: Logger, options: PipelineOptions = {}) {
    this.stepTimeoutMs = options.stepTimeoutMs ?? 5_000;
    this.failures = options.failures;
    if (steps.length > MAX_STEPS) throw new Error(`a pipeline has ${steps.length} steps; at most ${MAX_STEPS} are supported`);
    this.steps = steps;
    this.forwarding = steps.filter((s) => s.step.forwarding);
    this.responseHeaders = steps.filter((s) => s.step.responseHeaders);
    this.responseEvent = steps.filter((s) => s.step.responseEvent);
    this.done = steps.filter((s) => s.step.done);
    this.log = log;
    let check = 0;
    for (const s of steps) if (stepOrigin(s.step)?.file !== 'built-in') check |= 1 << s.index;
    this.#checkHeaders = check;
    this.#freezeOut = this.forwarding.some((s) => (check & (1 << s.index)) !== 0);
  }

  /** Whether the relay must parse SSE events (only if some step asked for them). */
  get wantsEvents(): boolean { return this.responseEvent.length > 0; }

  /**
   * Run the request phases in order. Synchronous unless a step returns a promise (then the rest
   * continues asynchronously). Returns a LocalReply if a step answered locally.
   */
  run(ex: GatewayExchange, trace?: PipelineTrace): LocalReply | undefined | Promise<LocalReply | undefined> {
    return this.#runFrom(ex, 0, trace);
  }

  #runFrom(ex: GatewayExchange, from: number, trace: PipelineTrace | undefined): LocalReply | undefined | Promise<LocalReply | undefined> {
    const steps = this.steps;
    for (let i = from; i < steps.length; i++) {
      const s = steps[i]!;
      if (s.when !== undefined && !s.when(ex.facts)) {
        if (trace !== undefined) trace.step(s, ex, false);
        continue;
      }
      ex.activeSteps |= 1 << i;
      if (trace !== undefined && !trace.step(s, ex, s.when === undefined ? null : true)) continue;
      const fn = s.step.request;
      if (fn === undefined) continue;
      let r: StepResult | Promise<StepResult>;
      try {
        r = fn.call(s.step, ex);
      } catch (e) {
        if (trace !== undefined) trace.result(s, undefined, true);
        throw this.#stepError(s, e);
      }
      if (isPromise(r)) return this.#settle(ex, s, r, trace);
      // Headers the step wrote, checked here where it can be named, before anything is sent.
      const wrote = (this.#checkHeaders & (1 << i)) !== 0 ? badWrittenHeaders(ex) : undefined;
      if (wrote !== undefined) {
        if (trace !== undefined) trace.result(s, undefined, true);
        throw this.#stepFailed(s, 'bad_header', wrote, undefined);
      }
      if (r === undefined) {
        if (trace !== undefined) trace.result(s, undefined, false);
        continue;
      }
      // A reply (the rare path): check its shape here, where the step can be named.
      const bad = badReply(r);
      if (bad !== undefined) {
        if (trace !== undefined) trace.result(s, undefined, true);
        throw this.#stepFailed(s, 'bad_result', bad, undefined);
      }
      if (trace !== undefined) trace.result(s, r, false);
      return r;
    }
    return undefined;
  }

  /**
   * A step's `request` returned a promise: wait for it at most `stepTimeoutMs`, then go on with
   * the next step, answer its reply, or fail. Past the bound the request fails with
   * GW_ERR_POLICY_STEP_TIMEOUT and whatever the promise does later is ignored (no later step
   * runs for it). Costs one timer per async step; bench/pipeline-async-step.ts measures it.
   */
  #settle(ex: GatewayExchange, s: CompiledStep, r: Promise<StepResult>, trace: PipelineTrace | undefined): Promise<LocalReply | undefined> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        if (trace !== undefined) trace.result(s, undefined, true);
        reject(this.#stepFailed(s, 'timeout', `its promise did not settle within ${this.stepTimeoutMs} ms`, undefined));
      }, this.stepTimeoutMs);
      r.then(
        (v) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          const wrote = (this.#checkHeaders & (1 << s.index)) !== 0 ? badWrittenHeaders(ex) : undefined;
          if (wrote !== undefined) {
            if (trace !== undefined) trace.result(s, undefined, true);
            reject(this.#stepFailed(s, 'bad_header', `its promise resolved: ${wrote}`, undefined));
            return;
          }
          if (v === undefined) {
            if (trace !== undefined) trace.result(s, undefined, false);
            try { resolve(this.#runFrom(ex, s.index + 1, trace)); } catch (e) { reject(e); }
            return;
          }
          const bad = badReply(v);
          if (trace !== undefined) trace.result(s, bad === undefined ? v : undefined, bad !== undefined);
          if (bad === undefined) resolve(v);
          else reject(this.#stepFailed(s, 'bad_result', `its promise resolved: ${bad}`, undefined));
        },
        (e: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          if (trace !== undefined) trace.result(s, undefined, true);
          reject(this.#stepError(s, e));
        },
      );
    });
  }

  /**
   * The forwarding phases, right before the request goes upstream. Throws GW_ERR_POLICY_STEP_FAILED
   * (nothing sent) when a plugin's step left a header that cannot be sent in `ex.responseHeaders`
   * or `ex.upstreamHeaders` (the latter reach a later attempt on another deployment). `out` is
   * what is sent: frozen when a plugin's step sees it, so a write to it throws in the step (logged
   * and counted as the phase's failure) instead of going upstream unchecked.
   */
  runForwarding(ex: GatewayExchange, out: OutboundRequest): void {
    if (this.#freezeOut) { Object.freeze(out.headers); Object.freeze(out); }
    for (const s of this.forwarding) {
      if ((ex.activeSteps & (1 << s.index)) === 0) continue;
      try { s.step.forwarding!(ex, out); } catch (e) { this.#phaseFailed(s, 'forwarding', e); }
      if ((this.#checkHeaders & (1 << s.index)) !== 0) this.#checkWritten(ex, s, 'forwarding');
    }
  }

  /**
   * The responseHeaders phases: the upstream answered, nothing is sent to the client yet. Throws
   * GW_ERR_POLICY_STEP_FAILED when a plugin's step left a header that cannot be sent; the relay
   * then cancels the upstream stream and answers the coded 500 (core/request/relay.ts).
   */
  runResponseHeaders(ex: GatewayExchange, status: number, headers: IncomingHttpHeaders): void {
    for (const s of this.responseHeaders) {
      if ((ex.activeSteps & (1 << s.index)) === 0) continue;
      try { s.step.responseHeaders!(ex, status, headers); } catch (e) { this.#phaseFailed(s, 'responseHeaders', e); }
      if ((this.#checkHeaders & (1 << s.index)) !== 0) this.#checkWritten(ex, s, 'responseHeaders');
    }
  }

  /** The header check of a later phase: a bad header is the step's failure, named and coded. */
  #checkWritten(ex: GatewayExchange, s: CompiledStep, phase: 'forwarding' | 'responseHeaders'): void {
    const wrote = badWrittenHeaders(ex);
    if (wrote === undefined) return;
    this.#report(s, phase, 'bad_header', wrote, undefined);
    throw new GatewayError('GW_ERR_POLICY_STEP_FAILED', [s.name]);
  }

  runResponseEvent(ex: GatewayExchange, data: string): void {
    for (const s of this.responseEvent) {
      if ((ex.activeSteps & (1 << s.index)) === 0) continue;
      try { s.step.responseEvent!(ex, data); } catch (e) { this.#phaseFailed(s, 'responseEvent', e); }
    }
  }

  runDone(ex: GatewayExchange, outcome: Outcome): void {
    for (const s of this.done) {
      if ((ex.activeSteps & (1 << s.index)) === 0) continue;
      try { s.step.done!(ex, outcome); } catch (e) { this.#phaseFailed(s, 'done', e); }
    }
  }

  /** A `request` phase threw or rejected: a GatewayError is the step's answer, anything else a failure. */
  #stepError(s: CompiledStep, e: unknown): GatewayError {
    if (e instanceof GatewayError) return e;
    return this.#stepFailed(s, 'threw', errMsg(e), e);
  }

  /**
   * A `request` phase failed: log it for the plugin's author (the plugin, its file, the step's
   * file:line, why, the stack), count it, and give the client a coded error naming the step.
   */
  #stepFailed(s: CompiledStep, reason: 'threw' | 'bad_result' | 'bad_header' | 'timeout', why: string, e: unknown): GatewayError {
    this.#report(s, 'request', reason, why, e);
    return reason === 'timeout'
      ? new GatewayError('GW_ERR_POLICY_STEP_TIMEOUT', [s.name, this.stepTimeoutMs])
      : new GatewayError('GW_ERR_POLICY_STEP_FAILED', [s.name]);
  }

  /** A later phase threw: logged and counted; the request goes on. */
  #phaseFailed(s: CompiledStep, phase: string, e: unknown): void {
    this.#report(s, phase, 'threw', errMsg(e), e);
  }

  #report(s: CompiledStep, phase: string, reason: string, why: string, e: unknown): void {
    const o = stepOrigin(s.step);
    const plugin = o?.plugin ?? s.use;
    this.failures?.labels(plugin, phase, reason).inc();
    this.log.error({
      plugin, pluginFile: o?.file, step: s.where, phase, reason, err: why,
      ...(e instanceof Error && e.stack !== undefined ? { stack: e.stack } : {}),
    }, `policy step ${phase === 'request' ? 'failed' : `${phase} phase failed`}: plugin "${plugin}" (${o?.file ?? 'unknown file'}) at ${s.where}: ${why}`);
  }
}

function isPromise(v: unknown): v is Promise<StepResult> {
  return typeof (v as Promise<unknown>)?.then === 'function';
}
function errMsg(e: unknown): string { return e instanceof Error ? e.message : String(e); }
