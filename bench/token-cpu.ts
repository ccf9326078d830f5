/**
 * CPU per streamed token: the gateway vs bench/null-proxy.ts (Node's HTTP/2 relaying each stream,
 * nothing else), both in front of one bundled model server that streams its tokens as separate
 * DATA frames (`--token-ms`, 1 ms by default).
 *
 *   npx node bench/token-cpu.ts [--tokens 4,64] [--requests 1500] [--concurrency 32] [--rounds 3]
 *                               [--token-ms 1] [--only gateway,relay] [--protocol h2|h1]
 *                               [--cpu-prof DIR] [--gateway-config 'yaml line']
 *
 * Each round runs, for each token count (the request's `max_tokens`), each subject in turn
 * (alternating, so drifts of a machine shared with other work hit both alike): a closed loop of
 * `--requests` streaming completions with `--concurrency` in flight (HTTP/2: one session;
 * `--protocol h1`: keep-alive sockets, gateway only: the relay speaks HTTP/2 only), reading the
 * subject process's CPU time (utime + stime, /proc) and its read and write system calls
 * (/proc/<pid>/io syscr, syscw) around it. Printed: medians over rounds of CPU µs and syscalls per
 * request, and per token the difference between the largest and smallest token count divided by
 * the tokens between them: what one more streamed token costs, apart from what a request costs.
 * Syscall counts do not move with other load on the machine; CPU time does, hence the medians.
 *
 * `--base DIR` also runs a gateway from another checkout (e.g. `git archive main | tar -x -C DIR`,
 * with a node_modules symlink) with the same config, as subject `base`: before/after in the same
 * rounds. `--variant-env K=V` (repeatable) runs one more gateway of this checkout with that
 * environment, as subject `variant`.
 *
 * `--cpu-prof DIR` runs the gateway and the relay under `--cpu-prof` (DIR/gateway.cpuprofile and
 * DIR/relay.cpuprofile, written when they exit at the end).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { spawnGatewayCli, startGatewayProcess } from '../test/helpers/gateway-process.ts';
import { NODE_BIN, ROOT, spawnTracked, stopTracked } from '../test/helpers/proc.ts';
import { h1ClosedLoop, h2ClosedLoop } from './closed-loop.ts';
import { freePort } from './harness.ts';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '4,64' },
    requests: { type: 'string', default: '1500' },
    concurrency: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '3' },
    'token-ms': { type: 'string', default: '1' },
    only: { type: 'string', default: 'gateway,relay' },
    protocol: { type: 'string', default: 'h2' },
    'cpu-prof': { type: 'string' },
    'gateway-config': { type: 'string' },
    base: { type: 'string' },
    'variant-env': { type: 'string', multiple: true },
  },
});
const TOKENS = values.tokens.split(',').map(Number);
const N = Number(values.requests);
const C = Number(values.concurrency);
const ROUNDS = Number(values.rounds);
const H1 = values.protocol === 'h1';
const SUBJECTS = [
  ...values.only.split(',').filter((s) => !(H1 && s === 'relay')),
  ...(values.base === undefined ? [] : ['base']),
  ...(values['variant-env'] === undefined ? [] : ['variant']),
];
const TICK_MS = 1000 / 100; // USER_HZ

function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_MS; // utime, stime (fields 14, 15)
}
function syscalls(pid: number): { r: number; w: number } {
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  return { r: Number(/^syscr: (\d+)$/m.exec(io)![1]), w: Number(/^syscw: (\d+)$/m.exec(io)![1]) };
}
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2; };
const bodyFor = (tokens: number): string => JSON.stringify({ model: 'ghost-small', prompt: 'def fib(n):', stream: true, max_tokens: tokens });
const load = (url: string, n: number, tokens: number): Promise<void> => (H1 ? h1ClosedLoop : h2ClosedLoop)(url, n, bodyFor(tokens), C);

/** `--cpu-prof DIR`: the subject writes DIR/<name>.cpuprofile when it exits. */
function profEnv(name: string): NodeJS.ProcessEnv | undefined {
  const dir = values['cpu-prof'];
  return dir === undefined ? undefined : { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${path.resolve(dir)} --cpu-prof-name=${name}.cpuprofile` };
}

const teardowns: Array<() => unknown> = [];
const t = { teardown: (fn: () => unknown) => teardowns.push(fn) };
type Sample = { cpuUs: number; r: number; w: number };
const samples = new Map<string, Sample[]>();
try {
  const g = await startGatewayProcess(t, {
    modelArgs: ['--ttft-ms', '0', '--token-ms', values['token-ms'], '--tokens', String(Math.max(...TOKENS))],
    extraConfig: values['gateway-config'] ?? '',
    env: profEnv('gateway'),
  });
  const relayPort = await freePort();
  const relay = spawnTracked(NODE_BIN, [path.join(ROOT, 'bench/null-proxy.ts'), '--port', String(relayPort), '--upstream', g.model.url], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...profEnv('relay') } });
  teardowns.push(() => stopTracked(relay));
  await new Promise<void>((resolve, reject) => {
    relay.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('"listening"')) resolve(); });
    relay.once('exit', (code) => reject(new Error(`null proxy exited (${code})`)));
  });
  const subjects: Record<string, { url: string; pid: number }> = {
    gateway: { url: g.url, pid: g.child.pid! },
    relay: { url: `http://127.0.0.1:${relayPort}`, pid: relay.pid! },
  };
  const more: Array<[string, string, NodeJS.ProcessEnv]> = [];
  if (values.base !== undefined) more.push(['base', path.resolve(values.base), profEnv('base') ?? {}]);
  if (values['variant-env'] !== undefined) more.push(['variant', ROOT, { ...profEnv('variant'), ...Object.fromEntries(values['variant-env'].map((kv) => kv.split('=', 2) as [string, string])) }]);
  for (const [name, root, env] of more) {
    const v = await spawnGatewayCli(t, ['--config', g.configFile], { env, name, root });
    subjects[name] = { url: /data plane\s+(http:\/\/\S+)/.exec(v.banner)![1]!, pid: v.child.pid! };
    teardowns.push(async () => { if (values['cpu-prof']) { v.child.kill('SIGTERM'); await v.exited; } });
  }
  console.log(`pids: ${SUBJECTS.map((s) => `${s} ${subjects[s]!.pid}`).join(', ')}, model ${g.model.child.pid}`);
  for (const s of SUBJECTS) for (const k of TOKENS) await load(subjects[s]!.url, Math.min(500, N), k); // warm-up
  for (let round = 1; round <= ROUNDS; round++) {
    for (const k of TOKENS) {
      for (const s of round % 2 ? SUBJECTS : [...SUBJECTS].reverse()) {
        const { url, pid } = subjects[s]!;
        const cpu0 = cpuMs(pid);
        const sc0 = syscalls(pid);
        const t0 = performance.now();
        await load(url, N, k);
        const secs = (performance.now() - t0) / 1000;
        const sc = syscalls(pid);
        const x: Sample = { cpuUs: (cpuMs(pid) - cpu0) * 1000 / N, r: (sc.r - sc0.r) / N, w: (sc.w - sc0.w) / N };
        const key = `${s} ${k}`;
        (samples.get(key) ?? samples.set(key, []).get(key)!).push(x);
        console.log(`round ${round}  ${s.padEnd(7)} ${String(k).padStart(3)} tokens: ${x.cpuUs.toFixed(0)} us CPU/request (${(N / secs).toFixed(0)} req/s), syscalls/request ${x.r.toFixed(2)} read, ${x.w.toFixed(2)} write`);
      }
    }
  }
  // Profiles are written on a clean exit.
  if (values['cpu-prof']) { g.child.kill('SIGTERM'); await g.exited; await stopTracked(relay); }
} finally {
  for (const fn of teardowns.reverse()) await fn();
}

