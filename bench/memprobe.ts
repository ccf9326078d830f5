/**
 * `node bench/memprobe.ts`: which load grows the gateway's memory, and whether it is a leak or a
 * high-water mark. One gateway + model server (the soak's settings, no fault proxy), one of the
 * hostile client's attacks (bench/hostile.ts) repeated for --seconds (or `all` in rotation, or
 * `none`), and every --every seconds the gateway's RSS from /proc, then a forced full GC
 * (bench/mem-hook.mjs, loaded into the gateway with --expose-gc for this run only) and the V8 heap
 * used, external and arrayBuffers memory after it. After the load: the same 3 s and 10 s later.
 *
 *   node bench/memprobe.ts --attack slow-reader [--seconds 30] [--every 5] [--slot 5] [--env MALLOC_ARENA_MAX=2]
 *
 * A leak shows as heap/external after GC growing with time and staying up after the load; a
 * high-water mark as RSS that rises under load, levels off, and stays (the allocator keeps it)
 * while the heap and external memory after GC return to their idle size.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { GatewayProc, ROOT, freePort, gatewayDir, removeDir, sleep, startModel } from './harness.ts';
import { ATTACKS, Bag } from './hostile.ts';
import { SOAK_MODEL_ARGS, SOAK_POLICY, soakGatewayConfig } from './soak-config.ts';
import type { Start } from './hostile.ts';

const { values: argv } = parseArgs({
  args: process.argv.slice(2),
  options: { attack: { type: 'string' }, seconds: { type: 'string' }, every: { type: 'string' }, slot: { type: 'string' }, env: { type: 'string', multiple: true } },
});
const seconds = Number(argv.seconds ?? 30);
const every = Number(argv.every ?? 5);
const slot = Number(argv.slot ?? 5);
const attack = argv.attack ?? 'none';
const names = attack === 'all' ? ATTACKS.map((x) => x[0]) : attack === 'none' ? [] : [attack];
for (const n of names) if (!ATTACKS.some((x) => x[0] === n)) { process.stderr.write(`unknown attack ${n}; one of ${ATTACKS.map((x) => x[0]).join(', ')}, all, none\n`); process.exit(2); }

async function main(): Promise<void> {
  const model = await startModel(SOAK_MODEL_ARGS, true);
  const port = await freePort();
  const adminPort = await freePort();
  const files = gatewayDir(soakGatewayConfig(port, adminPort, model.url), { '10-soak.yaml': SOAK_POLICY });
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-memprobe-'));
  const out = path.join(tmp, 'mem.json');
  const env: NodeJS.ProcessEnv = { ...process.env, MEMPROBE_OUT: out, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --expose-gc --import ${path.join(ROOT, 'bench/mem-hook.mjs')}` };
  for (const kv of argv.env ?? []) { const i = kv.indexOf('='); env[kv.slice(0, i)] = kv.slice(i + 1); }
  const g = await GatewayProc.start(files.configFile, port, adminPort, env);
  const token = await g.token('memprobe');
  const t0 = Date.now();
  const rssMb = (): number => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${g.proc.pid}/status`, 'utf8'))?.[1]) / 1024;
  const sample = async (label: string): Promise<void> => {
    const rss = rssMb();
    rmSync(out, { force: true });
    process.kill(g.proc.pid, 'SIGUSR2');
    let m: { after: Record<string, number> } | undefined;
    for (let i = 0; i < 100 && !m; i++) { await sleep(50); try { m = JSON.parse(readFileSync(out, 'utf8')) as typeof m; } catch { /* not yet */ } }
    const a = m?.after ?? {};
    process.stdout.write(`${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s ${label.padEnd(16)} RSS ${rss.toFixed(1).padStart(6)} MB; after a full GC: heap used ${a.heapUsed} MB, external ${a.external} MB (arrayBuffers ${a.arrayBuffers} MB)\n`);
  };
  process.stdout.write(`memprobe: attack ${attack} for ${seconds} s; gateway env ${(argv.env ?? []).join(' ') || '(default)'}\n`);
  await sample('idle');
  const end = t0 + seconds * 1000;
  const sampler = (async () => { while (Date.now() + every * 1000 <= end) { await sleep(every * 1000); await sample('under load'); } })();
  const a: Start = { cmd: 'start', url: g.url, port, token, seconds, slotSeconds: slot };
  for (let k = 0; names.length && Date.now() < end; k++) {
    const fn = ATTACKS.find((x) => x[0] === names[k % names.length])![1];
    const bag = new Bag();
    await fn(a, Math.min(end, Date.now() + slot * 1000), bag).catch(() => { /* the attack's own failure */ });
    bag.close();
    await sleep(200);
  }
  await sleep(Math.max(0, end - Date.now()));
  await sampler;
  await sleep(3000);
  await sample('3 s after load');
  await sleep(7000);
  await sample('10 s after load');
  await g.proc.stop();
  await model.proc.stop();
  removeDir(files.dir);
  removeDir(tmp);
}
main().then(() => process.exit(0), (e: unknown) => { process.stderr.write(`memprobe failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`); process.exit(2); });
