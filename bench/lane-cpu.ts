/**
 * Gateway CPU per completion request, fast lanes on vs off (`server.fastLane`), over HTTP/2 and
 * HTTP/1.1 keep-alive: `npx node bench/lane-cpu.ts [--requests 4000] [--concurrency 8] [--rounds 2]`.
 *
 * Each round starts a gateway process per setting (alternating), in front of a bundled model
 * server that answers at once (4 tokens), warms it up, then sends the same number of requests
 * with the same concurrency (closed loop: one HTTP/2 session with N streams in flight, or N
 * keep-alive sockets) and reads the gateway process's CPU time (utime + stime, /proc) around
 * them. A fixed, modest concurrency keeps the batching alike on both sides, so CPU per request
 * compares the adapters rather than how busy the machine was (the throughput bench's CPU per
 * request moves with the rate it reached). Medians of the rounds are printed, with the gateway's
 * read and write system calls per request (/proc/<pid>/io syscr, syscw): unlike CPU time, those
 * counts do not move with other load on the machine.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startGatewayProcess } from '../test/helpers/gateway-process.ts';
import { h1ClosedLoop, h2ClosedLoop } from './closed-loop.ts';

const { values } = parseArgs({ options: { requests: { type: 'string', default: '4000' }, concurrency: { type: 'string', default: '8' }, rounds: { type: 'string', default: '2' } } });
const N = Number(values.requests);
const C = Number(values.concurrency);
const ROUNDS = Number(values.rounds);
const BODY = JSON.stringify({ model: 'ghost-small', prompt: 'def fib(n):', stream: true, max_tokens: 4 });
const TICK_MS = 1000 / 100; // USER_HZ

/** The process's read and write system calls so far (/proc/<pid>/io). */
function syscalls(pid: number): { r: number; w: number } {
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  return { r: Number(/^syscr: (\d+)$/m.exec(io)![1]), w: Number(/^syscw: (\d+)$/m.exec(io)![1]) };
}

function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_MS; // utime, stime (fields 14, 15)
}

const h2Load = (url: string, n: number): Promise<void> => h2ClosedLoop(url, n, BODY, C);
const h1Load = (url: string, n: number): Promise<void> => h1ClosedLoop(url, n, BODY, C);

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]!; };
const results: Record<string, number[]> = {};
const calls: Record<string, Array<{ r: number; w: number }>> = {};

for (let round = 1; round <= ROUNDS; round++) {
  for (const lane of [true, false]) {
    const teardowns: Array<() => unknown> = [];
    try {
      const g = await startGatewayProcess({ teardown: (fn) => teardowns.push(fn) }, {
        modelArgs: ['--ttft-ms', '0', '--token-ms', '0', '--tokens', '4'],
        extraConfig: `server: { fastLane: ${lane} }`,
      });
      for (const [proto, load] of [['h2', h2Load], ['h1', h1Load]] as const) {
        await load(g.url, Math.min(500, N));
        const before = cpuMs(g.child.pid!);
        const sc0 = syscalls(g.child.pid!);
        const t0 = performance.now();
        await load(g.url, N);
        const us = (cpuMs(g.child.pid!) - before) * 1000 / N;
        const sc = syscalls(g.child.pid!);
        const key = `${proto} fastLane ${lane ? 'on ' : 'off'}`;
        (results[key] ??= []).push(us);
        (calls[key] ??= []).push({ r: (sc.r - sc0.r) / N, w: (sc.w - sc0.w) / N });
        console.log(`round ${round}  ${key}: ${us.toFixed(0)} us CPU per request (${(N / ((performance.now() - t0) / 1000)).toFixed(0)} req/s), syscalls per request: ${((sc.r - sc0.r) / N).toFixed(2)} read, ${((sc.w - sc0.w) / N).toFixed(2)} write`);
      }
    } finally {
      for (const fn of teardowns.reverse()) await fn();
    }
  }
}
console.log(`\nmedian gateway CPU per request, ${N} requests x ${ROUNDS} rounds, concurrency ${C}:`);
for (const [k, v] of Object.entries(results)) {
  const c = calls[k]!;
  console.log(`  ${k}: ${median(v).toFixed(0)} us  (rounds: ${v.map((x) => x.toFixed(0)).join(', ')}); syscalls per request: ${median(c.map((x) => x.r)).toFixed(2)} read, ${median(c.map((x) => x.w)).toFixed(2)} write`);
}
