/**
 * supersede: when a client starts a new completion for the same document (a key from a header
 * or a body field) while an older one from the same identity is still in flight, cancel the
 * older one at once (`GW_ERR_POLICY_SUPERSEDED`): its upstream stream is reset, so no GPU time
 * is spent on a completion nobody will read.
 *
 * The check runs in `forwarding`, i.e. only once the newer request has passed every other step
 * and is really going upstream: a newer request that is rejected (rate limit, auth) never
 * cancels a good one. In-flight requests are tracked in a Map kept in `ctx.shared`, so a reload
 * does not lose track of requests started under the previous config. The key is
 * (identity, request path, document key); the entry is removed in `done` only if it still
 * points at that exchange. Memory is bounded by `maxEntries` (oldest entries are forgotten, not
 * cancelled).
 *
 * With a shared store (`store.redis`), the process claims the key in the store, without
 * waiting: the store tells the process holding the previous claim (any worker, any instance),
 * which cancels its request for that key the same way. A request superseded in this process is
 * cancelled at once, as without a store; the store only adds the other processes (fail open
 * when it is down).
 *
 * A process claims a key once and then holds it: its next requests for the key claim nothing
 * (a typing user's requests for one document cost the store nothing), until another process
 * claims the key (the store tells this one, which cancels its request in flight for the key, if
 * any, and claims again at its next request), the store comes back after being down (its table
 * may be gone), or half the store's claim TTL has passed (the claim is renewed before it
 * expires). The price: when requests for one document start on two instances within the time
 * the store's message takes to arrive (a round trip to Redis), the one on the instance told
 * first is cancelled, even if it started a moment later. An editor sends a document's requests
 * one after another, so this needs two connections racing; each is still told of the other.
 */
import { performance } from 'node:perf_hooks';
import { compileFactPath, Counter, definePlugin, factKey, getAt, parsePointer } from '../../core/plugin-api.ts';
import type { Exchange, FactReader, Facts, FromSchema, JsonSchema, Registry } from '../../core/plugin-api.ts';

/**
 * - `keyFrom`: where the document/cursor key comes from (`header`: a request header, lower-cased,
 *   listed in `facts.headers`; `bodyPointer`: a JSON Pointer into the body as the client sent it);
 *   the header wins when both are set and present.
 * - `identity`: fact path of the identity (`claims.sub`; missing → `request.ip`).
 * - `maxEntries`: most in-flight requests tracked at once, all supersede steps together (100 000).
 * - `maxKeyLength`: keys longer than this (characters) are ignored: the request is untouched (2048).
 */
const paramsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['keyFrom'],
  properties: {
    keyFrom: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      properties: {
        header: { type: 'string', pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$', maxLength: 128 },
        bodyPointer: { type: 'string', pattern: '^/', maxLength: 512 },
      },
    },
    identity: { type: 'string', minLength: 1, maxLength: 256, default: 'claims.sub' },
    maxEntries: { type: 'integer', minimum: 1, maximum: 10_000_000, default: 100_000 },
    maxKeyLength: { type: 'integer', minimum: 1, maximum: 65_536, default: 2048 },
  },
} as const satisfies JsonSchema;

/** The params after validation (defaults applied), derived from the schema. */
export type SupersedeParams = FromSchema<typeof paramsSchema>;

const METRIC = 'ghostgate_superseded_total';

/** A key this process holds in the shared store: the token of its last claim, when, and the store's epoch then. */
interface HeldKey { readonly token: string; readonly at: number; readonly epoch: number }

/** The in-flight table, shared by every supersede step and kept across reloads. */
export interface SupersedeTable {
  readonly byKey: Map<string, Exchange>;
  /** The key each tracked exchange was stored under (for `done`). */
  readonly keyOf: WeakMap<Exchange, string>;
  /** With a shared store: the keys this process holds there (oldest claim first), and each token's key. */
  readonly held: Map<string, HeldKey>;
  readonly keyOfToken: Map<string, string>;
}

function supersededCounter(metrics: Registry): Counter {
  return (metrics.getSingleMetric(METRIC) as Counter | undefined)
    ?? new Counter({ name: METRIC, help: 'In-flight requests cancelled by a newer request for the same document (supersede).', registers: [metrics] });
}

