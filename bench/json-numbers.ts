/**
 * Micro-benchmark of the request body's number check (`core/server/json-body.ts`): µs per body for
 * `parseJsonBody` (scan, parse, and the walk when the scan saw an exponent), the scan alone, the
 * walk alone, and secure-json-parse alone, on typical 4 KB and 16 KB completion bodies, without an
 * exponent (no walk) and with one (`"temperature": 2e-1`, walked). Median of several runs.
 *
 *   npx node bench/json-numbers.ts [runs=9]
 */
import sjson from 'secure-json-parse';
import { microsPerCall } from './types.ts';
import { firstNonFinite, parseJsonBody, scanJson } from '../core/server/json-body.ts';

const RUNS = Number(process.argv[2] ?? 9);
const LINE = '    with open(path) as f:\n        data = json.load(f)  # "config" {k: [v]}\n';

function body(bytes: number, temperature: string): Buffer {
  const head = { model: 'ghost-small', stream: true, max_tokens: 64, n: 1, stop: ['\n\n', '<END>'], logit_bias: { 50256: -100, 198: -1 }, extra: { language: 'python', path: 'src/utils.py', line: 120 } };
  const shell = JSON.stringify({ ...head, prompt: '' }).replace('}', `,"temperature":${temperature}}`);
  const prompt = LINE.repeat(Math.ceil(bytes / LINE.length)).slice(0, bytes - shell.length - 40);
  return Buffer.from(JSON.stringify({ ...head, prompt, suffix: '\n' }).replace(/}$/, `,"temperature":${temperature}}`));
}

const time = (fn: () => unknown, calls: number): number => microsPerCall(fn, calls, RUNS);

for (const size of [4096, 16384]) {
  for (const temperature of ['0.2', '2e-1']) {
    const buf = body(size, temperature);
    const text = buf.toString();
    const parsed = JSON.parse(text) as unknown;
    const calls = size === 4096 ? 40_000 : 10_000;
    const full = time(() => parseJsonBody(buf, 64), calls);
    const scan = time(() => scanJson(text, 64), calls);
    const walk = time(() => firstNonFinite(parsed), calls);
    const parse = time(() => sjson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' }), calls);
    console.log(`${String(buf.length).padStart(6)} B temperature ${temperature.padEnd(4)} (${scanJson(text, 64) ? 'walked' : 'no walk'})  parseJsonBody ${full.toFixed(2)} µs  scan ${scan.toFixed(2)} µs  walk ${walk.toFixed(2)} µs  sjson.parse ${parse.toFixed(2)} µs`);
  }
}
