/**
 * mirror: send a sampled, read-only copy of the final upstream request to a shadow upstream,
 * and record shadow vs primary latency and outcome side by side.
 *
 * - Runs in `forwarding`, so the copy is exactly what the primary upstream receives (after every
 *   body edit), minus credentials (the shadow's client adds the shadow's own).
 * - The client never waits for the shadow and never sees its errors: `forwarding` starts the
 *   copy and returns; the shadow's response is drained and only measured.
 * - Bounded: at most `maxConcurrent` copies in flight per shadow upstream (the counter lives in
 *   `ctx.shared`, so it survives reloads); beyond that copies are dropped and counted.
 * - Cancelled with its primary: when the exchange's signal fires (client gone, superseded), the
 *   shadow stream is reset too, so no shadow inference is wasted. When the primary completes
 *   normally (or fails upstream) the shadow runs to its end, bounded by `timeoutMs`.
 * - Sampling is deterministic per request id (a hash, not Math.random): a retried request with
 *   the same id gets the same decision, and a 5% mirror samples a subset of a 10% one.
 */
import { performance } from 'node:perf_hooks';
import { finished } from 'node:stream/promises';
import { Counter, definePlugin, Histogram, seedState, stickyUnit } from '../../core/plugin-api.ts';
import type { Exchange, FromSchema, JsonSchema, OutboundRequest, Outcome, Registry, UpstreamClient } from '../../core/plugin-api.ts';


/**
 * - `upstream`: the shadow upstream (a name from `gateway.config.yaml`).
 * - `percent`: share of requests copied, 0–100 (100).
 * - `maxConcurrent`: most copies in flight to this shadow upstream at once; more are dropped (16).
 * - `timeoutMs`: whole-copy budget (send → last byte), ms; then the shadow stream is reset (30 000).
 */
const paramsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['upstream'],
  properties: {
    upstream: { type: 'string', minLength: 1 },
    percent: { type: 'number', minimum: 0, maximum: 100, default: 100 },
    maxConcurrent: { type: 'integer', minimum: 1, maximum: 10_000, default: 16 },
    timeoutMs: { type: 'integer', minimum: 1, maximum: 600_000, default: 30_000 },
  },
} as const satisfies JsonSchema;

/** The params after validation (defaults applied), derived from the schema. */
export type MirrorParams = FromSchema<typeof paramsSchema>;

/** Request headers never copied to the shadow (credentials of the primary, hop-by-hop). */
const STRIPPED = new Set(['authorization', 'proxy-authorization', 'api-key', 'x-api-key', 'cookie', 'content-length', 'connection', 'keep-alive', 'transfer-encoding', 'te', 'upgrade', 'host']);
/** Marks the copy, so the shadow (and its logs) can tell it is not a real client request. */
export const MIRROR_HEADER = 'x-ghostgate-mirror';

export type MirrorOutcome = 'ok' | 'error' | 'timeout' | 'dropped' | 'cancelled';

const TTFB_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30];
const DURATION_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 8, 13, 21, 34, 60];

export interface MirrorMetrics {
  /** Copies by shadow outcome, and their primaries by outcome (side="primary"), per upstream. */
  requests: Counter<'side' | 'upstream' | 'outcome'>;
  /** Time from forwarding to the first response body byte (first token when streaming), both sides. */
  ttfb: Histogram<'side' | 'upstream'>;
  /** Time to the last byte, both sides (only complete responses). */
  duration: Histogram<'side' | 'upstream'>;
}

/** Get or register the mirror metrics on `reg` (a reload re-creates steps, not metrics). */
export function mirrorMetrics(reg: Registry): MirrorMetrics {
  const get = <T>(name: string, make: () => T): T => (reg.getSingleMetric(name) as T | undefined) ?? make();
  return {
    requests: get('ghostgate_mirror_requests_total', () => new Counter({
      name: 'ghostgate_mirror_requests_total',
      help: 'Mirrored requests: shadow copies by outcome (ok, error, timeout, dropped, cancelled), and their primaries (side="primary").',
      labelNames: ['side', 'upstream', 'outcome'] as const, registers: [reg],
    })),
    ttfb: get('ghostgate_mirror_ttfb_seconds', () => new Histogram({
      name: 'ghostgate_mirror_ttfb_seconds',
      help: 'Time from forwarding to the first response body byte for mirrored requests, shadow vs primary.',
      labelNames: ['side', 'upstream'] as const, buckets: TTFB_BUCKETS, registers: [reg],
    })),
    duration: get('ghostgate_mirror_duration_seconds', () => new Histogram({
      name: 'ghostgate_mirror_duration_seconds',
      help: 'Time from forwarding to the last response byte for mirrored requests, shadow vs primary.',
      labelNames: ['side', 'upstream'] as const, buckets: DURATION_BUCKETS, registers: [reg],
    })),
  };
}