export default definePlugin<SupersedeParams>({
  name: 'supersede',
  description: 'Cancel an in-flight completion when the same user starts a newer one for the same document.',
  paramsSchema,
  create(params, ctx) {
    let identity: FactReader;
    try { identity = compileFactPath(params.identity); } catch (e) { throw ctx.error((e as Error).message, 'identity'); }
    const header = params.keyFrom.header?.toLowerCase();
    let segs: readonly string[] | undefined;
    if (params.keyFrom.bodyPointer !== undefined) {
      try { segs = parsePointer(params.keyFrom.bodyPointer); } catch (e) { throw ctx.error((e as Error).message, 'keyFrom.bodyPointer'); }
      if (segs.length === 0) throw ctx.error('must point inside the body, not at the whole body', 'keyFrom.bodyPointer');
    }
    const { maxEntries, maxKeyLength } = params;
    const store = ctx.store;
    const table = ctx.shared<SupersedeTable>('inflight', () => {
      const t: SupersedeTable = { byKey: new Map(), keyOf: new WeakMap(), held: new Map(), keyOfToken: new Map() };
      // Once per gateway (the table outlives reloads): a claim elsewhere took a key we held.
      // Whatever request of ours is in flight for it is older than that claim (up to the
      // message's own delay): cancel it; the next request for the key claims again.
      store?.onSuperseded((token) => {
        const key = t.keyOfToken.get(token);
        if (key === undefined) return;
        t.keyOfToken.delete(token);
        if (t.held.get(key)?.token === token) t.held.delete(key);
        const ex = t.byKey.get(key);
        if (ex === undefined || ex.signal.aborted) return;
        ex.cancel('GW_ERR_POLICY_SUPERSEDED');
        supersededCounter(ctx.metrics).inc();
      });
      return t;
    });
    const superseded = supersededCounter(ctx.metrics);

    const docKey = (f: Facts): string | undefined => {
      let k: string | undefined;
      if (header !== undefined) k = f.request.headers[header];
      if ((k === undefined || k === '') && segs !== undefined) k = factKey(getAt(f.body, segs));
      return k === undefined || k === '' || k.length > maxKeyLength ? undefined : k;
    };

    /**
     * Claim `key` unless this process holds it: claimed before, not taken since by a claim
     * elsewhere, within half the store's claim TTL, and in the store's current epoch (a claim
     * made while the store was down, or before Redis restarted, may not be there).
     */
    const claimIfNotHeld = (key: string): void => {
      const { held, keyOfToken } = table;
      const now = performance.now();
      const h = held.get(key);
      if (h !== undefined) {
        if (now - h.at < store!.claimTtlMs / 2 && h.epoch === store!.epoch) return;
        held.delete(key);
        keyOfToken.delete(h.token);
      } else if (held.size >= maxEntries) {
        const [oldest, o] = held.entries().next().value!; // forgotten: the next request for it claims again
        held.delete(oldest);
        keyOfToken.delete(o.token);
      }
      const token = store!.newToken();
      held.set(key, { token, at: now, epoch: store!.epoch });
      keyOfToken.set(token, key);
      store!.claim(key, token);
    };

    return {
      forwarding: function supersede(ex) {
        const doc = docKey(ex.facts);
        if (doc === undefined) return;
        const who = factKey(identity(ex.facts)) ?? ex.facts.request.ip;
        const key = `${who}\0${ex.facts.request.path}\0${doc}`;
        const { byKey } = table;
        const older = byKey.get(key);
        if (older !== undefined) {
          byKey.delete(key); // re-insert below: Map order is then oldest-first for eviction
          if (older !== ex && !older.signal.aborted) {
            older.cancel('GW_ERR_POLICY_SUPERSEDED');
            superseded.inc();
          }
        } else if (byKey.size >= maxEntries) {
          byKey.delete(byKey.keys().next().value as string); // forget the oldest; it is not cancelled
        }
        byKey.set(key, ex);
        table.keyOf.set(ex, key);
        if (store !== undefined) claimIfNotHeld(key);
      },
      done: function supersedeDone(ex) {
        const key = table.keyOf.get(ex);
        if (key === undefined) return;
        table.keyOf.delete(ex);
        if (table.byKey.get(key) === ex) table.byKey.delete(key);
        // The key stays held, here and in the store (no release: the next request for it claims
        // nothing); a claim elsewhere that names it then finds no request in flight here.
      },
    };
  },
});
