/**
 * The one JSON body parser of the data plane (the Fastify content-type parser and the HTTP/2 fast
 * lane both call `parseJsonBody`): a nesting-depth limit first, then secure-json-parse.
 *
 * Why a depth limit: JSON.parse of a 1 MB body nested 499,000 levels deep takes tens of times
 * what a flat 1 MB body takes (47 ms vs 1.1 ms in one run of `bench/json-depth.ts` on the 2-core
 * development machine), every step that walks the body pays again, and JSON.stringify cannot
 * re-serialise it at all. The check is one linear pass over the bytes, counting brackets outside
 * strings, before anything is parsed; `bench/json-depth.ts` measures both.
 */
import sjson from 'secure-json-parse';
import { GatewayError } from '../errors.ts';

/**
 * Whether JSON `text` is nested deeper than `max` levels (`{}` is one level, `{"a":[1]}` two).
 * Brackets inside strings do not count: a string is skipped with `indexOf` to its closing quote
 * (one not preceded by an odd run of backslashes), so long prompts cost a native character search,
 * not a loop in JS. It does not validate: malformed JSON is left to the parser, so an
 * unterminated string or unbalanced brackets simply end the scan.
 */
export function jsonTooDeep(text: string, max: number): boolean {
  let depth = 0;
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i++);
    if (c === 0x22 /* " */) {
      for (;;) {
        const q = text.indexOf('"', i);
        if (q === -1) return false;
        let k = q - 1;
        while (text.charCodeAt(k) === 0x5c /* \ */) k--;
        i = q + 1;
        if (((q - 1 - k) & 1) === 0) break;
      }
    } else if ((c | 0x20) === 0x7b /* { or [ */) {
      if (++depth > max) return true;
    } else if ((c | 0x20) === 0x7d /* } or ] */) {
      depth--;
    }
  }
  return false;
}

/**
 * Parse a request body. Throws a GatewayError: `GW_ERR_REQ_JSON_TOO_DEEP` beyond `maxDepth`
 * levels, `GW_ERR_REQ_INVALID_JSON` for anything that is not JSON or carries `__proto__` /
 * `constructor.prototype` keys.
 */
export function parseJsonBody(raw: Buffer, maxDepth: number): unknown {
  // One decode, shared by the check and the parser (which would decode a Buffer itself).
  const text = raw.toString();
  if (jsonTooDeep(text, maxDepth)) throw new GatewayError('GW_ERR_REQ_JSON_TOO_DEEP', [maxDepth]);
  try {
    return sjson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' });
  } catch {
    throw new GatewayError('GW_ERR_REQ_INVALID_JSON');
  }
}