/** Copies in flight to one shadow upstream, shared by all mirror steps and across reloads. */
interface InFlight { n: number }

/** The primary's side of one mirrored exchange. */
interface Pair {
  readonly t0: number;
  readonly primaryUpstream: string;
  readonly controller: AbortController;
  readonly onPrimaryAbort: () => void;
}

const primaryOutcome = (o: Outcome): 'ok' | 'error' | 'cancelled' =>
  o === 'ok' ? 'ok' : o === 'client_cancelled' || o === 'superseded' || o === 'cancelled_before_forward' ? 'cancelled' : 'error';
const isCancel = (o: Outcome): boolean => primaryOutcome(o) === 'cancelled';

export default definePlugin<MirrorParams>({
  name: 'mirror',
  description: 'Copy a sample of final upstream requests to a shadow upstream; compare latency and outcome.',
  paramsSchema,
  create(params, ctx) {
    const { upstream, maxConcurrent, timeoutMs } = params;
    if (!ctx.upstreamNames.has(upstream)) {
      throw ctx.error(`unknown upstream "${upstream}" (configured: ${[...ctx.upstreamNames].join(', ') || 'none'})`, 'upstream');
    }
    const client: UpstreamClient = ctx.upstream(upstream);
    const fraction = params.percent / 100;
    const state = seedState('mirror');
    const sampled: (id: string) => boolean = fraction >= 1 ? () => true
      : fraction <= 0 ? () => false
      : (id) => stickyUnit(state, id) < fraction;
    const inFlight = ctx.shared<InFlight>(`inflight:${upstream}`, () => ({ n: 0 }));
    const m = mirrorMetrics(ctx.metrics);
    const shadowCount = (o: MirrorOutcome): void => m.requests.inc({ side: 'shadow', upstream, outcome: o });
    const pairs = new WeakMap<Exchange, Pair>();

    async function runShadow(out: OutboundRequest, pair: Pair): Promise<void> {
      const { controller, t0 } = pair;
      const timer = setTimeout(() => controller.abort('timeout'), timeoutMs);
      timer.unref();
      let outcome: MirrorOutcome = 'error';
      try {
        const headers: Record<string, string> = { [MIRROR_HEADER]: '1' };
        for (const k in out.headers) if (!STRIPPED.has(k)) headers[k] = out.headers[k]!;
        const res = await client.send({ path: out.path, headers, body: out.body, signal: controller.signal });
        res.body.once('data', () => m.ttfb.observe({ side: 'shadow', upstream }, (performance.now() - t0) / 1000));
        res.body.resume();
        await finished(res.body);
        if (controller.signal.aborted) throw new Error('aborted');
        // 'end' alone is no proof on h2 (a dying session ends its streams): ask the client.
        outcome = res.status >= 200 && res.status < 300 && res.complete() ? 'ok' : 'error';
        if (outcome === 'ok') m.duration.observe({ side: 'shadow', upstream }, (performance.now() - t0) / 1000);
      } catch {
        const why = controller.signal.reason;
        outcome = !controller.signal.aborted ? 'error' : why === 'timeout' ? 'timeout' : 'cancelled';
      } finally {
        clearTimeout(timer);
        inFlight.n--;
        shadowCount(outcome);
      }
    }

    return {
      forwarding: function mirror(ex, out) {
        if (!sampled(ex.id) || ex.signal.aborted) return;
        if (inFlight.n >= maxConcurrent) { shadowCount('dropped'); return; }
        inFlight.n++;
        const controller = new AbortController();
        const onPrimaryAbort = (): void => controller.abort('primary-cancelled');
        const pair: Pair = { t0: performance.now(), primaryUpstream: out.upstream, controller, onPrimaryAbort };
        ex.signal.addEventListener('abort', onPrimaryAbort, { once: true });
        pairs.set(ex, pair);
        void runShadow(out, pair);
      },
      done: function mirrorPrimaryDone(ex, outcome) {
        const pair = pairs.get(ex);
        if (pair === undefined) return;
        pairs.delete(ex);
        ex.signal.removeEventListener('abort', pair.onPrimaryAbort);
        if (isCancel(outcome)) pair.controller.abort('primary-cancelled');
        const up = pair.primaryUpstream;
        // The core stamps the primary's first relayed body byte on its exchange.
        const firstByteAt = ex.firstByteAt;
        if (firstByteAt > pair.t0) m.ttfb.observe({ side: 'primary', upstream: up }, (firstByteAt - pair.t0) / 1000);
        if (outcome === 'ok') m.duration.observe({ side: 'primary', upstream: up }, (performance.now() - pair.t0) / 1000);
        m.requests.inc({ side: 'primary', upstream: up, outcome: primaryOutcome(outcome) });
      },
    };
  },
});
