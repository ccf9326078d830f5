/**
 * Fuzzing the gateway from outside: `npm run fuzz` (and, with a fixed seed and a small count, a
 * test in `npm test`: test/fuzz.test.ts).
 *
 *   node bench/fuzz.ts [--seed N] [--count N] [--policies N] [--case I] [--verbose]
 *
 * A real gateway (`bin/ghostgate.ts start`, its own process, file watching on) in front of the
 * real model server, both on loopback in a temp folder. From one seed it generates requests and
 * sends each over HTTP/2 (node:http2) and over HTTP/1.1 (raw bytes on a socket, so it can send
 * what Node's client refuses to):
 *   - bodies: valid completions with a field mutated (wrong types, huge / tiny / non-finite
 *     numbers, unknown models), random JSON, deep nesting, byte-level mutations, invalid UTF-8,
 *     non-JSON, a BOM, duplicate keys, `__proto__` keys, bodies past the size limit;
 *   - headers: odd values (latin-1, control characters on HTTP/1.1, spaces), many, large,
 *     malformed bearer tokens, odd content-types, paths and methods; on HTTP/1.1 also chunked
 *     framing, a short content-length, content-length + transfer-encoding, obs-fold.
 * Between request batches it writes a mutated policy into the watched policies/ folder and asks
 * for a reload: the gateway must either take it or keep the last good config, and keep serving.
 *
 * What must hold (every violation is listed with its case number; `--case I` replays one):
 *   - the gateway process never exits; every request gets an answer within 30 s (no hang);
 *   - every error answer (>= 400) has a body `{error: {code, message}}` with a code from
 *     core/errors.ts; no 500 (GW_ERR_SERVER_INTERNAL, GW_ERR_POLICY_STEP_FAILED: an unexpected
 *     throw), no 5xx with an uncatalogued code;
 *   - a 200 is complete (END_STREAM / framing) and a streamed one ends with `data: [DONE]`;
 *   - a rejected reload names catalogued GW_ERR_CONFIG_* codes and leaves the config version as it
 *     was; a known-good request answers as before; after the run the original policy reloads and
 *     good requests over both protocols answer 200.
 */
import type { ClientHttp2Session, OutgoingHttpHeaders } from 'node:http2';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { catalog } from '../core/errors.ts';
import { GatewayProc, Rng, freePort, gatewayDir, h1Bytes, h1Raw, h2Connect, h2Request, removeDir, startModel } from './harness.ts';
import type { Reply } from './harness.ts';

// ---------------------------------------------------------------------------------------------
// The gateway under test

const BASE_POLICY = `name: base
match: { paths: [/v1/completions, /v1/chat/completions, /v1/engines/:model/completions] }
steps:
  - use: auth
  - use: set-headers
    params:
      response: { x-ghostgate-policy: base }
`;

/** The policy the fuzzer mutates (a copy of what operators write: conditions, params, JSON pointers). */
const FUZZ_POLICY = `name: fuzz
description: Mutated by bench/fuzz.ts.
match: { models: [ghost-small] }
steps:
  - use: strip-params
    when: { "semver<": [{ var: client.version }, "1.240.0"] }
    params: { remove: [/logprobs, /extra/poison_pill] }
  - use: logit-bias
    params:
      bias: { "50256": -100 }
      merge: policy-wins
  - use: set-params
    params:
      set: { /max_tokens: 4 }
      onlyIfAbsent: true
  - use: model-rewrite
    when: { "==": [{ var: claims.plan }, "beta"] }
    params: { map: { ghost-small: ghost } }
  - use: rate-limit
    params: { key: claims.sub, ratePerSecond: 100000, burst: 100000 }
`;

function gatewayConfig(port: number, admin: number, modelUrl: string): string {
  return `listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${admin} }
upstreams:
  local:
    url: ${modelUrl}
    protocol: h2c
    pool: { size: 2 }
models:
  ghost-small: { upstream: local, aliases: [ghost] }
defaultModel: ghost-small
policies: [policies/*.yaml]
modelServer: { enabled: false }
auth: { dev: true, tokenTtl: 1h }
reload: { watch: true, debounceMs: 20 }
logging: { level: fatal }
`;
}

// ---------------------------------------------------------------------------------------------
// Generators

const CODES = new Set(Object.keys(catalog));
/** An answer later than this is a hang (generous: the largest bodies on a busy 2-core machine take a while). */
const DEADLINE_MS = 30_000;
const PATHS = ['/v1/completions', '/v1/chat/completions', '/v1/engines/ghost-small/completions'];

