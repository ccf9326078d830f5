/**
 * Micro-benchmark of the check of headers policy steps wrote (core/reply-check.ts
 * `badWrittenHeaders`), which the pipeline runs after the `request` phase of each step that is
 * not a built-in plugin's: ns per check on a real `GatewayExchange`, with what steps typically
 * leave in `ex.responseHeaders` / `ex.upstreamHeaders`; a request pays it once per such step
 * (none for a pipeline of built-in plugins alone), after each phase that comes before the client's
 * response headers (`request`, `forwarding`, `responseHeaders`). And what freezing the outbound
 * request costs, which `runForwarding` does once per request when a plugin's step has a
 * `forwarding` phase.
 *
 *   node_modules/.bin/node bench/header-writes.ts [runs=15]
 */
import { badWrittenHeaders } from '../core/reply-check.ts';
import { makeExchange } from '../test/helpers/exchange.ts';
import { microsPerCall } from './types.ts';

const RUNS = Number(process.argv[2] ?? 15);
const CALLS = 1_000_000;

const cases: Array<[string, Record<string, string>, Record<string, string>]> = [
  ['nothing written', {}, {}],
  ['1 response header (set-headers)', { 'x-ghostgate-policy': 'eight' }, {}],
  ['3 response + 2 upstream headers', { 'x-ghostgate-policy': 'eight', 'x-github-request-id': '5f1c2a9e-1b7d-4b8e-9a51-0c6f3e2d9b11', 'x-experiment': 'e1=hot' }, { 'x-tenant': 'acme', 'x-priority': 'interactive' }],
];

let sink = 0;
console.log(`node ${process.version}, ${CALLS} checks x ${RUNS} runs, median`);
for (const [name, down, up] of cases) {
  const ex = makeExchange({});
  Object.assign(ex.responseHeaders, down);
  Object.assign(ex.upstreamHeaders, up);
  const check = (): void => { if (badWrittenHeaders(ex) === undefined) sink++; };
  microsPerCall(check, CALLS, 3); // JIT warm-up
  const ns = microsPerCall(check, CALLS, RUNS) * 1000;
  console.log(`${name.padEnd(34)} ${ns.toFixed(1).padStart(6)} ns/check`);
}
// The outbound request as core/request/outbound.ts builds it: a fresh object per request.
const freeze = (): void => {
  const out = { upstream: 'local', path: '/v1/completions', headers: { 'content-type': 'application/json', 'x-request-id': 'r1', accept: 'text/event-stream', 'user-agent': 'x' }, body: Buffer.alloc(0) };
  Object.freeze(out.headers); Object.freeze(out);
  if (Object.isFrozen(out)) sink++;
};
const build = (): void => {
  const out = { upstream: 'local', path: '/v1/completions', headers: { 'content-type': 'application/json', 'x-request-id': 'r1', accept: 'text/event-stream', 'user-agent': 'x' }, body: Buffer.alloc(0) };
  if (out.headers.accept !== '') sink++;
};
microsPerCall(freeze, CALLS, 3);
microsPerCall(build, CALLS, 3);
const frozen = microsPerCall(freeze, CALLS, RUNS) * 1000;
const built = microsPerCall(build, CALLS, RUNS) * 1000;
console.log(`${'out built + frozen (vs built alone)'.padEnd(34)} ${(frozen - built).toFixed(1).padStart(6)} ns/request (${frozen.toFixed(1)} vs ${built.toFixed(1)})`);
if (sink === 0) console.log('');