const lo = Math.min(...TOKENS);
const hi = Math.max(...TOKENS);
console.log(`\nmedians of ${ROUNDS} rounds, ${N} requests each, ${C} in flight, ${H1 ? 'HTTP/1.1' : 'HTTP/2'} clients, model --token-ms ${values['token-ms']}:`);
console.log('subject  tokens  CPU us/request  read/request  write/request');
for (const s of SUBJECTS) {
  for (const k of TOKENS) {
    const xs = samples.get(`${s} ${k}`)!;
    console.log(`${s.padEnd(8)} ${String(k).padStart(6)}  ${median(xs.map((x) => x.cpuUs)).toFixed(0).padStart(14)}  ${median(xs.map((x) => x.r)).toFixed(2).padStart(12)}  ${median(xs.map((x) => x.w)).toFixed(2).padStart(13)}`);
  }
  if (hi > lo) {
    const a = samples.get(`${s} ${lo}`)!;
    const b = samples.get(`${s} ${hi}`)!;
    const per = (f: (x: Sample) => number): number => median(b.map((x, i) => (f(x) - f(a[i]!)) / (hi - lo)));
    console.log(`${s.padEnd(8)} per token: ${per((x) => x.cpuUs).toFixed(2)} us CPU, ${per((x) => x.r).toFixed(3)} read, ${per((x) => x.w).toFixed(3)} write`);
  }
}