function randString(r: Rng, max: number): string {
  const n = r.int(0, max);
  let s = '';
  for (let i = 0; i < n; i++) {
    const k = r.int(0, 9);
    if (k < 5) s += String.fromCharCode(r.int(0x20, 0x7e));
    else if (k < 6) s += String.fromCharCode(r.int(0, 0x1f));
    else if (k < 7) s += String.fromCharCode(r.int(0x80, 0x7ff));
    else if (k < 8) s += String.fromCharCode(r.int(0xd800, 0xdfff)); // lone surrogates
    else if (k < 9) s += '🙂';
    else s += r.pick(['"', '\\', '\u2028', '\u0000', '{', '}']);
  }
  return s;
}

const ODD_NUMBERS = ['1e999', '-1e999', '1e-400', '-0', '123456789012345678901234567890123456789', '0.0000000000000000000001', '9007199254740993', '-9223372036854775809', '1E+2', '0x10', 'NaN', 'Infinity', '01', '.5', '1.', '+1'];

/** A random JSON text (sometimes with non-standard number literals: those must be refused cleanly). */
function randJson(r: Rng, depth: number): string {
  const k = r.int(0, depth > 4 ? 5 : 8);
  switch (k) {
    case 0: return 'null';
    case 1: return r.chance(0.5) ? 'true' : 'false';
    case 2: return String(r.pick([0, 1, -1, 4, 2 ** 31, 2 ** 53, 1.5, -1e308, 1e308]));
    case 3: return r.pick(ODD_NUMBERS);
    case 4: case 5: return JSON.stringify(randString(r, 40));
    case 6: case 7: {
      const n = r.int(0, 5);
      return `[${Array.from({ length: n }, () => randJson(r, depth + 1)).join(',')}]`;
    }
    default: {
      const n = r.int(0, 5);
      const keys = ['model', 'prompt', 'stream', 'max_tokens', 'messages', '__proto__', 'constructor', '', 'extra', 'logprobs', 'temperature', 'n', 'stop'];
      return `{${Array.from({ length: n }, () => `${JSON.stringify(r.chance(0.7) ? r.pick(keys) : randString(r, 12))}:${randJson(r, depth + 1)}`).join(',')}}`;
    }
  }
}

function validBody(r: Rng): Record<string, unknown> {
  const chat = r.chance(0.3);
  const b: Record<string, unknown> = chat
    ? { model: 'ghost-small', messages: [{ role: 'user', content: 'def fib(' }], stream: r.chance(0.6), max_tokens: r.int(1, 6) }
    : { model: r.pick(['ghost-small', 'ghost']), prompt: 'def fib(', stream: r.chance(0.6), max_tokens: r.int(1, 6) };
  if (r.chance(0.2)) b.extra = { poison_pill: true, context_lines: 3 };
  if (r.chance(0.2)) b.logprobs = 2;
  return b;
}

function deepNest(r: Rng): string {
  const n = r.pick([30, 63, 64, 65, 100, 1000, 10_000, 100_000, 400_000]);
  const inner = r.chance(0.5) ? '['.repeat(n) + ']'.repeat(n) : '{"a":'.repeat(n) + '1' + '}'.repeat(n);
  return r.chance(0.5) ? `{"model":"ghost-small","prompt":"x","stream":false,"extra":${inner}}` : inner;
}

function mutateBytes(r: Rng, b: Buffer): Buffer {
  const a = [...b];
  const n = r.int(1, 4);
  for (let i = 0; i < n && a.length; i++) {
    const at = r.int(0, a.length - 1);
    switch (r.int(0, 3)) {
      case 0: a[at] = r.int(0, 255); break;
      case 1: a.splice(at, 1); break;
      case 2: a.splice(at, 0, r.int(0, 255)); break;
      default: a.length = at; break;
    }
  }
  return Buffer.from(a);
}

/** Valid JSON whose strings hold bytes that are not UTF-8. */
function invalidUtf8(r: Rng): Buffer {
  const bad = r.pick([[0xff], [0xc3, 0x28], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0x80]]);
  const pre = Buffer.from('{"model":"ghost-small","prompt":"def f');
  const post = Buffer.from(`(","stream":${r.chance(0.5)},"max_tokens":3}`);
  return Buffer.concat([pre, Buffer.from(bad), post]);
}

interface Case {
  i: number;
  kind: string;
  method: string;
  path: string;
  /** Header pairs (lower-case names; duplicates allowed). */
  headers: Array<[string, string]>;
  body: Buffer | null;
  /** HTTP/1.1 only: raw header lines replacing `headers` (bytes Node's client refuses), and framing tricks. */
  h1Lines?: Array<string | Buffer>;
  h1Body?: Buffer;
  /** The HTTP/1.1 request is malformed on purpose: the gateway may answer 400 from its HTTP parser. */
  h1Malformed?: boolean;
  /** The HTTP/1.1 body's framing never completes: the client half-closes after sending it, and the gateway may answer or close. */
  h1Incomplete?: boolean;
}

