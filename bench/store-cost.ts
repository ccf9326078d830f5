/**
 * What one shared-store call costs the gateway, against a throwaway redis-server:
 *
 *   npx node bench/store-cost.ts [--n 20000]
 *
 * - `take` (rate-limit) one at a time: the wait a request sees (a loopback round trip + script);
 * - `take` with Redis idle before each call: how long the call stalls the caller's turn (the
 *   write wakes redis-server; why supersede's claim is written after the request goes upstream);
 * - `take` 64 at a time (autopipelined): the gateway's CPU per call;
 * - `lease` (rate-limit, shared: exact) one at a time, as a request holding no token waits for it,
 *   with another process's lease recorded in the bucket (its script reads the holders);
 * - `claim` (supersede, not awaited by requests): CPU per call.
 * - batch: a request's background commands as the typing load sends them (a prefetched lease and
 *   a claim in one turn, Redis idle between turns): written separately (two writes) vs together
 *   (`soon`: the socket corked, one write), CPU per turn; alternating rounds.
 * CPU is this process's user+system time divided by the calls; on a busy machine it is higher.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Registry } from 'prom-client';
import { RedisStore } from '../core/store/redis.ts';
import { silentLogger } from '../core/plugin-context.ts';

const { values } = parseArgs({ options: { n: { type: 'string', default: '20000' } } });
const N = Number(values.n);

const port = await new Promise<number>((resolve) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); }); });
const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-store-cost-'));
const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
process.on('exit', () => redis.kill('SIGKILL'));
redis.once('error', (e) => { process.stderr.write(`redis-server could not start: ${e.message} (apt-get install redis-server)\n`); process.exit(2); });

const store = new RedisStore({ url: `redis://127.0.0.1:${port}`, timeoutMs: 1000, retryMs: 50, keyPrefix: 'cost:' }, silentLogger, new Registry());
if (!(await store.whenUp(15_000))) { process.stderr.write('redis-server did not come up\n'); process.exit(2); }

const perMs = 1e6 / 1000; // never limited: measure the call, not denials
const pct = (xs: number[], p: number): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!; };
const cpuUs = (): number => { const c = process.cpuUsage(); return c.user + c.system; };

for (let i = 0; i < 2000; i++) await store.take(`warm${i % 50}`, perMs, 1e6);

const lat: number[] = [];
for (let i = 0; i < N; i++) {
  const t0 = performance.now();
  await store.take(`u${i % 500}`, perMs, 1e6);
  lat.push(performance.now() - t0);
}

// The call alone, Redis idle between calls (as at a few hundred requests a second): how long the
// caller's turn stalls in the call, i.e. in writing the command (the write wakes redis-server).
const stall: number[] = [];
for (let i = 0; i < Math.min(N, 2000); i++) {
  await new Promise((r) => setTimeout(r, 2));
  const t0 = performance.now();
  const p = store.take(`u${i % 500}`, perMs, 1e6);
  stall.push(performance.now() - t0);
  await p;
}

// A lease of 1 per call, reporting nothing held, on buckets another process also holds tokens of.
const other = new RedisStore({ url: `redis://127.0.0.1:${port}`, timeoutMs: 1000, retryMs: 50, keyPrefix: 'cost:' }, silentLogger, new Registry());
if (!(await other.whenUp(15_000))) { process.stderr.write('redis-server did not come up\n'); process.exit(2); }
for (let i = 0; i < 500; i++) await other.lease(`l${i}`, perMs, 1e6, 10, 0);
const leaseLat: number[] = [];
for (let i = 0; i < N; i++) {
  const t0 = performance.now();
  await store.lease(`l${i % 500}`, perMs, 1e6, 1, 0);
  leaseLat.push(performance.now() - t0);
}
await other.close();

const c0 = cpuUs();
for (let i = 0; i < N; i += 64) {
  const batch: Array<Promise<unknown> | undefined> = [];
  for (let j = 0; j < 64; j++) batch.push(store.take(`u${(i + j) % 500}`, perMs, 1e6));
  await Promise.all(batch);
}
const takeCpu = (cpuUs() - c0) / N;

const c1 = cpuUs();
for (let i = 0; i < N; i++) {
  const tok = store.newToken();
  store.claim(`doc${i % 500}`, tok);
  if (i % 64 === 63) await new Promise((r) => setImmediate(r));
}
await store.take('flush', perMs, 1e6); // one more round trip: the claims before it are answered
const claimCpu = (cpuUs() - c1) / N;

// A request's background commands, one request per turn with Redis idle between (typing load):
// a prefetched lease and a claim, written separately (the lease at once, the claim after the
// turn) or together (the lease via `soon`: both in the claim's corked write).
const TURNS = Math.min(N, 2000);
const batchCpu = { separate: [] as number[], together: [] as number[] };
for (let round = 0; round < 6; round++) {
  const together = round % 2 === 1;
  let spent = 0;
  for (let i = 0; i < TURNS; i++) {
    await new Promise((r) => setTimeout(r, 1));
    const c = cpuUs();
    let lease: Promise<unknown> | undefined;
    if (together) store.soon(() => { lease = store.lease(`b${i % 500}`, perMs, 1e6, 1, 0); });
    else lease = store.lease(`b${i % 500}`, perMs, 1e6, 1, 0);
    store.claim(`bdoc${i % 500}`, store.newToken());
    await new Promise((r) => setImmediate(r));
    await lease;
    spent += cpuUs() - c;
  }
  batchCpu[together ? 'together' : 'separate'].push(spent / TURNS);
}
const medianOf = (xs: number[]): number => pct(xs, 50);

process.stdout.write([
  `shared store (ioredis, redis-server on loopback), ${N} calls each, node ${process.version}, load ${os.loadavg()[0]!.toFixed(1)}`,
  `  take, one at a time: p50 ${pct(lat, 50).toFixed(3)} ms, p99 ${pct(lat, 99).toFixed(3)} ms (the wait a rate-limited request sees)`,
  `  take, Redis idle before each: the call itself (writing the command) takes p50 ${pct(stall, 50).toFixed(3)} ms, p99 ${pct(stall, 99).toFixed(3)} ms of the caller's turn`,
  `  take, 64 in flight:  ${takeCpu.toFixed(1)} us CPU per call in the gateway process`,
  `  lease, one at a time: p50 ${pct(leaseLat, 50).toFixed(3)} ms, p99 ${pct(leaseLat, 99).toFixed(3)} ms (the wait of a request whose process holds no token)`,
  `  claim:               ${claimCpu.toFixed(1)} us CPU per call (not awaited by the request)`,
  `  batch, a lease and a claim per turn, Redis idle between turns: written separately ${medianOf(batchCpu.separate).toFixed(1)} us CPU per turn, together (one write) ${medianOf(batchCpu.together).toFixed(1)} us (medians of 3 rounds each; the wait for the answers is included, the idle time between turns is not)`,
].join('\n') + '\n');
await store.close();
process.exit(0);
