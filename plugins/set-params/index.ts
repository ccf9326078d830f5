/**
 * set-params: set fields in the request body by JSON Pointer (RFC 6901), at any depth and inside
 * arrays (`/stop/-` appends). Missing objects on the way are created. With `onlyIfAbsent`, a
 * field the client sent is kept (a default rather than an override).
 *
 * Values come from config and are deep-frozen at load, so every request shares them safely: the
 * exchange's copy-on-write edits copy a container before changing it.
 */
import { deepFreeze, definePlugin, getAt, parsePointer } from '../../core/plugin-api.ts';
import type { JsonValue, ParsedPointer, FromSchema, JsonSchema } from '../../core/plugin-api.ts';


/**
 * `set`: JSON Pointer → value to set there (any JSON value).
 * `onlyIfAbsent`: set a field only when the client sent none (absent or `null`). Default false.
 */
const paramsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['set'],
  properties: {
    set: {
      type: 'object',
      minProperties: 1,
      maxProperties: 256,
      propertyNames: { minLength: 2, maxLength: 1024, pattern: '^/' },
    },
    onlyIfAbsent: { type: 'boolean', default: false },
  },
} as const satisfies JsonSchema;

/** The params after validation (defaults applied), derived from the schema. */
export type SetParamsParams = FromSchema<typeof paramsSchema>;

export default definePlugin<SetParamsParams>({
  name: 'set-params',
  description: 'Set fields in the request body by JSON Pointer (deep, arrays too), optionally only if absent.',
  paramsSchema,
  create(params, ctx) {
    const ptrs: string[] = [];
    const segs: ParsedPointer[] = [];
    const values: JsonValue[] = [];
    for (const [ptr, value] of Object.entries(params.set)) {
      let s: ParsedPointer;
      try { s = parsePointer(ptr); } catch (e) { throw ctx.error((e as Error).message, `set.${ptr}`); }
      if (params.onlyIfAbsent && s[s.length - 1] === '-') {
        throw ctx.error('"-" (append) is never present, so onlyIfAbsent has no effect on it; drop onlyIfAbsent or use an index', `set.${ptr}`);
      }
      ptrs.push(ptr);
      segs.push(s);
      values.push(deepFreeze(value as JsonValue)); // from YAML: a JSON value (`unknown` in the schema)
    }
    const n = ptrs.length;
    if (!params.onlyIfAbsent) {
      return {
        request: function setParams(ex) {
          for (let i = 0; i < n; i++) ex.setBody(ptrs[i]!, values[i]!);
        },
      };
    }
    return {
      request: function setParamsIfAbsent(ex) {
        for (let i = 0; i < n; i++) {
          const cur = getAt(ex.body, segs[i]!);
          if (cur === undefined || cur === null) ex.setBody(ptrs[i]!, values[i]!);
        }
      },
    };
  },
});