function genCase(r: Rng, i: number, token: string): Case {
  const c: Case = { i, kind: '', method: 'POST', path: r.pick(PATHS), headers: [['content-type', 'application/json'], ['authorization', `Bearer ${token}`]], body: null };
  let body: Buffer;
  const bk = r.int(0, 13);
  switch (bk) {
    case 0: case 1: case 2: {
      const b = validBody(r);
      const key = r.pick(['model', 'prompt', 'stream', 'max_tokens', 'messages', 'n', 'temperature', 'extra', 'suffix']);
      c.kind = `body: ${key} mutated`;
      body = Buffer.from(JSON.stringify(b).replace(/}$/, `,${JSON.stringify(key)}:${randJson(r, 0)}}`));
      break;
    }
    case 3: c.kind = 'body: random JSON'; body = Buffer.from(randJson(r, 0)); break;
    case 4: c.kind = 'body: deep nesting'; body = Buffer.from(deepNest(r)); break;
    case 5: case 6: c.kind = 'body: byte mutation'; body = mutateBytes(r, Buffer.from(JSON.stringify(validBody(r)))); break;
    case 7: c.kind = 'body: invalid UTF-8'; body = invalidUtf8(r); break;
    case 8: c.kind = 'body: not JSON'; body = r.chance(0.3) ? Buffer.alloc(0) : r.chance(0.5) ? r.bytes(r.int(1, 200)) : Buffer.from(r.pick(['null', '[]', '1', '"s"', 'true', '{', '}{', '{"a":1}{"b":2}', '\ufeff{"model":"ghost-small","prompt":"x"}'])); break;
    case 9: c.kind = 'body: duplicate / prototype keys'; body = Buffer.from(`{"model":"ghost-small","model":${randJson(r, 3)},"__proto__":{"stream":true,"max_tokens":1e9},"prompt":"x","constructor":{"prototype":{"x":1}}}`); break;
    case 10: c.kind = 'body: huge numbers'; body = Buffer.from(`{"model":"ghost-small","prompt":"x","stream":${r.chance(0.5)},"max_tokens":${r.pick(ODD_NUMBERS)},"temperature":${r.pick(ODD_NUMBERS)},"n":${r.pick(ODD_NUMBERS)}}`); break;
    case 11:
      if (r.chance(0.3)) { c.kind = 'body: past the size limit'; body = Buffer.from(JSON.stringify({ model: 'ghost-small', prompt: 'x'.repeat(r.int(1_100_000, 2_500_000)) })); }
      else { c.kind = 'body: valid'; body = Buffer.from(JSON.stringify(validBody(r))); }
      break;
    default: c.kind = 'body: valid'; body = Buffer.from(JSON.stringify(validBody(r))); break;
  }
  c.body = body;

  // Headers, methods, paths.
  const hk = r.int(0, 12);
  switch (hk) {
    case 0: c.kind += ' + many headers'; for (let n = r.int(20, 300), k = 0; k < n; k++) c.headers.push([`x-fuzz-${k}`, randAscii(r, 20)]); break;
    case 1: c.kind += ' + large header'; c.headers.push([r.pick(['x-big', 'user-agent', 'editor-version', 'x-request-id', 'cookie']), 'a'.repeat(r.pick([1000, 8000, 15_000, 40_000, 70_000]))]); break;
    case 2: c.kind += ' + odd bearer'; c.headers[1] = ['authorization', r.pick(['Bearer', 'Bearer ', 'bearer x.y.z', `Bearer ${token}.`, `Bearer ${token.slice(0, -3)}`, `Bearer ${token.split('.').reverse().join('.')}`, `Basic ${Buffer.from('a:b').toString('base64')}`, `Bearer ${'a'.repeat(20_000)}`, `Bearer ${Buffer.from('{"alg":"none"}').toString('base64url')}.e30.`, `Bearer ${randAscii(r, 200)}`])]; break;
    case 3: c.kind += ' + no token'; c.headers.splice(1, 1); break;
    case 4: c.kind += ' + odd content-type'; c.headers[0] = ['content-type', r.pick(['text/plain', 'application/json; charset=latin1', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', '', 'application/json;;;', 'APPLICATION/JSON', 'application/jsonx'])]; break;
    case 5: c.kind += ' + odd header values'; for (const n of ['editor-version', 'editor-plugin-version', 'x-request-id', 'user-agent', 'x-ghostgate-document', 'accept']) c.headers.push([n, r.chance(0.5) ? randLatin1(r, 60) : r.pick(['', ' ', 'copilot/', 'copilot/1.2.3.4.5', 'vscode/999999999999999999.0.0', 'copilot/-1.0.0', 'x/1.0.0-rc.1+build'])]); break;
    case 6: c.kind += ' + odd method'; c.method = r.pick(['GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'FUZZ']); break;
    case 7: c.kind += ' + odd path'; c.path = r.pick(['/', '/v1', '/v1/completions/', '/v1/completions?x=1&x=2', '/v1/engines//completions', '/v1/engines/%2e%2e/completions', '/v1/engines/%ff/completions', `/v1/engines/${'a'.repeat(3000)}/completions`, '/v1/../v1/completions', '/V1/COMPLETIONS', '/_ping', '/metrics', '/-/config', '/v1/completions%00', '//v1//completions']); break;
    case 8: c.kind += ' + duplicate headers'; c.headers.push(['content-type', 'text/plain'], ['authorization', 'Bearer x'], ['x-request-id', 'a'], ['x-request-id', 'b']); break;
    default: break;
  }

  // HTTP/1.1-only framing and byte tricks.
  if (r.chance(0.25)) {
    const lines: Array<string | Buffer> = c.headers.filter(([n]) => n !== 'content-length').map(([n, v]) => `${n}: ${v}`);
    lines.push('host: 127.0.0.1', 'connection: close');
    const b = c.body ?? Buffer.alloc(0);
    const t = r.int(0, 5);
    if (t === 0) { c.kind += ' + h1 chunked'; lines.push('transfer-encoding: chunked'); c.h1Body = chunked(r, b, false); }
    else if (t === 1) { c.kind += ' + h1 bad chunked'; lines.push('transfer-encoding: chunked'); c.h1Body = chunked(r, b, true); c.h1Malformed = true; c.h1Incomplete = true; }
    else if (t === 2) { c.kind += ' + h1 content-length + transfer-encoding'; lines.push(`content-length: ${b.length}`, 'transfer-encoding: chunked'); c.h1Body = chunked(r, b, false); c.h1Malformed = true; }
    else if (t === 3) { c.kind += ' + h1 short content-length'; lines.push(`content-length: ${Math.max(0, b.length - r.int(1, 10))}`); c.h1Body = b; c.h1Malformed = true; }
    else if (t === 4) { c.kind += ' + h1 control bytes in a header'; lines.push(`content-length: ${b.length}`, Buffer.concat([Buffer.from('x-odd: a'), Buffer.from([r.pick([0, 1, 0x7f, 0x0b, 0xff])]), Buffer.from('b')])); c.h1Body = b; c.h1Malformed = true; }
    else { c.kind += ' + h1 obs-fold'; lines.push(`content-length: ${b.length}`, 'x-fold: a', ' b'); c.h1Body = b; c.h1Malformed = true; }
    c.h1Lines = lines;
  }
  return c;
}

function randAscii(r: Rng, max: number): string { let s = ''; for (let n = r.int(0, max), i = 0; i < n; i++) s += String.fromCharCode(r.int(0x21, 0x7e)); return s; }
function randLatin1(r: Rng, max: number): string { let s = ''; for (let n = r.int(1, max), i = 0; i < n; i++) s += String.fromCharCode(r.chance(0.8) ? r.int(0x20, 0x7e) : r.int(0xa0, 0xff)); return s; }

function chunked(r: Rng, b: Buffer, broken: boolean): Buffer {
  const parts: Buffer[] = [];
  let i = 0;
  while (i < b.length) {
    const n = Math.min(b.length - i, r.int(1, 4096));
    const size = broken && r.chance(0.3) ? r.pick(['zz', '-1', `${(n + 5).toString(16)}`, 'fffffffffffffffff', `${n.toString(16)};ext=${'x'.repeat(100)}`]) : n.toString(16);
    parts.push(Buffer.from(`${size}\r\n`), b.subarray(i, i + n), Buffer.from('\r\n'));
    i += n;
  }
  parts.push(Buffer.from(broken && r.chance(0.5) ? '0\r\n' : '0\r\n\r\n'));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------
// Policy mutations

const YAML_VALUES = ['-1', '1e999', 'null', '[]', '{}', '"x"', 'true', '~', '&a x', '*a', '!!binary AAAA', '!!js/function "f(){}"', '${NOPE}', '${HOME}', '"${GHOSTGATE_NOPE:-x}"', `"${'x'.repeat(5000)}"`, '0x1f', '.inf', '2026-01-01', '? a', '|', '>-', '"\\u0000"', '{ "$ref": "#" }', '{ var: __proto__ }', '{ "==": [{ var: constructor.prototype }, 1] }', '[/__proto__/polluted]', '{ /__proto__/x: 1 }'];

function mutatePolicy(r: Rng, text: string): string {
  let lines = text.split('\n');
  const n = r.int(1, 3);
  for (let k = 0; k < n; k++) {
    const at = r.int(0, Math.max(0, lines.length - 1));
    switch (r.int(0, 11)) {
      case 0: lines.splice(at, 1); break;
      case 1: lines.splice(at, 0, lines[at] ?? ''); break;
      case 2: lines[at] = ' '.repeat(r.int(1, 3)) + (lines[at] ?? ''); break;
      case 3: lines[at] = (lines[at] ?? '').replace(/^ {1,3}/, ''); break;
      case 4: lines[at] = (lines[at] ?? '').replace(/:\s+(.+)$/, `: ${r.pick(YAML_VALUES)}`); break;
      case 5: lines.splice(at, 0, `${' '.repeat(r.pick([0, 2, 4, 6]))}${r.pick(['unknown', 'params', 'when', 'use', 'steps', 'match', 'name', '__proto__', 'enabled'])}: ${r.pick(YAML_VALUES)}`); break;
      case 6: lines[at] = (lines[at] ?? '').replace(/use: \S+/, `use: ${r.pick(['auth', 'mirror', 'traffic-split', 'ab-test', 'supersede', 'version-gate', 'nope', '../../etc/passwd', ''])}`); break;
      case 7: { const t = lines.join('\n'); lines = t.slice(0, r.int(0, t.length)).split('\n'); break; }
      case 8: lines.push(r.chance(0.5) ? '\t\u0000\uffff' : `x: ${'['.repeat(5000)}${']'.repeat(5000)}`); break;
      case 9: lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]', ...Array.from({ length: 8 }, (_, j) => `${String.fromCharCode(98 + j)}: &${String.fromCharCode(98 + j)} [${Array(9).fill(`*${String.fromCharCode(97 + j)}`).join(',')}]`), ...lines]; break;
      case 10: { const t = Buffer.from(lines.join('\n')); const m = mutateBytes(r, t); lines = m.toString('latin1').split('\n'); break; }
      default: lines[at] = (lines[at] ?? '').replace(/"[^"]*"/, `"${randString(r, 10).replace(/["\\\n]/g, '')}"`); break;
    }
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Judging an answer

interface Judgement { problem: string }

function judge(c: Case, rep: Reply, proto: 'h2' | 'h1', maxHeaderListSize: number): Judgement | null {
  if (rep.end === 'timeout') return { problem: 'no answer within the deadline (hang)' };
  if (rep.status === 0) {
    if (proto === 'h2') {
      // A header block past the SETTINGS_MAX_HEADER_LIST_SIZE the gateway announced: nghttp2 resets the stream (RFC 9113 §10.5.1).
      if (headerListSize(c) > maxHeaderListSize) return null;
      return { problem: `stream ${rep.end} before a response (rst ${rep.rstCode}${rep.error ? `, ${rep.error}` : ''})` };
    }
    if (c.h1Incomplete) return null; // the client half-closed mid-body: closing is an answer
    return { problem: `socket closed without a response${rep.error ? ` (${rep.error})` : ''}` };
  }
  if (c.method === 'HEAD') return null; // no body by definition
  if (rep.status >= 400) {
    let parsed: unknown;
    try { parsed = JSON.parse(rep.body.toString('utf8')); } catch { /* below */ }
    const e = (parsed as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    if (!e || typeof e.code !== 'string' || typeof e.message !== 'string') {
      return { problem: `${rep.status} without an {error:{code,message}} body: ${JSON.stringify(rep.body.subarray(0, 160).toString('latin1'))}` };
    }
    if (!CODES.has(e.code)) return { problem: `${rep.status} with an uncatalogued code ${e.code}` };
    if (e.code === 'GW_ERR_SERVER_INTERNAL' || e.code === 'GW_ERR_POLICY_STEP_FAILED') return { problem: `${rep.status} ${e.code} (an unexpected throw): ${String(e.message).slice(0, 200)}` };
    return null;
  }
  if (rep.status >= 200 && rep.status < 300) {
    if (rep.end !== 'end') return { problem: `${rep.status} that did not complete (${rep.end}${rep.rstCode ? `, rst ${rep.rstCode}` : ''})` };
    const ct = String(rep.headers['content-type'] ?? '');
    const text = rep.body.toString('utf8');
    if (ct.includes('text/event-stream')) {
      if (!text.endsWith('data: [DONE]\n\n')) return { problem: `${rep.status} stream ended cleanly without data: [DONE] (${text.length} bytes${text.includes('event: error') ? ', with an error event' : ''})` };
    } else if (c.path.startsWith('/v1/')) {
      try { JSON.parse(text); } catch { return { problem: `${rep.status} with a body that is not JSON` }; }
    }
  }
  return null;
}

/** HPACK's accounting of a header list (RFC 9113 §6.5.2): name + value + 32 per field. */
function headerListSize(c: Case): number {
  let n = 32 + 7 + c.method.length + 32 + 5 + Buffer.byteLength(c.path);
  for (const [k, v] of c.headers) n += 32 + k.length + Buffer.byteLength(v);
  return n;
}

// ---------------------------------------------------------------------------------------------
// The run

export interface FuzzOptions {
  seed: number;
  /** Generated cases; each is sent over HTTP/2 and over HTTP/1.1. */
  count: number;
  /** Policy mutations (spread between request batches). */
  policies: number;
  /** Requests in flight per protocol. */
  concurrency?: number;
  /** Replay only this case (and no policy mutation). */
  only?: number;
  log?: (s: string) => void;
}

export interface FuzzProblem { case: string; protocol: 'h2' | 'h1' | 'policy' | 'gateway'; problem: string }

export interface FuzzResult {
  seed: number;
  requests: { h2: number; h1: number };
  /** Answers by status (or 'reset'/'closed'/'timeout'), per protocol. */
  outcomes: { h2: Record<string, number>; h1: Record<string, number> };
  /** Error codes seen, with counts. */
  codes: Record<string, number>;
  reloads: { ok: number; rejected: number };
  /** h2 requests Node's client refused to send (not the gateway's doing). */
  clientRefused: number;
  problems: FuzzProblem[];
  gatewayExit: number | null | undefined;
  seconds: number;
}

export async function runFuzz(o: FuzzOptions): Promise<FuzzResult> {
  const log = o.log ?? ((): void => { /* quiet */ });
  const t0 = Date.now();
  const r = new Rng(o.seed);
  const res: FuzzResult = { seed: o.seed, requests: { h2: 0, h1: 0 }, outcomes: { h2: {}, h1: {} }, codes: {}, reloads: { ok: 0, rejected: 0 }, clientRefused: 0, problems: [], gatewayExit: undefined, seconds: 0 };
  const model = await startModel(['--ttft-ms', '0', '--token-ms', '0', '--tokens', '4']);
  const port = await freePort();
  const adminPort = await freePort();
  const files = gatewayDir(gatewayConfig(port, adminPort, model.url), { '10-base.yaml': BASE_POLICY, '20-fuzz.yaml': FUZZ_POLICY });
  let gw: GatewayProc | undefined;
  let session: ClientHttp2Session | undefined;
  try {
    gw = await GatewayProc.start(files.configFile, port, adminPort);
    const token = await gw.token('fuzz');
    const cases: Case[] = [];
    for (let i = 0; i < o.count; i++) cases.push(genCase(r, i, token));
    // Mutated policies, generated up front too (so a seed fixes the whole run).
    // The first two are fixed so that every run exercises both outcomes: a valid edit, a broken file.
    const policies: string[] = [];
    for (let i = 0; i < o.policies; i++) {
      policies.push(i === 0 ? FUZZ_POLICY.replace('ratePerSecond: 100000', 'ratePerSecond: 99999')
        : i === 1 ? FUZZ_POLICY.replace('use: logit-bias', 'use: no-such-plugin')
        : mutatePolicy(r, FUZZ_POLICY));
    }
    const todo = o.only !== undefined ? cases.filter((c) => c.i === o.only) : cases;
    const concurrency = o.concurrency ?? 8;
    const g = gw;

    const newSession = async (): Promise<ClientHttp2Session> => {
      if (session && !session.closed && !session.destroyed) return session;
      session = await h2Connect(g.url);
      maxHeaderListSize = session.remoteSettings.maxHeaderListSize ?? Infinity;
      return session;
    };
    let maxHeaderListSize = Infinity;
    const good = async (): Promise<{ h2: number; h1: number }> => {
      const body = Buffer.from(JSON.stringify({ model: 'ghost-small', prompt: 'def f(', stream: true, max_tokens: 2 }));
      const s = await newSession();
      const a = await h2Request(s, { ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', authorization: `Bearer ${token}` }, body, DEADLINE_MS);
      const b = await h1Raw(port, h1Bytes('POST /v1/completions HTTP/1.1', ['host: 127.0.0.1', 'connection: close', 'content-type: application/json', `authorization: Bearer ${token}`, `content-length: ${body.length}`], body), DEADLINE_MS);
      return { h2: a.status, h1: b.status };
    };
    const bump = (m: Record<string, number>, k: string): void => { m[k] = (m[k] ?? 0) + 1; };
    const note = (c: Case, rep: Reply, proto: 'h2' | 'h1'): void => {
      res.requests[proto]++;
      bump(res.outcomes[proto], rep.status ? String(rep.status) : rep.end);
      if (rep.status >= 400) {
        try { const code = (JSON.parse(rep.body.toString('utf8')) as { error?: { code?: string } }).error?.code; if (code) bump(res.codes, code); } catch { /* judged below */ }
      }
      const j = judge(c, rep, proto, maxHeaderListSize);
      if (j) {
        res.problems.push({ case: `#${c.i} ${c.kind}`, protocol: proto, ...j });
        log(`  PROBLEM ${proto} case #${c.i} (${c.kind}): ${j.problem}`);
      }
    };
    const sendH2 = async (c: Case): Promise<void> => {
      const headers: OutgoingHttpHeaders = { ':method': c.method, ':path': c.path };
      for (const [n, v] of c.headers) {
        const prev = headers[n];
        headers[n] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [String(prev), v];
      }
      let s: ClientHttp2Session;
      try { s = await newSession(); } catch (e) { res.problems.push({ case: `#${c.i} ${c.kind}`, protocol: 'h2', problem: `cannot connect: ${(e as Error).message}` }); return; }
      const rep = await h2Request(s, headers, c.method === 'GET' || c.method === 'HEAD' ? null : c.body, DEADLINE_MS);
      if (rep.error.startsWith('client refused')) { res.clientRefused++; return; }
      note(c, rep, 'h2');
    };
    const sendH1 = async (c: Case): Promise<void> => {
      const body = c.h1Body ?? c.body ?? Buffer.alloc(0);
      const lines = c.h1Lines ?? [...c.headers.map(([n, v]) => Buffer.from(`${n}: ${v}`, 'latin1')), 'host: 127.0.0.1', 'connection: close', `content-length: ${body.length}`];
      const rep = await h1Raw(port, h1Bytes(`${c.method} ${c.path} HTTP/1.1`, lines, body), DEADLINE_MS, c.h1Incomplete === true);
      note(c, rep, 'h1');
    };
    const runBatch = async (batch: Case[]): Promise<void> => {
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < batch.length) {
          const c = batch[next++]!;
          await Promise.all([sendH2(c), sendH1(c)]);
          if (!g.proc.alive) return;
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
    };

    const base = await good();
    if (base.h2 !== 200 || base.h1 !== 200) throw new Error(`a well-formed request answered h2 ${base.h2} / h1 ${base.h1} before fuzzing`);
    const rounds = o.only !== undefined ? 1 : o.policies + 1;
    const per = Math.ceil(todo.length / rounds);
    let goodStatus = base;
    for (let k = 0; k < rounds && g.proc.alive; k++) {
      await runBatch(todo.slice(k * per, (k + 1) * per));
      if (k >= policies.length || !g.proc.alive) continue;
      // Write a mutated policy into the watched folder, then reload (the watcher may too).
      const before = (await g.json<{ version: number }>('/-/config')).body.version;
      writeFileSync(path.join(files.policiesDir, '20-fuzz.yaml'), policies[k]!);
      const rl = await g.json<{ ok: boolean; version: number; errors?: Array<{ code: string }> }>('/-/reload', { method: 'POST' });
      const label = `policy mutation ${k}`;
      if (rl.body.ok) {
        res.reloads.ok++;
        goodStatus = await good();
        for (const [p, s] of Object.entries(goodStatus)) {
          if (s >= 500 || s === 0) res.problems.push({ case: label, protocol: 'policy', problem: `after an accepted reload a well-formed ${p} request answered ${s}` });
        }
      } else {
        res.reloads.rejected++;
        const codes = (rl.body.errors ?? []).map((e) => e.code);
        if (codes.length === 0 || codes.some((x) => !CODES.has(x) || !x.startsWith('GW_ERR_CONFIG_'))) res.problems.push({ case: label, protocol: 'policy', problem: `rejected reload with codes ${JSON.stringify(codes)} (expected catalogued GW_ERR_CONFIG_*)` });
        const after = (await g.json<{ version: number }>('/-/config')).body.version;
        if (after !== before) res.problems.push({ case: label, protocol: 'policy', problem: `a rejected reload changed the config version ${before} -> ${after}` });
        const now = await good();
        if (now.h2 !== goodStatus.h2 || now.h1 !== goodStatus.h1) res.problems.push({ case: label, protocol: 'policy', problem: `after a rejected reload a well-formed request answered h2 ${now.h2} / h1 ${now.h1}, before it ${goodStatus.h2} / ${goodStatus.h1}` });
      }
      log(`  policy mutation ${k}: ${rl.body.ok ? 'accepted' : `rejected (${(rl.body.errors ?? []).map((e) => e.code).join(', ')})`}`);
    }
    if (g.proc.alive) {
      writeFileSync(path.join(files.policiesDir, '20-fuzz.yaml'), FUZZ_POLICY);
      const rl = await g.json<{ ok: boolean }>('/-/reload', { method: 'POST' });
      if (!rl.body.ok) res.problems.push({ case: 'restore', protocol: 'policy', problem: 'the original policy did not reload' });
      const end = await good();
      if (end.h2 !== 200 || end.h1 !== 200) res.problems.push({ case: 'after the run', protocol: 'gateway', problem: `a well-formed request answered h2 ${end.h2} / h1 ${end.h1}` });
      const ping = await fetch(`${g.admin}/_ping`, { signal: AbortSignal.timeout(5000) }).then((x) => x.status, () => 0);
      if (ping !== 200) res.problems.push({ case: 'after the run', protocol: 'gateway', problem: `/_ping answered ${ping}` });
    }
    if (!g.proc.alive) res.problems.push({ case: 'gateway', protocol: 'gateway', problem: `the gateway process exited (code ${g.proc.exitCode}, signal ${g.proc.signal}); stderr: ${g.proc.stderrTail.slice(-1500)}` });
  } finally {
    session?.destroy();
    res.gatewayExit = gw?.proc.exitCode;
    await gw?.proc.stop();
    await model.proc.stop();
    removeDir(files.dir);
  }
  res.seconds = (Date.now() - t0) / 1000;
  return res;
}

// ---------------------------------------------------------------------------------------------
// CLI

if (import.meta.main) {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { seed: { type: 'string' }, count: { type: 'string' }, policies: { type: 'string' }, case: { type: 'string' }, concurrency: { type: 'string' }, verbose: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(`Usage: npm run fuzz -- [--seed N] [--count N] [--policies N] [--case I] [--concurrency N] [--verbose]

  --seed N         PRNG seed (default: random; printed, so a run can be repeated)
  --count N        generated cases, each sent over HTTP/2 and HTTP/1.1 (default 3000)
  --policies N     mutated policy files written and reloaded between batches (default 60)
  --case I         replay only case I of that seed (no policy mutation)
  --concurrency N  requests in flight per protocol (default 8)
  --verbose        print each problem as it happens
`);
    process.exit(0);
  }
  const num = (v: string | undefined, d: number): number => {
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) { process.stderr.write(`not a non-negative integer: ${v}\n`); process.exit(2); }
    return n;
  };
  const seed = num(values.seed, Math.floor(Math.random() * 2 ** 31));
  const opts: FuzzOptions = { seed, count: num(values.count, 3000), policies: num(values.policies, 60), concurrency: num(values.concurrency, 8), only: values.case === undefined ? undefined : num(values.case, 0), log: values.verbose ? (s) => process.stderr.write(s + '\n') : undefined };
  process.stderr.write(`fuzz: seed ${seed}, ${opts.count} cases × (HTTP/2 + HTTP/1.1), ${opts.policies} policy mutations\n`);
  const r = await runFuzz(opts);
  process.stdout.write(`fuzz seed ${r.seed}: ${r.requests.h2} HTTP/2 + ${r.requests.h1} HTTP/1.1 requests in ${r.seconds.toFixed(1)} s; reloads ${r.reloads.ok} accepted, ${r.reloads.rejected} rejected; ${r.clientRefused} not sendable by node:http2\n`);
  process.stdout.write(`  answers h2: ${JSON.stringify(r.outcomes.h2)}\n  answers h1: ${JSON.stringify(r.outcomes.h1)}\n  codes: ${JSON.stringify(r.codes)}\n`);
  const byProblem = new Map<string, FuzzProblem[]>();
  for (const p of r.problems) {
    const key = `${p.protocol}: ${p.problem.replace(/#\d+/g, '#').replace(/\d+ bytes/, 'N bytes').slice(0, 120)}`;
    byProblem.set(key, [...(byProblem.get(key) ?? []), p]);
  }
  if (r.problems.length === 0) process.stdout.write('no problems\n');
  else {
    process.stdout.write(`${r.problems.length} problem(s):\n`);
    for (const [k, ps] of byProblem) process.stdout.write(`  ${ps.length} × ${k}\n      e.g. ${ps.slice(0, 3).map((p) => p.case).join('; ')}\n`);
    process.stdout.write(`replay one: npm run fuzz -- --seed ${r.seed} --count ${opts.count} --policies ${opts.policies} --case <I>\n`);
  }
  process.exit(r.problems.length === 0 ? 0 : 1);
}
