/**
 * Micro-benchmark of how a client HTTP/2 stream is handed on by its session (core/server/
 * stream-guard.ts `installStreamGuards`): ns per 'stream' event, for a typical editor request
 * (18 header fields, a 900-byte bearer token).
 *
 * - before:   the guard prepended as a listener of its own: three listeners on the session's
 *             'stream' event (the guard, Node's hand-off to the server, the body deadlines').
 * - after:    one listener (the guard) that checks the header count, CONNECT and `expect`, then calls the
 *             other two itself: what the gateway runs.
 * - +bytes:   `after`, plus summing the header list's size (name + value + 32 per field, RFC 9113
 *             §6.5.2), the check that a coded 431 for a header block over `limits.headerBytes`
 *             would need (not done: see docs/configuration.md, limits.headerBytes).
 *
 * The listeners do what the real ones cost at most in common (the route match of the guard); the
 * rest is a sink, so the numbers are the dispatch and the checks, not the gateway's work.
 *
 *   node_modules/.bin/node bench/stream-guard.ts [runs=15]
 */
import { EventEmitter } from 'node:events';
import type { IncomingHttpHeaders } from 'node:http';
import { matchRoute } from '../core/request/routes.ts';
import { microsPerCall } from './types.ts';

const RUNS = Number(process.argv[2] ?? 15);
const CALLS = 2_000_000;

const fields: Array<[string, string]> = [
  [':method', 'POST'], [':scheme', 'https'], [':authority', 'copilot-proxy.example.com'], [':path', '/v1/engines/copilot-codex/completions'],
  ['content-type', 'application/json'], ['content-length', '2143'], ['authorization', `Bearer ${'t'.repeat(900)}`],
  ['user-agent', 'GithubCopilot/1.250.0'], ['editor-version', 'vscode/1.96.2'], ['editor-plugin-version', 'copilot/1.250.0'],
  ['x-request-id', '5f1c2a9e-1b7d-4b8e-9a51-0c6f3e2d9b11'], ['openai-intent', 'copilot-ghost'], ['openai-organization', 'github-copilot'],
  ['vscode-sessionid', '3b8e2a4c-7d1f-4e59-8a2b-1c9d0e6f7a3b1733150000000'], ['vscode-machineid', 'a'.repeat(64)],
  ['x-github-api-version', '2025-01-01'], ['accept', '*/*'], ['accept-encoding', 'gzip,deflate,br'],
];
const raw = fields.flat();
const headers = Object.assign(Object.create(null) as IncomingHttpHeaders, Object.fromEntries(fields));
const stream = {};

let sink = 0;
type Listener = (stream: object, headers: IncomingHttpHeaders, flags: number, raw: string[]) => void;
const guardWork = (h: IncomingHttpHeaders): void => { if (h[':method'] === 'POST' && matchRoute(h[':path'] as string) !== undefined) sink++; };
const toServer: Listener = (_s, h, flags) => { sink += flags + (h[':path'] === undefined ? 0 : 1); };
const deadlines: Listener = (_s, _h, flags) => { if ((flags & 1) !== 0) sink++; };

const before = new EventEmitter();
before.on('stream', toServer);
before.on('stream', deadlines);
before.prependListener('stream', (_s: object, h: IncomingHttpHeaders) => guardWork(h));

const MAX_RAW = 512;
const after = new EventEmitter();
{
  const onward = [toServer, deadlines];
  after.on('stream', function (this: EventEmitter, s: object, h: IncomingHttpHeaders, flags: number, r: string[]) {
    guardWork(h);
    if (r.length > MAX_RAW) { sink--; return; }
    if (h[':method'] === 'CONNECT') { sink--; return; }
    if (h.expect !== undefined && h.expect !== '100-continue') { sink--; return; }
    for (let i = 0; i < onward.length; i++) onward[i]!.call(this, s, h, flags, r);
  });
}
const withBytes = new EventEmitter();
{
  const onward = [toServer, deadlines];
  withBytes.on('stream', function (this: EventEmitter, s: object, h: IncomingHttpHeaders, flags: number, r: string[]) {
    guardWork(h);
    if (r.length > MAX_RAW) { sink--; return; }
    let size = 16 * r.length;
    for (let i = 0; i < r.length; i++) size += r[i]!.length;
    if (size > 16_384) { sink--; return; }
    if (h.expect !== undefined && h.expect !== '100-continue') { sink--; return; }
    for (let i = 0; i < onward.length; i++) onward[i]!.call(this, s, h, flags, r);
  });
}

const variants: Array<[string, EventEmitter]> = [['before', before], ['after', after], ['+bytes', withBytes]];
// Warm every variant up first, then time them in turns, one run each, so the machine's drift (other
// processes) hits all of them alike; the minimum is the least disturbed run, the median the typical.
for (const [, e] of variants) microsPerCall(() => e.emit('stream', stream, headers, 1, raw), CALLS / 4, 1);
const results = new Map<string, number[]>(variants.map(([n]) => [n, []]));
for (let r = 0; r < RUNS; r++) {
  for (const [name, e] of variants) results.get(name)!.push(microsPerCall(() => e.emit('stream', stream, headers, 1, raw), CALLS, 1) * 1000);
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
for (const [name, ns] of results) {
  console.log(`${name.padEnd(7)} min ${Math.min(...ns).toFixed(1).padStart(6)} ns  median ${median(ns).toFixed(1).padStart(6)} ns per stream (${RUNS} runs of ${CALLS})`);
}
if (sink === 0) console.log('');
