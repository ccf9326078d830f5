/**
 * Micro-benchmark of the pipeline runner itself (core/pipeline.ts), ns per `run`: one step whose
 * `request` returns undefined (the synchronous path), one that answers a LocalReply (the reply
 * path) and one `async` step (the promise path, which arms the step timeout). Each run on a
 * fresh real GatewayExchange built outside the timed loop; async runs are awaited one by one.
 *
 *   node_modules/.bin/node bench/pipeline-async-step.ts [runsPerSample=20000] [samples=9]
 */
import { CompiledPipeline } from '../core/pipeline.ts';
import type { CompiledStep } from '../core/pipeline.ts';
import type { GatewayExchange } from '../core/exchange.ts';
import { silentLogger } from '../core/plugin-context.ts';
import type { LocalReply, Step } from '../core/types.ts';
import { makeExchange } from '../test/helpers/exchange.ts';

const CALLS = Number(process.argv[2] ?? 20_000);
const SAMPLES = Number(process.argv[3] ?? 9);

const reply: LocalReply = Object.freeze({ status: 403, body: Object.freeze({ error: Object.freeze({ code: 'GW_ERR_POLICY_REJECTED', message: 'no' }) }) });
const pipeline = (step: Step): CompiledPipeline => new CompiledPipeline([
  { index: 0, use: 'b', name: 'b', where: 'bench.yaml:1', policy: 'bench', when: undefined, whenSource: undefined, step } satisfies CompiledStep,
], silentLogger);

const cases: Array<[string, CompiledPipeline]> = [
  ['sync step, continues', pipeline({ request: function cont() { return undefined; } })],
  ['sync step, answers a LocalReply', pipeline({ request: function answer() { return reply; } })],
  ['async step, continues', pipeline({ request: async function later() { return undefined; } })],
];

async function measure(p: CompiledPipeline): Promise<number> {
  const samples: number[] = [];
  for (let s = 0; s < SAMPLES + 1; s++) {
    const exs: GatewayExchange[] = [];
    for (let i = 0; i < CALLS; i++) exs.push(makeExchange({ body: { prompt: 'x' } }));
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < CALLS; i++) {
      const r = p.run(exs[i]!);
      if (r !== undefined && typeof (r as Promise<unknown>).then === 'function') await r;
    }
    const ns = Number(process.hrtime.bigint() - t0) / CALLS;
    if (s > 0) samples.push(ns); // sample 0 warms up the JIT
  }
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1]!;
}

console.log(`node ${process.version}, ${CALLS} runs x ${SAMPLES} samples, median ns/run`);
for (const [name, p] of cases) console.log(`${name.padEnd(34)} ${(await measure(p)).toFixed(0).padStart(6)}`);
