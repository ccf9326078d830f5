/**
 * The check of a LocalReply a step's `request` phase returned (core/pipeline.ts runs it on the
 * reply path only, where the step can be named): a status, an object body, and headers both
 * protocols can send as they are (test/plugins/plugin-failures.test.ts,
 * test/core/header-values.test.ts).
 */
import { describe } from './plugin-context.ts';
import type { LocalReply } from './types.ts';

/** Why a `request` phase's non-undefined result is not a LocalReply the core can send, or undefined. */
export function badReply(r: unknown): string | undefined {
  if (r === null || typeof r !== 'object') return `returned ${describe(r)}; request must return undefined (continue), a LocalReply {status, body, headers?} or a promise of one`;
  const { status, body, headers } = r as Partial<LocalReply>;
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 200 || status > 599) return `returned a reply whose status is ${describe(status)}, not an integer from 200 to 599`;
  if (body === null || typeof body !== 'object') return `returned a reply whose body is ${describe(body)}, not an object`;
  if (headers !== undefined && (headers === null || typeof headers !== 'object')) return `returned a reply whose headers are ${describe(headers)}, not an object`;
  if (headers !== undefined) for (const name in headers) {
    const bad = badHeader(name, (headers as Record<string, unknown>)[name]);
    if (bad !== undefined) return `returned a reply whose header ${bad}`;
  }
  return undefined;
}

/** A header name: a token (RFC 9110 §5.6.2). */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A header value as Node's HTTP/1.1 sends it (RFC 9110 §5.5): tabs and bytes 0x20-0x7E, 0x80-0xFF. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Connection-level headers: HTTP/2 forbids them (RFC 9113 §8.2.2) and on HTTP/1.1 they are the gateway's. */
const CONNECTION_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te']);

/**
 * Why a reply header cannot be sent as it is on both protocols, or undefined. Node's HTTP/1.1
 * refuses a CR, LF or other control character in a value when the reply is written, and its
 * HTTP/2 sends one as it is: so the reply is refused here, where its step can be named.
 */
function badHeader(name: string, value: unknown): string | undefined {
  if (!TOKEN.test(name)) return `name ${JSON.stringify(name)} is not a header name`;
  if (CONNECTION_HEADERS.has(name.toLowerCase())) return `"${name}" is a connection header, which the gateway manages`;
  const values = Array.isArray(value) ? value as unknown[] : [value];
  for (const v of values) {
    if (typeof v === 'number' && Number.isFinite(v)) continue;
    if (typeof v !== 'string') return `"${name}" is ${describe(v)}, not a string`;
    if (!FIELD_VALUE.test(v)) return `"${name}" has a line break (CR or LF) or another control character in its value`;
  }
  return undefined;
}
