/**
 * Micro-benchmark: what a pipeline of 8 conditioned steps adds per request over an empty one.
 * Measures the real per-request path: createExchange → pipeline.run → outboundRequest (body
 * serialisation included), with a verified token (auth cache hit), on this machine.
 *
 *   node bench/pipeline.ts [--iterations 50000] [--runs 7]
 */
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { builtinPlugins } from '../plugins/index.ts';
import { loadConfig } from '../core/config/load.ts';
import { GatewayMetrics } from '../core/metrics.ts';
import { silentLogger } from '../core/plugin-context.ts';
import { buildRuntime } from '../core/runtime.ts';
import type { Runtime } from '../core/runtime.ts';
import { createExchange } from '../core/request/exchange-input.ts';
import { outboundRequest } from '../core/request/outbound.ts';
import type { GatewayExchange } from '../core/exchange.ts';
import type { PluginDefinition } from '../core/types.ts';

const { values } = parseArgs({ options: { iterations: { type: 'string', default: '50000' }, runs: { type: 'string', default: '7' } } });
const N = Number(values.iterations);
const RUNS = Number(values.runs);

const base = `listen: { port: 0 }
upstreams:
  a: { url: "http://127.0.0.1:9", pool: { warm: false } }
  b: { url: "http://127.0.0.1:9", pool: { warm: false } }
  shadow: { url: "http://127.0.0.1:9", pool: { warm: false } }
models:
  ghost-small: { upstream: a }
policies: [policies/*.yaml]
auth: { dev: true }
`;
const eight = `name: eight
steps:
  - use: auth
  - use: version-gate
    when: { "!!": [{ var: client.version }] }
    params: { minimum: { copilot: "1.200.0" } }
  - use: rate-limit
    when: { "!=": [{ var: claims.plan }, "enterprise"] }
    params: { key: claims.sub, ratePerSecond: 1000000, burst: 1000000 }
  - use: strip-params
    when: { "semver<": [{ var: client.version }, "1.240.0"] }
    params: { remove: [/logprobs] }
  - use: logit-bias
    when: { "==": [{ var: route.model }, "ghost-small"] }
    params: { bias: { "50256": -100 } }
  - use: traffic-split
    when: { "==": [{ var: route.model }, "ghost-small"] }
    params: { stickyOn: claims.sub, targets: [{ upstream: a, weight: 90 }, { upstream: b, weight: 10 }] }
  - use: ab-test
    when: { "in": [{ var: claims.plan }, ["pro", "free"]] }
    params: { experiment: e1, stickyOn: claims.sub, arms: [{ name: control, weight: 50 }, { name: hot, weight: 50, set: { /temperature: 0.2 } }] }
  - use: set-headers
    when: { "==": [{ var: request.protocol }, "h2"] }
    params: { response: { x-ghostgate-policy: eight } }
`;

async function runtimeFor(policy: string | undefined): Promise<Runtime> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gg-bench-'));
  mkdirSync(path.join(dir, 'policies'));
  writeFileSync(path.join(dir, 'g.yaml'), base);
  if (policy) writeFileSync(path.join(dir, 'policies/p.yaml'), policy);
  return buildRuntime(loadConfig(path.join(dir, 'g.yaml')), {
    log: silentLogger, metrics: new GatewayMetrics(undefined, { defaults: false }),
    plugins: builtinPlugins as ReadonlyArray<PluginDefinition<unknown>>, sharedStore: new Map(), warm: false,
  });
}

const empty = await runtimeFor(undefined);
const full = await runtimeFor(eight);
const token = (await full.auth!.mint({ sub: 'alice', plan: 'pro' }, 3600)).token;
const prompt = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n' + '    # context line\n'.repeat(120);
const body = { model: 'ghost-small', prompt, stream: true, max_tokens: 64, logprobs: 2 };
const rawBody = Buffer.from(JSON.stringify(body));
const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'editor-version': 'vscode/1.95.0', 'editor-plugin-version': 'copilot/1.230.0', 'user-agent': 'bench' };

function once(rt: Runtime): void {
  // The data plane parses the body once per request; so do we.
  const parsed = JSON.parse(rawBody.toString()) as Record<string, unknown>;
  const made = createExchange(rt, { path: '/v1/completions', body: parsed, headers, ip: '127.0.0.1', protocol: 'h2' });
  if (!('ex' in made)) throw made;
  const r = rt.pipeline('/v1/completions', made.asked).run(made.ex);
  if (r !== undefined) throw new Error(`unexpected reply ${JSON.stringify(r)}`);
  const up = rt.upstreams.get(made.ex.route.upstream)!;
  outboundRequest(made.ex as GatewayExchange, up.name, up.config.forwardHeaders, '/v1/completions', headers, rawBody);
}

function timePerOp(rt: Runtime): number {
  for (let i = 0; i < 2000; i++) once(rt);
  const t0 = performance.now();
  for (let i = 0; i < N; i++) once(rt);
  return ((performance.now() - t0) * 1000) / N; // µs
}

const e: number[] = [];
const f: number[] = [];
for (let r = 0; r < RUNS; r++) { e.push(timePerOp(empty)); f.push(timePerOp(full)); }
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const added = med(f.map((x, i) => x - e[i]!));
console.log(`pipeline micro-benchmark (${N} requests × ${RUNS} runs, ${prompt.length}-byte prompt)`);
console.log(`  empty pipeline:           ${med(e).toFixed(2)} µs/request (parse + exchange + outbound)`);
console.log(`  8 steps with conditions:  ${med(f).toFixed(2)} µs/request`);
console.log(`  added by the 8 steps:     ${added.toFixed(2)} µs  (target ≤ 20 µs: ${added <= 20 ? 'PASS' : 'FAIL'})`);
await empty.retire(undefined);
await full.retire(undefined);
