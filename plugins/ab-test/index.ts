/**
 * ab-test: a named experiment with sticky weighted arms. Each request gets one arm, chosen by
 * weighted rendezvous hashing of a user fact (`stickyOn`) seeded by the experiment name, so a
 * user keeps their arm across requests and reloads, experiments are independent of each other,
 * and changing weights moves only the users it must (see core/sticky-hash.ts).
 *
 * The arm is recorded as `route.arms[experiment]` (later steps' `when` can read
 * `route.arms.<experiment>`), as the metrics label `arm`, and as a response header
 * `<header>: <experiment>=<arm>`. An arm may change the upstream, the upstream model, and the
 * body (`set`/`remove` by JSON Pointer).
 */
import { compileFactPath, compileWeightedPicker, deepFreeze, definePlugin, factKey, isForbiddenKey, parsePointer } from '../../core/plugin-api.ts';
import type { FactReader, FromSchema, JsonSchema, JsonValue } from '../../core/plugin-api.ts';

const NAME = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' as const;
const RESERVED_HEADERS = new Set(['authorization', 'host', 'content-length', 'content-type', 'connection', 'transfer-encoding', 'te', 'upgrade', 'keep-alive', 'proxy-connection', 'set-cookie']);

const paramsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['experiment', 'arms'],
  properties: {
    experiment: { type: 'string', pattern: NAME },
    stickyOn: { type: 'string', minLength: 1, maxLength: 256, default: 'claims.sub' },
    header: { type: 'string', pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$', maxLength: 128, default: 'x-ghostgate-experiment' },
    arms: {
      type: 'array',
      minItems: 1,
      maxItems: 32,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'weight'],
        properties: {
          name: { type: 'string', pattern: NAME },
          weight: { type: 'number', minimum: 0 },
          upstream: { type: 'string', minLength: 1 },
          model: { type: 'string', minLength: 1, maxLength: 256 },
          set: { type: 'object', propertyNames: { pattern: '^/' } },
          remove: { type: 'array', items: { type: 'string', pattern: '^/' }, maxItems: 64 },
        },
      },
    },
  },
} as const satisfies JsonSchema;

/** The params after validation (defaults applied), derived from the schema. */
export type AbTestParams = FromSchema<typeof paramsSchema>;
export type AbTestArm = AbTestParams['arms'][number];

/** One arm, compiled: everything the request path does is precomputed. */
interface Arm {
  readonly name: string;
  readonly headerValue: string;
  readonly upstream: string | undefined;
  readonly model: string | undefined;
  readonly set: ReadonlyArray<readonly [string, JsonValue]>;
  readonly remove: readonly string[];
}

export default definePlugin<AbTestParams>({
  name: 'ab-test',
  description: 'A named experiment: sticky weighted arms that may change upstream, model or body.',
  paramsSchema,
  create(params, ctx) {
    const { experiment } = params;
    if (isForbiddenKey(experiment)) throw ctx.error(`"${experiment}" cannot be an experiment name`, 'experiment');
    let read: FactReader;
    try { read = compileFactPath(params.stickyOn); } catch (e) { throw ctx.error((e as Error).message, 'stickyOn'); }
    const header = params.header.toLowerCase();
    if (RESERVED_HEADERS.has(header)) throw ctx.error(`header "${header}" is managed by the gateway`, 'header');

    const names = new Set<string>();
    let total = 0;
    const items = params.arms.map((a, i) => {
      const at = `arms[${i}]`;
      if (isForbiddenKey(a.name)) throw ctx.error(`"${a.name}" cannot be an arm name`, `${at}.name`);
      if (names.has(a.name)) throw ctx.error(`arm "${a.name}" is listed twice`, `${at}.name`);
      names.add(a.name);
      if (a.upstream !== undefined && !ctx.upstreamNames.has(a.upstream)) {
        throw ctx.error(`unknown upstream "${a.upstream}" (configured: ${[...ctx.upstreamNames].join(', ') || 'none'})`, `${at}.upstream`);
      }
      const set = Object.entries(a.set ?? {}).map(([p, v]) => {
        try { if (parsePointer(p).length === 0) throw new Error('cannot replace the whole body'); } catch (e) { throw ctx.error((e as Error).message, `${at}.set.${p}`); }
        // Params come from YAML, so every value is JSON (the schema leaves it open: `unknown`).
        return [p, deepFreeze(v as JsonValue)] as const;
      });
      const remove = (a.remove ?? []).map((p, j) => {
        try { if (parsePointer(p).length === 0) throw new Error('cannot remove the whole body'); } catch (e) { throw ctx.error((e as Error).message, `${at}.remove[${j}]`); }
        return p;
      });
      total += a.weight;
      const arm: Arm = Object.freeze({ name: a.name, headerValue: `${experiment}=${a.name}`, upstream: a.upstream, model: a.model, set, remove });
      return { id: a.name, weight: a.weight, value: arm };
    });
    if (!(total > 0)) throw ctx.error('weights sum to zero: at least one arm needs a positive weight', 'arms');
    const pick = compileWeightedPicker(experiment, items);

    return {
      request: function abTest(ex) {
        const arm = pick(factKey(read(ex.facts)) ?? ex.id);
        ex.route.arms[experiment] = arm.name;
        ex.labels.arm = arm.name;
        const prev = ex.responseHeaders[header];
        ex.responseHeaders[header] = prev === undefined ? arm.headerValue : `${prev}, ${arm.headerValue}`;
        if (arm.upstream !== undefined) ex.route.upstream = arm.upstream;
        if (arm.model !== undefined) ex.route.upstreamModel = arm.model;
        for (let i = 0; i < arm.set.length; i++) ex.setBody(arm.set[i]![0], arm.set[i]![1]);
        for (let i = 0; i < arm.remove.length; i++) ex.removeBody(arm.remove[i]!);
      },
    };
  },
});
