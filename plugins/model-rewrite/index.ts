/**
 * model-rewrite: map the model a client asked for to another logical model, or straight to a
 * deployment (an upstream and the model name it knows). Sets `ex.route`; the core sends
 * `route.upstreamModel` upstream as the body's `model`.
 *
 * The requested name is looked up as the client wrote it (`body.model`) first, then as the
 * logical model it resolved to (`route.model`, aliases applied), so one entry can cover every
 * alias of a model. Every target is checked at load against the configured models/upstreams.
 */
import { definePlugin } from '../../core/plugin-api.ts';
import type { FromSchema, JsonSchema } from '../../core/plugin-api.ts';

/** A deployment target: the upstream and the model name sent to it. */


/** The precompiled route change for one map entry. `model` undefined: keep the logical model. */
interface Target {
  readonly model: string | undefined;
  readonly upstream: string;
  readonly upstreamModel: string;
}

/**
 * `map`: requested model → logical model name, or a deployment `{ upstream, model }`.
 */
const paramsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['map'],
  properties: {
    map: {
      type: 'object',
      minProperties: 1,
      propertyNames: { minLength: 1, maxLength: 256 },
      additionalProperties: {
        oneOf: [
          { type: 'string', minLength: 1, maxLength: 256 },
          {
            type: 'object',
            additionalProperties: false,
            required: ['upstream', 'model'],
            properties: {
              upstream: { type: 'string', minLength: 1 },
              model: { type: 'string', minLength: 1, maxLength: 256 },
            },
          },
        ],
      },
    },
  },
} as const satisfies JsonSchema;

/** The params after validation (defaults applied), derived from the schema. */
export type ModelRewriteParams = FromSchema<typeof paramsSchema>;
export type DeploymentTarget = Exclude<ModelRewriteParams['map'][string], string>;

export default definePlugin<ModelRewriteParams>({
  name: 'model-rewrite',
  description: 'Map the requested model to a logical model or to a deployment (upstream + upstream model name).',
  paramsSchema,
  create(params, ctx) {
    const table = new Map<string, Target>();
    for (const [requested, to] of Object.entries(params.map)) {
      if (typeof to === 'string') {
        const def = ctx.models.get(to);
        if (!def) {
          throw ctx.error(`"${to}" is not a configured model (known: ${[...ctx.models.keys()].join(', ') || 'none'})`, `map.${requested}`);
        }
        // `to` may be an alias: the route names the logical model it stands for.
        table.set(requested, Object.freeze({ model: def.model, upstream: def.upstream, upstreamModel: def.upstreamModel }));
      } else {
        if (!ctx.upstreamNames.has(to.upstream)) {
          throw ctx.error(`"${to.upstream}" is not a configured upstream (known: ${[...ctx.upstreamNames].join(', ') || 'none'})`, `map.${requested}.upstream`);
        }
        table.set(requested, Object.freeze({ model: undefined, upstream: to.upstream, upstreamModel: to.model }));
      }
    }
    return {
      request: function modelRewrite(ex) {
        const requested = ex.facts.body.model;
        const t = (typeof requested === 'string' ? table.get(requested) : undefined) ?? table.get(ex.route.model);
        if (t === undefined) return;
        const route = ex.route;
        if (t.model !== undefined) route.model = t.model;
        route.upstream = t.upstream;
        route.upstreamModel = t.upstreamModel;
      },
    };
  },
});
