/**
 * Compiled pipelines: the ordered steps of every policy that matches a (route, model), built
 * once per load, and the runner that drives them per request.
 *
 * A step's `when` is evaluated once, right before its `request` phase (so it sees routing done
 * by earlier steps); the result is kept as a bit in the exchange's mask, and later phases
 * (forwarding, responseHeaders, responseEvent, done) run only for steps that were active.
 */
import { GatewayError } from './errors.ts';
import type { GatewayExchange } from './exchange.ts';
import type { Predicate } from './conditions.ts';
import type { IncomingHttpHeaders } from 'node:http';
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

export class CompiledPipeline {
  readonly steps: readonly CompiledStep[];
  readonly forwarding: readonly CompiledStep[];
  readonly responseHeaders: readonly CompiledStep[];
  readonly responseEvent: readonly CompiledStep[];
  readonly done: readonly CompiledStep[];
  readonly log: Logger;

  constructor(steps: readonly CompiledStep[], log: Logger) {
    if (steps.length > MAX_STEPS) throw new Error(`a pipeline has ${steps.length} steps; at most ${MAX_STEPS} are supported`);
    this.steps = steps;
    this.forwarding = steps.filter((s) => s.step.forwarding);
    this.responseHeaders = steps.filter((s) => s.step.responseHeaders);
    this.responseEvent = steps.filter((s) => s.step.responseEvent);
    this.done = steps.filter((s) => s.step.done);
    this.log = log;
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
      if (r === undefined) {
        if (trace !== undefined) trace.result(s, undefined, false);
        continue;
      }
      if (isPromise(r)) {
        return r.then(
          (v) => {
            if (trace !== undefined) trace.result(s, v as LocalReply | undefined, false);
            return v === undefined ? this.#runFrom(ex, i + 1, trace) : v;
          },
          (e: unknown) => {
            if (trace !== undefined) trace.result(s, undefined, true);
            throw this.#stepError(s, e);
          },
        );
      }
      if (trace !== undefined) trace.result(s, r, false);
      return r;
    }
    return undefined;
  }

  runForwarding(ex: GatewayExchange, out: OutboundRequest): void {
    for (const s of this.forwarding) {
      if ((ex.activeSteps & (1 << s.index)) === 0) continue;
      try { s.step.forwarding!(ex, out); } catch (e) { this.log.error({ err: errMsg(e), step: s.where }, 'forwarding phase failed'); }
    }
  }

  runResponseHeaders(ex: GatewayExchange, status: number, headers: IncomingHttpHeaders): void {
    for (const s of this.responseHeaders) {
      if ((ex.activeSteps & (1 << s.index)) === 0) continue;
      try { s.step.responseHeaders!(ex, status, headers); } catch (e) { this.log.error({ err: errMsg(e), step: s.where }, 'responseHeaders phase failed'); }
    }
  }

  runResponseEvent(ex: GatewayExchange, data: string): void {
    for (const s of this.responseEvent) {
      if ((ex.activeSteps & (1 << s.index)) === 0) continue;
      try { s.step.responseEvent!(ex, data); } catch (e) { this.log.error({ err: errMsg(e), step: s.where }, 'responseEvent phase failed'); }
    }
  }

  runDone(ex: GatewayExchange, outcome: Outcome): void {
    for (const s of this.done) {
      if ((ex.activeSteps & (1 << s.index)) === 0) continue;
      try { s.step.done!(ex, outcome); } catch (e) { this.log.error({ err: errMsg(e), step: s.where }, 'done phase failed'); }
    }
  }

  #stepError(s: CompiledStep, e: unknown): GatewayError {
    if (e instanceof GatewayError) return e;
    this.log.error({ err: errMsg(e), step: s.where }, 'policy step threw');
    return new GatewayError('GW_ERR_POLICY_STEP_FAILED', [s.name]);
  }
}

function isPromise(v: unknown): v is Promise<StepResult> {
  return typeof (v as Promise<unknown>)?.then === 'function';
}
function errMsg(e: unknown): string { return e instanceof Error ? e.message : String(e); }
