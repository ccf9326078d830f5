/**
 * set-headers: add or remove headers on the upstream request and/or the client response.
 * Values are literal strings from config (never from the request), so they are safe as-is.
 */
import { definePlugin } from '../../core/plugin-api.ts';
import type { FromSchema, JsonSchema } from '../../core/plugin-api.ts';


/** Header name → value; `upstream` goes to the upstream request, `response` to the client response (names lower-cased). */
const headerMap = {
  type: 'object',
  propertyNames: { pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$' },
  additionalProperties: { type: 'string', maxLength: 4096, pattern: '^[^\\r\\n]*$' },
  default: {},
} as const;

const RESERVED = new Set(['authorization', 'host', 'content-length', 'connection', 'transfer-encoding', 'te', 'upgrade', 'keep-alive', 'proxy-connection']);

const paramsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { upstream: headerMap, response: headerMap },
} as const satisfies JsonSchema;

/** The params after validation (defaults applied), derived from the schema. */
export type SetHeadersParams = FromSchema<typeof paramsSchema>;

export default definePlugin<SetHeadersParams>({
  name: 'set-headers',
  description: 'Add fixed headers to the upstream request and/or the client response.',
  paramsSchema,
  create(params, ctx) {
    const up = Object.entries(params.upstream).map(([k, v]) => [k.toLowerCase(), v] as const);
    const down = Object.entries(params.response).map(([k, v]) => [k.toLowerCase(), v] as const);
    for (const [k] of [...up, ...down]) {
      if (RESERVED.has(k)) throw ctx.error(`header "${k}" is managed by the gateway and cannot be set by a policy`, k);
    }
    return {
      request: function setHeaders(ex) {
        for (const [k, v] of up) ex.upstreamHeaders[k] = v;
        for (const [k, v] of down) ex.responseHeaders[k] = v;
      },
    };
  },
});
