/**
 * logit-bias: add token biases to the request's `logit_bias` (token id → bias), merged with the
 * client's own under a declared rule, every value clamped to the API's range [-100, 100]. The
 * talk's model that kept emitting an end-of-file token: `bias: { "50256": -100 }`.
 *
 * A client `logit_bias` that is not an object of finite numbers (an array, a string, a value that
 * is not a number) is replaced by the policy's bias: the policy's bias is there to keep the model
 * usable, and the upstream would reject the malformed value anyway.
 */
import { definePlugin } from '../../core/plugin-api.ts';
import type { JsonObject, JsonValue, FromSchema, JsonSchema } from '../../core/plugin-api.ts';

/** How a token the client also biased is resolved. */


const MIN = -100 as const;
const MAX = 100 as const;
const clamp = (v: number): number => (v < MIN ? MIN : v > MAX ? MAX : v);

/**
 * `bias`: token id (decimal string) → bias in [-100, 100].
 * `merge`: how a client's own `logit_bias` combines with it (default `policy-wins`).
 */
const paramsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['bias'],
  properties: {
    bias: {
      type: 'object',
      minProperties: 1,
      maxProperties: 1024,
      propertyNames: { pattern: '^(0|[1-9][0-9]{0,9})$' },
      additionalProperties: { type: 'number', minimum: MIN, maximum: MAX },
    },
    merge: { enum: ['policy-wins', 'client-wins', 'sum'], default: 'policy-wins' },
  },
} as const satisfies JsonSchema;

/** The params after validation (defaults applied), derived from the schema. */
export type LogitBiasParams = FromSchema<typeof paramsSchema>;export type MergeRule = LogitBiasParams['merge'];

export default definePlugin<LogitBiasParams>({
  name: 'logit-bias',
  description: 'Add token biases to logit_bias, merged with the client\'s (policy-wins | client-wins | sum), clamped to [-100, 100].',
  paramsSchema,
  create(params) {
    const keys = Object.keys(params.bias);
    const vals = keys.map((k) => params.bias[k]!);
    const n = keys.length;
    // What the upstream gets when the client sent no (or an unusable) logit_bias: one shared,
    // frozen object (copy-on-write edits copy it before any later step changes it).
    const policyOnly: JsonObject = Object.freeze({ ...params.bias });
    const merge = params.merge;

    return {
      request: function logitBias(ex) {
        const client = ex.body.logit_bias;
        if (client === undefined || client === null || typeof client !== 'object' || Array.isArray(client)) {
          ex.setBody('/logit_bias', policyOnly);
          return;
        }
        const out: Record<string, JsonValue> = {};
        const ck = Object.keys(client);
        for (let i = 0; i < ck.length; i++) {
          const k = ck[i]!;
          const v = client[k];
          if (typeof v !== 'number' || !Number.isFinite(v)) {
            ex.setBody('/logit_bias', policyOnly);
            return;
          }
          // "__proto__" as a key would set the prototype: keep it an ordinary key instead.
          if (k === '__proto__') Object.defineProperty(out, k, { value: clamp(v), enumerable: true, writable: true, configurable: true });
          else out[k] = clamp(v);
        }
        for (let i = 0; i < n; i++) {
          const k = keys[i]!;
          const c = out[k] as number | undefined;
          if (c === undefined) out[k] = vals[i]!;
          else if (merge === 'sum') out[k] = clamp(c + vals[i]!);
          else if (merge === 'policy-wins') out[k] = vals[i]!;
          // client-wins: keep the client's value
        }
        ex.setBody('/logit_bias', out);
      },
    };
  },
});
