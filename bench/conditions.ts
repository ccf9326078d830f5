/**
 * Micro-benchmark of `when` conditions (`core/conditions.ts`): a rule compiled once at load vs
 * json-logic-js interpreting it per call (the reference implementation), in ns per evaluation,
 * and bytes allocated per evaluation (heap growth over 2,000 evaluations right after a full GC,
 * too few to trigger another).
 *
 *   npx node bench/conditions.ts [evals=200000] [runs=9]
 */
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import jsonLogic from 'json-logic-js';
import { compareSemver, compileCondition, parseSemver } from '../core/conditions.ts';

const N = Number(process.argv[2] ?? 200_000);
const RUNS = Number(process.argv[3] ?? 9);
const facts = {
  request: { method: 'POST', path: '/v1/completions', headers: {} },
  client: { editor: 'vscode', editorVersion: '1.95.0', plugin: 'copilot', version: '1.250.0' },
  claims: { sub: 'alice', plan: 'pro', features: ['beta', 'fast'], quota: 7 },
  body: { model: 'ghost-small', max_tokens: 64, stream: true },
};
const RULES: Record<string, unknown> = {
  'typical (and, ==, semver<, in)': { and: [{ '==': [{ var: 'claims.plan' }, 'pro'] }, { 'semver<': [{ var: 'client.version' }, '1.300.0'] }, { in: ['beta', { var: 'claims.features' }] }] },
  'arithmetic (min, max, +, >)': { '>': [{ '+': [{ min: [{ var: 'claims.quota' }, 10] }, { max: [{ var: 'body.max_tokens' }, 1] }] }, 8] },
  'cat (builds a string)': { '==': [{ cat: [{ var: 'client.editor' }, '/', { var: 'client.editorVersion' }] }, 'vscode/1.95.0'] },
};

// The reference gets our semver operator as a custom operation (same parser), so rules compare.
jsonLogic.add_operation('semver<', (a: unknown, b: unknown) => { const l = parseSemver(a); const r = parseSemver(b); return l !== null && r !== null && compareSemver(l, r) < 0; });

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

function measure(fn: () => unknown): { ns: number; bytes: number } {
  for (let i = 0; i < N; i++) fn();
  const ns: number[] = [];
  const bytes: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    for (let i = 0; i < N; i++) fn();
    ns.push(((performance.now() - t0) * 1e6) / N);
    gc();
    const h0 = process.memoryUsage().heapUsed;
    for (let i = 0; i < 2000; i++) fn();
    bytes.push(Math.max(0, process.memoryUsage().heapUsed - h0) / 2000);
  }
  return { ns: median(ns), bytes: median(bytes) };
}

console.log(`when conditions: median of ${RUNS} runs × ${N} evaluations (node ${process.version})`);
for (const [name, rule] of Object.entries(RULES)) {
  const c = compileCondition(rule);
  if (c(facts) !== jsonLogic.truthy(jsonLogic.apply(rule as never, facts))) throw new Error(`${name}: results differ`);
  const ours = measure(() => c(facts));
  const ref = measure(() => jsonLogic.apply(rule as never, facts));
  const b = (x: number): string => `${x.toFixed(0).padStart(5)} B`;
  console.log(`${name.padEnd(32)} compiled ${ours.ns.toFixed(0).padStart(5)} ns ${b(ours.bytes)}   json-logic-js ${ref.ns.toFixed(0).padStart(6)} ns ${b(ref.bytes)}   (${(ref.ns / ours.ns).toFixed(0)}×)`);
}
