/**
 * Micro-benchmark of the request body's depth check (`core/server/json-body.ts`): µs per body for
 * the scan alone and for JSON.parse of the same text (both run on the decoded string, which the
 * parser needs anyway), on a typical ~1 KB completion body, a
 * ~16 KB chat body with escapes, a flat 1 MB body, and the 1 MB body nested 499,000 levels deep that the check
 * exists for (median of several runs).
 *
 *   node_modules/.bin/node bench/json-depth.ts [runs=9]
 */
import { microsPerCall } from './types.ts';
import { jsonTooDeep } from '../core/server/json-body.ts';

const RUNS = Number(process.argv[2] ?? 9);

const completion = Buffer.from(JSON.stringify({
  model: 'ghost-small', stream: true, max_tokens: 64, temperature: 0.2, stop: ['\n\n', '<END>'], n: 1,
  prompt: '# utils.py\nimport os\n\ndef read_config(path):\n    """Read the "config" file."""\n    with open(path) as f:\n        '.repeat(8),
  extra: { language: 'python', path: 'src/utils.py' },
}));
const chat = Buffer.from(JSON.stringify({
  model: 'ghost-small', stream: true,
  messages: Array.from({ length: 8 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: [{ type: 'text', text: `line ${i}: "quoted" \\ back\\slash {not: [a bracket]}\n`.repeat(40) }] })),
}));
const code = Buffer.from(JSON.stringify({
  model: 'ghost-small', stream: true,
  prompt: 'function f(a) {\n  if (a["k"]) return [a, { b: a }];\n  return g(`x ${a}`, "y");\n}\n'.repeat(200),
}));
const deep = Buffer.from('['.repeat(499_000) + ']'.repeat(499_000));
/** A flat body of the same size, to compare what the deep one costs to parse. */
const flat = Buffer.from(JSON.stringify({ model: 'ghost-small', prompt: 'x'.repeat(998_000 - 40) }));


const time = (fn: () => unknown, calls: number): number => microsPerCall(fn, calls, RUNS);

for (const [name, buf, calls] of [['completion', completion, 50_000], ['chat', chat, 5_000], ['code', code, 5_000], ['flat 1 MB', flat, 20], ['deep 1 MB', deep, 20]] as const) {
  const text = buf.toString();
  if (jsonTooDeep(text, 64) !== (name === 'deep 1 MB')) throw new Error(`wrong verdict for ${name}`);
  const scan = time(() => jsonTooDeep(text, 64), calls);
  // What the check spares: JSON.parse of the deep body (core/server/json-body.ts compares it with the flat one).
  const parse = time(() => { try { JSON.parse(text); } catch { /* a stack overflow also costs */ } }, calls);
  console.log(`${name.padEnd(11)} ${String(buf.length).padStart(9)} B  depth check ${scan.toFixed(3)} µs  JSON.parse ${Number.isNaN(parse) ? '—' : parse.toFixed(3) + ' µs'}`);
}
