/**
 * strip-params: remove fields from the request body by JSON Pointer (RFC 6901), at any depth and
 * inside arrays. The talk's poison-pill parameter: a field some client sends that crashes the
 * model is removed before the request goes upstream.
 *
 * Every pointer refers to the body as the client sent it: removals are applied from the highest
 * array index down, so `[/stop/0, /stop/1]` removes the first two entries of `stop`, not the
 * first and the third.
 */
import { definePlugin, parsePointer } from '../../core/plugin-api.ts';
import type { ParsedPointer, FromSchema, JsonSchema } from '../../core/plugin-api.ts';


/**
 * `remove`: JSON Pointers of the body fields to remove (`/logprobs`, `/extra/debug`, `/stop/0`).
 */
const paramsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['remove'],
  properties: {
    remove: {
      type: 'array',
      minItems: 1,
      maxItems: 256,
      uniqueItems: true,
      items: { type: 'string', minLength: 2, maxLength: 1024, pattern: '^/' },
    },
  },
} as const satisfies JsonSchema;

/** The params after validation (defaults applied), derived from the schema. */
export type StripParamsParams = FromSchema<typeof paramsSchema>;

export default definePlugin<StripParamsParams>({
  name: 'strip-params',
  description: 'Remove fields from the request body by JSON Pointer (deep, arrays too).',
  paramsSchema,
  create(params, ctx) {
    const parsed: Array<{ ptr: string; segs: ParsedPointer }> = [];
    params.remove.forEach((ptr, i) => {
      let segs: ParsedPointer;
      try { segs = parsePointer(ptr); } catch (e) { throw ctx.error((e as Error).message, `remove[${i}]`); }
      parsed.push({ ptr, segs });
    });
    // Highest array index first, so earlier removals never shift the indices of later ones.
    const remove: readonly string[] = parsed.sort((a, b) => comparePointersDescending(a.segs, b.segs)).map((p) => p.ptr);
    const n = remove.length;
    return {
      request: function stripParams(ex) {
        for (let i = 0; i < n; i++) ex.removeBody(remove[i]!);
      },
    };
  },
});

const INDEX = /^(0|[1-9]\d*)$/;

/**
 * Order pointers so that, among pointers through the same array, higher indices come first
 * (segments compared numerically when both are indices, as strings otherwise).
 */
function comparePointersDescending(a: ParsedPointer, b: ParsedPointer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i]!, y = b[i]!;
    if (x === y) continue;
    if (INDEX.test(x) && INDEX.test(y)) return Number(y) - Number(x);
    return x < y ? 1 : -1;
  }
  return b.length - a.length;
}
