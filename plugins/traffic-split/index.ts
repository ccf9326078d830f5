/**
 * traffic-split: serve one logical model from several deployments by weight, sticky per user.
 *
 * The user key is a fact (`stickyOn`, default `claims.sub`); requests without it fall back to
 * the request id (a fresh draw per request, not sticky). The choice is weighted rendezvous
 * hashing (core/sticky-hash.ts): a user keeps their deployment across reloads, and changing
 * weights moves only the share that must move (90/10 → 80/20 moves ≈10% of users, all from the
 * first target to the second). Target order in YAML does not matter.
 */
import { compileFactPath, compileWeightedPicker, definePlugin, factKey } from '../../core/plugin-api.ts';
import type { FactReader, FromSchema, JsonSchema } from '../../core/plugin-api.ts';

const FACT_PATH = '^[A-Za-z_][A-Za-z0-9_-]*(\\.[A-Za-z0-9_-]+)*$';

const paramsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['targets'],
  properties: {
    stickyOn: { type: 'string', pattern: FACT_PATH, maxLength: 256, default: 'claims.sub' },
    seed: { type: 'string', minLength: 1, maxLength: 256, default: 'traffic-split' },
    targets: {
      type: 'array',
      minItems: 1,
      maxItems: 64,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['upstream', 'weight'],
        properties: {
          upstream: { type: 'string', minLength: 1 },
          model: { type: 'string', minLength: 1, maxLength: 256 },
          weight: { type: 'number', minimum: 0 },
        },
      },
    },
  },
} as const satisfies JsonSchema;

/** The params after validation (defaults applied), derived from the schema. */
export type TrafficSplitParams = FromSchema<typeof paramsSchema>;
export type TrafficSplitTarget = TrafficSplitParams['targets'][number];

interface Target { upstream: string; model: string | undefined }

export default definePlugin<TrafficSplitParams>({
  name: 'traffic-split',
  description: 'Split a logical model across weighted deployments, sticky per user (rendezvous hashing).',
  paramsSchema,
  create(params, ctx) {
    let read: FactReader;
    try { read = compileFactPath(params.stickyOn); } catch (e) { throw ctx.error((e as Error).message, 'stickyOn'); }
    const seen = new Set<string>();
    let total = 0;
    const items = params.targets.map((t, i) => {
      if (!ctx.upstreamNames.has(t.upstream)) {
        throw ctx.error(`unknown upstream "${t.upstream}" (configured: ${[...ctx.upstreamNames].join(', ') || 'none'})`, `targets[${i}].upstream`);
      }
      const id = `${t.upstream}\0${t.model ?? ''}`;
      if (seen.has(id)) throw ctx.error(`target ${t.upstream}${t.model ? `/${t.model}` : ''} is listed twice`, `targets[${i}]`);
      seen.add(id);
      total += t.weight;
      const value: Target = Object.freeze({ upstream: t.upstream, model: t.model });
      return { id, weight: t.weight, value };
    });
    if (!(total > 0)) throw ctx.error('weights sum to zero: at least one target needs a positive weight', 'targets');
    const pick = compileWeightedPicker(params.seed, items);
    return {
      request: function trafficSplit(ex) {
        const t = pick(factKey(read(ex.facts)) ?? ex.id);
        ex.route.upstream = t.upstream;
        if (t.model !== undefined) ex.route.upstreamModel = t.model;
      },
    };
  },
});
