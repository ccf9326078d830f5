/**
 * set-headers: add or remove headers on the upstream request and/or the client response.
 * Values are literal strings from config (never from the request), so they are safe as-is.
 */
import { definePlugin } from '../../core/plugin-api.ts';
import type { FromSchema, JsonSchema } from '../../core/plugin-api.ts';


/**
 * Header name → value; `upstream` goes to the upstream request, `response` to the client response
 * (names lower-cased). Values are checked in `create` (FIELD_VALUE), where the error can say why.
 */
const headerMap = {
  type: 'object',
  propertyNames: { pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$' },
  additionalProperties: { type: 'string', maxLength: 4096, description: 'Printable text and tabs: no line break (CR, LF) or other control character' },
  default: {},
} as const;

/**
 * A header value as HTTP allows it (RFC 9110 §5.5) and Node's HTTP/1.1 sends it: tabs and bytes
 * 0x20-0x7E, 0x80-0xFF. Anything else (a CR or LF above all, which would end the header and
 * start another) is refused at load: Node's HTTP/1.1 would refuse it on every request, and its
 * HTTP/2 would send it as it is.
 */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

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
    for (const side of ['upstream', 'response'] as const) {
      for (const [k, v] of Object.entries(params[side])) {
        if (!FIELD_VALUE.test(v)) throw ctx.error(`the value of header "${k}" has ${unsendable(v)}; a header value is printable text and tabs`, `${side}.${k}`);
      }
    }
    return {
      request: function setHeaders(ex) {
        for (const [k, v] of up) ex.upstreamHeaders[k] = v;
        for (const [k, v] of down) ex.responseHeaders[k] = v;
      },
    };
  },
});

/** What makes `v` no header value (it fails FIELD_VALUE), for the error. */
function unsendable(v: string): string {
  const c = /[^\t\x20-\x7e\x80-\xff]/.exec(v)![0];
  if (c === '\r' || c === '\n') return 'a line break (CR or LF)';
  const code = c.charCodeAt(0);
  return code > 0xff ? `a character outside Latin-1 (U+${code.toString(16).toUpperCase().padStart(4, '0')})` : `a control character (0x${code.toString(16).padStart(2, '0')})`;
}
