/**
 * The check of a LocalReply a step's `request` phase returned (core/pipeline.ts runs it on the
 * reply path only, where the step can be named): a status, an object body, and headers both
 * protocols can send as they are (test/plugins/plugin-failures.test.ts,
 * test/core/header-values.test.ts). And the same header check of what a `request` phase wrote
 * to `ex.responseHeaders` and `ex.upstreamHeaders` (`badWrittenHeaders`, run by the pipeline
 * after each plugin step's `request`, `forwarding` and `responseHeaders` phase:
 * test/core/header-writes.test.ts).
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

/**
 * Why a header in `ex.responseHeaders` or `ex.upstreamHeaders` cannot be sent as it is, on the
 * client's protocol or the upstream's, or undefined. Left unchecked, such a header reached Node
 * after the request had been forwarded (a response header: a 200 cut mid-stream with
 * GW_ERR_SERVER_INTERNAL, or an HTTP/2 stream reset) or was sent upstream as it was (a CR or LF
 * to an HTTP/2 upstream, a `connection` header to an HTTP/1.1 one). Costs two `for…in` over
 * objects that are usually empty (bench/header-writes.ts).
 */
export function badWrittenHeaders(ex: { readonly responseHeaders: object; readonly upstreamHeaders: object }): string | undefined {
  const down = ex.responseHeaders as Record<string, unknown>;
  for (const name in down) {
    const bad = badHeader(name, down[name]);
    if (bad !== undefined) return `set a response header (ex.responseHeaders) that cannot be sent: ${bad}`;
  }
  const up = ex.upstreamHeaders as Record<string, unknown>;
  for (const name in up) {
    const bad = name.length === 4 && name.toLowerCase() === 'host' ? HOST : badHeader(name, up[name]);
    if (bad !== undefined) return `set an upstream request header (ex.upstreamHeaders) that cannot be sent: ${bad}`;
  }
  return undefined;
}

/**
 * `host` upstream: the upstream's authority is its configured `url`'s. An HTTP/1.1 upstream got
 * the gateway's Host anyway (it is set after the steps' headers); an HTTP/2 one got the step's
 * `host` beside the gateway's `:authority`, a request RFC 9113 §8.3.1 says a server should treat
 * as malformed and that a server reading `Host` (Node's compat `req.headers.host`) routes by the
 * step's value. `set-headers` refuses it at load for the same reason.
 */
const HOST = '"host" is the upstream\'s authority, which its configured url sets';

/** The characters of a header name, a token (RFC 9110 §5.6.2): 1 where allowed, by char code. */
const TOKEN = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TOKEN[c.charCodeAt(0)] = 1;
/** Connection-level headers: HTTP/2 forbids them (RFC 9113 §8.2.2) and on HTTP/1.1 they are the gateway's. */
const CONNECTION_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te']);
/** Their lengths: a name of another length is not one, in any letter case, without lowercasing it. */
const CONNECTION_LENGTHS = new Set([...CONNECTION_HEADERS].map((h) => h.length));

function isToken(name: string): boolean {
  if (name.length === 0) return false;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c > 127 || TOKEN[c] === 0) return false;
  }
  return true;
}

/** A header value as Node's HTTP/1.1 sends it (RFC 9110 §5.5): tabs and bytes 0x20-0x7E, 0x80-0xFF. */
function isFieldValue(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 ? c !== 9 : c === 0x7f || c > 0xff) return false;
  }
  return true;
}

/**
 * Why a reply header cannot be sent as it is on both protocols, or undefined. Node's HTTP/1.1
 * refuses a CR, LF or other control character in a value when the reply is written, and its
 * HTTP/2 sends one as it is: so the reply is refused here, where its step can be named.
 * Character loops, not regular expressions: this runs after every step (bench/header-writes.ts).
 */
function badHeader(name: string, value: unknown): string | undefined {
  if (name.charCodeAt(0) === 58 /* ':' */) return `"${name}" is an HTTP/2 pseudo-header, which the gateway sets`;
  if (!isToken(name)) return `name ${JSON.stringify(name)} is not a header name`;
  if (CONNECTION_LENGTHS.has(name.length) && CONNECTION_HEADERS.has(name.toLowerCase())) return `"${name}" is a connection header, which the gateway manages`;
  if (typeof value === 'string') return isFieldValue(value) ? undefined : badValue(name);
  if (!Array.isArray(value)) return badItem(name, value);
  for (const v of value as unknown[]) {
    if (typeof v === 'string') { if (!isFieldValue(v)) return badValue(name); } else {
      const bad = badItem(name, v);
      if (bad !== undefined) return bad;
    }
  }
  return undefined;
}

function badValue(name: string): string {
  return `"${name}" has a line break (CR or LF) or another control character in its value`;
}

/** A value that is not a string: a finite number is fine. */
function badItem(name: string, v: unknown): string | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? undefined : `"${name}" is ${describe(v)}, not a string`;
}
