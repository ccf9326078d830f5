/**
 * The one JSON body parser of the data plane (the Fastify content-type parser and the HTTP/2 fast
 * lane both call `parseJsonBody`): a nesting-depth limit first, then secure-json-parse, then a
 * refusal of numbers that parse to ±Infinity.
 *
 * Why a depth limit: JSON.parse of a 1 MB body nested 499,000 levels deep takes tens of times
 * what a flat 1 MB body takes (47 ms vs 1.1 ms in one run of `bench/json-depth.ts` on the 2-core
 * development machine), every step that walks the body pays again, and JSON.stringify cannot
 * re-serialise it at all. The check is one linear pass over the bytes, counting brackets outside
 * strings, before anything is parsed; `bench/json-depth.ts` measures both.
 *
 * Why numbers: JSON.parse reads `1e999` as Infinity and JSON.stringify writes Infinity as `null`,
 * so a body a step edits would reach the model with `"max_tokens": null` where the client sent
 * `1e999`. The same scan notes numbers that could overflow, and only then is the parse walked.
 */
import sjson from 'secure-json-parse';
import { GatewayError } from '../errors.ts';

/** `scanJson` verdicts (bits). */
export const SCAN_TOO_DEEP = 1;
/** The text holds a number with an exponent or more than 308 integer digits: the only ones JSON.parse can turn into ±Infinity. */
export const SCAN_BIG_NUMBER = 2;

/**
 * One linear pass over JSON `text`, before it is parsed: `SCAN_TOO_DEEP` if it is nested deeper
 * than `max` levels (`{}` is one level, `{"a":[1]}` two), `SCAN_BIG_NUMBER` if a number could
 * parse to ±Infinity (a hint: `firstNonFinite` on the parse decides). Brackets and digits inside
 * strings do not count: a string is skipped with `indexOf` to its closing quote (one not preceded
 * by an odd run of backslashes), so long prompts cost a native character search, not a loop in
 * JS. It does not validate: malformed JSON is left to the parser, so an unterminated string or
 * unbalanced brackets simply end the scan.
 */
export function scanJson(text: string, max: number): number {
  let depth = 0;
  let digits = 0;
  let big = 0;
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i++);
    if (c === 0x22 /* " */) {
      for (;;) {
        const q = text.indexOf('"', i);
        if (q === -1) return big;
        let k = q - 1;
        while (text.charCodeAt(k) === 0x5c /* \ */) k--;
        i = q + 1;
        if (((q - 1 - k) & 1) === 0) break;
      }
    } else if (c - 0x30 >>> 0 <= 9 /* 0-9 */) {
      if (++digits > 308) big = SCAN_BIG_NUMBER;
      continue;
    } else if ((c | 0x20) === 0x65 /* e or E */) {
      // After a digit, an exponent (in true/false an e follows a letter).
      if (digits > 0) big = SCAN_BIG_NUMBER;
    } else if ((c | 0x20) === 0x7b /* { or [ */) {
      if (++depth > max) return SCAN_TOO_DEEP | big;
    } else if ((c | 0x20) === 0x7d /* } or ] */) {
      depth--;
    }
    digits = 0;
  }
  return big;
}

/** Whether JSON `text` is nested deeper than `max` levels (see `scanJson`). */
export function jsonTooDeep(text: string, max: number): boolean {
  return (scanJson(text, max) & SCAN_TOO_DEEP) !== 0;
}

/**
 * The JSON Pointer of the first number in `v` that is not finite (JSON.parse reads `1e999` as
 * Infinity, which JSON.stringify writes as `null`), or undefined if there is none.
 */
export function firstNonFinite(v: unknown, at = ''): string | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? undefined : at;
  if (typeof v !== 'object' || v === null) return undefined;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const p = firstNonFinite(v[i], `${at}/${i}`);
      if (p !== undefined) return p;
    }
    return undefined;
  }
  for (const k in v) {
    const p = firstNonFinite((v as Record<string, unknown>)[k], `${at}/${k.replaceAll('~', '~0').replaceAll('/', '~1')}`);
    if (p !== undefined) return p;
  }
  return undefined;
}

/**
 * Parse a request body. Throws a GatewayError: `GW_ERR_REQ_JSON_TOO_DEEP` beyond `maxDepth`
 * levels, `GW_ERR_REQ_INVALID_JSON` for anything that is not JSON or carries `__proto__` /
 * `constructor.prototype` keys, `GW_ERR_REQ_INVALID_BODY` naming the JSON Pointer of a number
 * too large to be finite (`1e999`): the gateway could not forward it as sent (a step that edits
 * the body would re-serialise it as `null`). The number check costs nothing more unless the scan
 * saw an exponent or a 309-digit number (`bench/json-numbers.ts`).
 */
export function parseJsonBody(raw: Buffer, maxDepth: number): unknown {
  // One decode, shared by the scan and the parser (which would decode a Buffer itself).
  const text = raw.toString();
  const scan = scanJson(text, maxDepth);
  if ((scan & SCAN_TOO_DEEP) !== 0) throw new GatewayError('GW_ERR_REQ_JSON_TOO_DEEP', [maxDepth]);
  let body: unknown;
  try {
    body = sjson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' });
  } catch {
    throw new GatewayError('GW_ERR_REQ_INVALID_JSON');
  }
  if (scan !== 0) {
    const at = firstNonFinite(body);
    if (at !== undefined) throw new GatewayError('GW_ERR_REQ_INVALID_BODY', [`the number at ${at === '' ? 'the top level' : at} is too large (not a finite number)`]);
  }
  return body;
}
