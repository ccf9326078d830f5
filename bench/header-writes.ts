/**
 * Micro-benchmark of the check of headers policy steps wrote (core/reply-check.ts
 * `badWrittenHeaders`), which the pipeline runs after the `request` phase of each step that is
 * not a built-in plugin's: ns per check on a real `GatewayExchange`, with what steps typically
 * leave in `ex.responseHeaders` / `ex.upstreamHeaders`; a request pays it once per such step
 * (none for a pipeline of built-in plugins alone).
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
if (sink === 0) console.log('');
