/**
 * Micro-benchmark of policy steps' `request` phase: ns per call (median of several runs), each
 * call on a fresh real `GatewayExchange` (built outside the timed loop, since steps edit it).
 *
 *   node_modules/.bin/node bench/pipeline-steps.ts [callsPerRun=20000] [runs=9]
 */
import type { GatewayExchange } from '../core/exchange.ts';
import type { JsonObject, PluginDefinition, UpstreamClient } from '../core/types.ts';
import logitBias from '../plugins/logit-bias/index.ts';
import modelRewrite from '../plugins/model-rewrite/index.ts';
import rateLimit from '../plugins/rate-limit/index.ts';
import setParams from '../plugins/set-params/index.ts';
import stripParams from '../plugins/strip-params/index.ts';
import versionGate from '../plugins/version-gate/index.ts';
import { makeExchange } from '../test/helpers/exchange.ts';
import type { TestExchangeInit } from '../test/helpers/exchange.ts';
import { loadStep } from '../test/helpers/plugin-step.ts';

const CALLS = Number(process.argv[2] ?? 20_000);
const RUNS = Number(process.argv[3] ?? 9);

const prompt = 'def fibonacci(n):\n    '.repeat(200); // ~4 KB: never copied by copy-on-write edits
const body = (extra: JsonObject = {}): JsonObject => ({
  model: 'ghost-small', prompt, stream: true, max_tokens: 64, temperature: 0.2, logprobs: 2,
  extra: { debug: true, trace: 'x' }, stop: ['\n\n', '<END>'], ...extra,
});
const client = { editor: 'vscode', editorVersion: '1.95.0', plugin: 'copilot', version: '1.250.0' };
const upstreams = new Map<string, UpstreamClient>([['local', { name: 'local', send: () => Promise.reject(new Error('unused')) }]]);
const models = new Map([['ghost-small', { model: 'ghost-small', upstream: 'local', upstreamModel: 'ghost-small-v3' }], ['ghost-large', { model: 'ghost-large', upstream: 'local', upstreamModel: 'ghost-large-v1' }]]);

interface Case { name: string; plugin: PluginDefinition<never>; params: unknown; init: (i: number) => TestExchangeInit }
const cases: Case[] = [
  { name: 'strip-params (2 ptrs, 1 deep, both present)', plugin: stripParams as PluginDefinition<never>, params: { remove: ['/logprobs', '/extra/debug'] }, init: () => ({ body: body(), client }) },
  { name: 'strip-params (2 ptrs, absent)', plugin: stripParams as PluginDefinition<never>, params: { remove: ['/logit_bias', '/n/x'] }, init: () => ({ body: body(), client }) },
  { name: 'set-params (2 ptrs, 1 deep)', plugin: setParams as PluginDefinition<never>, params: { set: { '/max_tokens': 32, '/extra/safe': true } }, init: () => ({ body: body(), client }) },
  { name: 'set-params onlyIfAbsent (present)', plugin: setParams as PluginDefinition<never>, params: { set: { '/max_tokens': 32, '/temperature': 0 }, onlyIfAbsent: true }, init: () => ({ body: body(), client }) },
  { name: 'logit-bias (client sent none)', plugin: logitBias as PluginDefinition<never>, params: { bias: { 50256: -100 } }, init: () => ({ body: body(), client }) },
  { name: 'logit-bias (merge 3 client + 1 policy)', plugin: logitBias as PluginDefinition<never>, params: { bias: { 50256: -100 }, merge: 'sum' }, init: () => ({ body: body({ logit_bias: { 1: 2, 50256: 5, 99: -3 } }), client }) },
  { name: 'model-rewrite (hit)', plugin: modelRewrite as PluginDefinition<never>, params: { map: { 'ghost-small': 'ghost-large' } }, init: () => ({ body: body(), client }) },
  { name: 'version-gate (single minimum, pass)', plugin: versionGate as PluginDefinition<never>, params: { minimum: '1.200.0' }, init: () => ({ body: body(), client }) },
  { name: 'version-gate (by name, pass)', plugin: versionGate as PluginDefinition<never>, params: { minimum: { copilot: '1.200.0', vscode: '1.90.0' } }, init: () => ({ body: body(), client }) },
  { name: 'version-gate (below: 426)', plugin: versionGate as PluginDefinition<never>, params: { minimum: '2.0.0' }, init: () => ({ body: body(), client }) },
  { name: 'rate-limit (1000 subjects, pass)', plugin: rateLimit as PluginDefinition<never>, params: { ratePerSecond: 1e6, burst: 1e6 }, init: (i) => ({ body: body(), client, claims: { sub: `user-${i % 1000}` } }) },
  { name: 'rate-limit (limited: 429)', plugin: rateLimit as PluginDefinition<never>, params: { ratePerSecond: 0.001, burst: 1 }, init: () => ({ body: body(), client, claims: { sub: 'one' } }) },
];

async function measure(c: Case): Promise<number> {
  const { step } = await loadStep(c.plugin, c.params, { upstreams, models }); // validated like the core does
  const request = step.request!;
  const samples: number[] = [];
  for (let run = 0; run < RUNS + 1; run++) {
    const exs: GatewayExchange[] = [];
    for (let i = 0; i < CALLS; i++) exs.push(makeExchange(c.init(i)));
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < CALLS; i++) request(exs[i]!);
    const ns = Number(process.hrtime.bigint() - t0) / CALLS;
    if (run > 0) samples.push(ns); // run 0 warms up the JIT
  }
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1]!;
}

const rows: Array<[string, string]> = [];
for (const c of cases) rows.push([c.name, (await measure(c)).toFixed(0)]);
const w = Math.max(...rows.map((r) => r[0].length), 4);
console.log(`node ${process.version}, ${CALLS} calls x ${RUNS} runs, median ns/op`);
console.log(`${'step'.padEnd(w)}  ns/op`);
console.log(`${'-'.repeat(w)}  -----`);
for (const [n, v] of rows) console.log(`${n.padEnd(w)}  ${v.padStart(5)}`);
