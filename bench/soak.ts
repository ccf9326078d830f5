/**
 * `npm run soak`: a bounded soak on loopback. Well-behaved typing users (HTTP/2, and some
 * HTTP/1.1) with cancels, one hostile client rotating through attacks (bench/hostile.ts, its own
 * process), and an upstream fault every few seconds (bench/fault-proxy.ts between the gateway and
 * the real model server): kill and restart, hang, graceful close mid-stream, GOAWAY, stream reset.
 *
 *   node bench/soak.ts [--seconds 60] [--users 8] [--h1-users 4] [--fault-every 6] [--attack-seconds 5]
 *                      [--no-hostile] [--no-faults] [--json FILE]
 *
 * It prints requests by outcome, failures of well-behaved requests that no injected fault touched
 * (target 0), clean-but-truncated responses (target 0), the gateway's live memory (V8 heap used +
 * external after a forced full GC) and fds after one full rotation of the attacks and faults (the
 * baseline) and at the end (target: within 10%; `--seconds` is the measured phase after that
 * rotation), its RSS (shown: a high-water mark), and what is left open at the end: client connections
 * on the gateway's port, upstream streams (at the fault proxy, the model server, the gateway's
 * in-flight gauge) (target 0). Exit 1 when a target is missed. Everything it starts (processes,
 * temp folder, sockets) is stopped and removed at the end, also on Ctrl-C.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { FaultProxy } from './fault-proxy.ts';
import { GatewayProc, Proc, ROOT, freePort, gatewayDir, modelArrivals, procUsage, promValue, removeDir, sleep, socketsOnPort, startModel, startModelOn } from './harness.ts';
import { SOAK_MODEL_ARGS, SOAK_POLICY, soakGatewayConfig } from './soak-config.ts';
import { ATTACKS } from './hostile.ts';
import type { HostileStats } from './hostile.ts';
import { body, makePlan, newClient } from './loadgen.ts';
import type { Client } from './loadgen.ts';
import type { ClientProtocol, ReqRecord, TypingJob } from './types.ts';

const { values: argv } = parseArgs({
  args: process.argv.slice(2),
  options: {
    seconds: { type: 'string' }, users: { type: 'string' }, 'h1-users': { type: 'string' },
    'fault-every': { type: 'string' }, 'attack-seconds': { type: 'string' },
    'no-hostile': { type: 'boolean' }, 'no-faults': { type: 'boolean' }, json: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  },
});
if (argv.help) {
  process.stdout.write(`Usage: npm run soak -- [options]

  --seconds N         the measured phase, after a warm-up of one rotation of attacks and faults (~43 s) (default 60; at least 20)
  --users N           HTTP/2 typing users (default 8)
  --h1-users N        HTTP/1.1 keep-alive typing users (default 4)
  --fault-every N     seconds between upstream faults (default 6)
  --attack-seconds N  seconds per hostile attack before the next (default 5)
  --no-hostile        no hostile client
  --no-faults         no upstream faults
  --json FILE         also write every figure to FILE
`);
  process.exit(0);
}
const num = (v: string | undefined, d: number, min = 0): number => {
  if (v === undefined) return d;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) { process.stderr.write(`bad number: ${v} (at least ${min})\n`); process.exit(2); }
  return n;
};
const OPT = {
  seconds: num(argv.seconds, 60, 20),
  users: Math.floor(num(argv.users, 8)),
  h1Users: Math.floor(num(argv['h1-users'], 4)),
  faultEvery: num(argv['fault-every'], 6, 1),
  attackSeconds: num(argv['attack-seconds'], 5, 1),
  hostile: argv['no-hostile'] !== true,
  faults: argv['no-faults'] !== true,
};
const WARMUP_S = 6;
const FAULT_KINDS = ['kill', 'hang', 'graceful-close', 'goaway', 'reset'] as const;
/**
 * Before the baseline, one full rotation of the attacks and of the faults: RSS is a high-water
 * mark (the allocator keeps what it freed; Node's http2 and V8 size their buffers and heap to the
 * worst load seen), so a baseline taken before the worst load would compare high-water marks,
 * not detect leaks. The measured phase (`--seconds`) then runs the same mix again.
 */
const ROTATION_S = Math.max(OPT.hostile ? ATTACKS.length * (OPT.attackSeconds + 0.2) : 0, OPT.faults ? FAULT_KINDS.length * OPT.faultEvery + 2 : 0);
const COOLDOWN_S = 4;
/** A failure within this long after a fault window ended still counts as caused by it (reconnects). */
const FAULT_MARGIN_MS = 1500;
const MODEL_ARGS = SOAK_MODEL_ARGS;
const log = (s: string): void => { process.stderr.write(s + '\n'); };


interface Rec extends ReqRecord { protocol: ClientProtocol; endEpoch: number }
interface Window { kind: string; start: number; end: number }

type Outcome = 'ok' | 'cancelled' | 'failed (fault)' | 'failed (no fault)' | 'clean-but-truncated';

function classify(r: Rec, hit: Set<string>, windows: Window[]): Outcome {
  if (r.cancelled && r.error !== 'timeout') return 'cancelled';
  if (r.status === 200 && r.done) return 'ok';
  // A 200 that ended like a complete response, without [DONE] and without an error event.
  if (r.status === 200 && r.cleanEnd && !r.errorEvent) return 'clean-but-truncated';
  const byFault = hit.has(r.id) || windows.some((w) => r.startEpoch <= w.end + FAULT_MARGIN_MS && r.endEpoch >= w.start);
  return byFault ? 'failed (fault)' : 'failed (no fault)';
}

async function main(): Promise<number> {
  const t0 = Date.now();
  // A watchdog: whatever happens, stop (cleaning up) well after the planned end.
  const watchdog = setTimeout(() => { log('soak: still running 90 s past its end; stopping'); process.kill(process.pid, 'SIGTERM'); }, (OPT.seconds + 90) * 1000);
  watchdog.unref();
  const model = await startModel(MODEL_ARGS, true);
  let modelProc: Proc = model.proc;
  const proxy = new FaultProxy(model.url);
  await proxy.listen(0);
  const port = await freePort();
  const adminPort = await freePort();
  const files = gatewayDir(soakGatewayConfig(port, adminPort, `http://127.0.0.1:${proxy.port}`), { '10-soak.yaml': SOAK_POLICY });
  let gw: GatewayProc | undefined;
  let hostile: Proc | undefined;
  let stopping = false;
  const clients: Client[] = [];
  const cleanup = async (): Promise<void> => {
    stopping = true;
    for (const c of clients) await c.close().catch(() => { /* closing */ });
    hostile?.kill();
    await gw?.proc.stop();
    proxy.close();
    await modelProc.stop();
    removeDir(files.dir);
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { void cleanup().then(() => process.exit(130)); });
  try {
    // bench/mem-hook.mjs in the gateway: on SIGUSR2 a full GC, then its live memory (see `memory`).
    const memOut = path.join(files.dir, 'mem.json');
    gw = await GatewayProc.start(files.configFile, port, adminPort, { ...process.env, MEMPROBE_OUT: memOut, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --expose-gc --import ${path.join(ROOT, 'bench/mem-hook.mjs')}` });
    const g = gw;
    let gatewayExitAt = NaN;
    void g.proc.exited.then(() => { gatewayExitAt = Date.now(); if (!stopping) log(`  [${((gatewayExitAt - t0) / 1000).toFixed(1)} s] THE GATEWAY EXITED (code ${g.proc.exitCode}, signal ${g.proc.signal})`); });
    const token = await g.token('soak');
    log(`soak: ${OPT.seconds} s; ${OPT.users} HTTP/2 + ${OPT.h1Users} HTTP/1.1 typing users; hostile ${OPT.hostile ? `on (${OPT.attackSeconds} s per attack)` : 'off'}; upstream fault every ${OPT.faults ? `${OPT.faultEvery} s` : '— (off)'}; gateway pid ${g.proc.pid}`);

    // --- well-behaved users, for the whole run
    const records: Rec[] = [];
    const deadline = t0 + (WARMUP_S + ROTATION_S + OPT.seconds - COOLDOWN_S) * 1000;
    const job: TypingJob = { cmd: 'typing', url: g.url, tag: 's', users: 0, seconds: 0, thinkMinMs: 20, thinkMaxMs: 200, cancelShare: 0.45, beforeFirstShare: 1 / 3, ttftMs: 30, tokenMs: 5, maxTokens: 12, requestTimeoutMs: 20_000, authTokens: [token] };
    const user = async (u: number, protocol: ClientProtocol): Promise<void> => {
      const c = newClient(protocol, g.url);
      clients.push(c);
      await c.connect();
      for (let n = 0; Date.now() < deadline; n++) {
        const id = `s${protocol}-u${u}-${n}`;
        const startEpoch = performance.timeOrigin + performance.now();
        // The client's own hard timeout should end every request; this net catches a client stuck past it.
        const r = await Promise.race([
          c.send(id, body(job.maxTokens, n), makePlan(job), job.requestTimeoutMs, `Bearer ${token}`),
          sleep(job.requestTimeoutMs + 10_000).then((): ReqRecord => ({ id, plan: 'none', status: 0, startEpoch, ttfbMs: -1, durationMs: job.requestTimeoutMs + 10_000, cancelled: false, cancelAtEpoch: -1, tokensAtCancel: -1, tokens: 0, done: false, errorEvent: false, rstCode: 0, error: 'client stuck', reused: false, cleanEnd: false })),
        ]);
        if (r.error === 'client stuck') { log(`  ${id}: no end ${(job.requestTimeoutMs + 10_000) / 1000} s after it was sent; a new connection for this user`); await c.close(); }
        records.push({ ...r, protocol, endEpoch: r.startEpoch + r.durationMs });
        await sleep(job.thinkMinMs + Math.random() * (job.thinkMaxMs - job.thinkMinMs));
      }
    };
    const users = [
      ...Array.from({ length: OPT.users }, (_, u) => user(u, 'h2')),
      ...Array.from({ length: OPT.h1Users }, (_, u) => user(u, 'h1')),
    ];

    // The gateway's RSS every 10 s through the run: a leak keeps climbing, a high-water mark levels off.
    const rssSeries: Array<[number, number]> = [];
    const rssTimer = setInterval(() => { if (g.proc.alive) rssSeries.push([Math.round((Date.now() - t0) / 1000), Math.round(procUsage(g.proc.pid).rssBytes / 2 ** 20)]); }, 10_000);
    rssTimer.unref();

    // --- users alone for a moment, then attacks and faults
    await sleep(WARMUP_S * 1000);
    const users0 = { rssBytes: procUsage(g.proc.pid).rssBytes, at: Date.now() };

    // --- hostile client
    let hostileStats: HostileStats | undefined;
    /** When each attack started (the one running at a moment is the last started before it). */
    const attacks: Array<{ name: string; at: number }> = [];
    const attackAt = (epochMs: number): string => {
      let a = 'none';
      for (const x of attacks) if (x.at <= epochMs) a = x.name;
      return a;
    };
    let hostileDone: Promise<void> = Promise.resolve();
    if (OPT.hostile) {
      const h = new Proc('hostile client', ['bench/hostile.ts'], process.env, true);
      hostile = h;
      hostileDone = new Promise<void>((res) => {
        h.child.on('message', (m: { ready?: boolean; attack?: string; done?: boolean; stats?: HostileStats }) => {
          if (m.ready) h.child.send({ cmd: 'start', url: g.url, port, token, seconds: Math.max(1, (deadline - Date.now()) / 1000), slotSeconds: OPT.attackSeconds });
          if (m.attack) { attacks.push({ name: m.attack, at: Date.now() }); log(`  [${((Date.now() - t0) / 1000).toFixed(1)} s] attack: ${m.attack}`); }
          if (m.done) { hostileStats = m.stats; res(); }
        });
        void h.exited.then(() => res());
      });
    }

    // --- upstream faults
    const windows: Window[] = [];
    const faultLog: string[] = [];
    const waitLive = async (ms: number): Promise<void> => {
      const until = Date.now() + ms;
      while (Date.now() < until) {
        try {
          const u = (await g.json<Record<string, { live: number }>>('/-/upstreams')).body;
          if ((u.local?.live ?? 0) >= 1) return;
        } catch { /* retry */ }
        await sleep(50);
      }
    };
    const faults = async (): Promise<void> => {
      const kinds = FAULT_KINDS;
      for (let k = 0; ; k++) {
        const next = Date.now() + OPT.faultEvery * 1000;
        if (next + 3000 >= deadline) return;
        await sleep(next - Date.now());
        const kind = kinds[k % kinds.length]!;
        const w: Window = { kind, start: Date.now(), end: 0 };
        if (kind === 'kill') {
          proxy.kill();
          modelProc.kill('SIGKILL');
          await modelProc.exited;
          await sleep(500);
          modelProc = await startModelOn(model.port, MODEL_ARGS, true);
          await proxy.revive();
          await waitLive(10_000);
        } else if (kind === 'hang') {
          await proxy.hang(2000);
        } else if (kind === 'graceful-close') {
          proxy.gracefulClose();
        } else if (kind === 'goaway') {
          proxy.goaway();
        } else {
          proxy.reset(3);
        }
        w.end = Date.now();
        windows.push(w);
        faultLog.push(`${kind} at ${((w.start - t0) / 1000).toFixed(1)} s (${w.end - w.start} ms)`);
        log(`  [${((w.start - t0) / 1000).toFixed(1)} s] fault: ${kind} (${w.end - w.start} ms)`);
      }
    };
    // The admin plane must stay answerable whatever the data plane endures.
    const ping = { probes: 0, failed: 0, maxMs: 0 };
    const pinger = (async (): Promise<void> => {
      while (Date.now() < deadline) {
        const t = performance.now();
        const ok = await fetch(`${g.admin}/_ping`, { signal: AbortSignal.timeout(5000) }).then((r) => r.status === 200 || r.status === 503, () => false);
        ping.probes++;
        if (!ok) ping.failed++;
        ping.maxMs = Math.max(ping.maxMs, performance.now() - t);
        await sleep(500);
      }
    })();
    const faultsDone = OPT.faults ? faults().catch((e: unknown) => { log(`  fault injection failed: ${e instanceof Error ? e.message : String(e)}`); }) : Promise.resolve();

    // --- the baseline: after one full rotation of attacks and faults (see ROTATION_S), taken
    // when the hostile client starts its second rotation (its first attacks' connections closed).
    const baselineAt = t0 + (WARMUP_S + ROTATION_S) * 1000;
    while (Date.now() < baselineAt + 15_000 && !(attacks.length > ATTACKS.length) && !(Date.now() >= baselineAt && !OPT.hostile)) await sleep(100);
    const start = { ...withoutClients(procUsage(g.proc.pid), socketsOnPort(g.proc.pid, port)), ...await memory(g, memOut), at: Date.now() };
    log(`  [${((start.at - t0) / 1000).toFixed(1)} s] baseline after one rotation of attacks and faults: gateway RSS ${(start.rssBytes / 2 ** 20).toFixed(1)} MB (${(users0.rssBytes / 2 ** 20).toFixed(1)} MB before the first attack), ${start.fds} fds besides client connections; ${records.length} requests so far`);

    await Promise.all(users);
    await pinger;
    log(`  [${((Date.now() - t0) / 1000).toFixed(1)} s] users done`);
    if (hostile?.child.connected) hostile.child.send({ cmd: 'stop' });
    await Promise.race([hostileDone, sleep(10_000)]);
    await faultsDone;
    for (const c of clients) await c.close();
    await hostile?.stop();
    log(`  [${((Date.now() - t0) / 1000).toFixed(1)} s] hostile client and faults done; settling`);

    // --- one-write attack: how many of its requests reached the model anyway
    const oneWriteReached = hostileStats ? (await modelArrivals(modelProc, hostileStats.oneWritePrefix)).length : 0;

    // --- settle, then what is left open
    const settleUntil = Date.now() + 10_000;
    let left = { clientConns: NaN, clientConnsGauge: NaN, proxyStreams: NaN, modelInFlight: NaN, inflightGauge: NaN, upstreamDraining: NaN, upstreamStreams: NaN };
    for (;;) {
      const m = await g.metrics().catch(() => '');
      const ms = await fetch(`${model.url}/_stats`, { signal: AbortSignal.timeout(5000) }).then((r) => r.json() as Promise<{ inFlight: number }>).catch(() => ({ inFlight: NaN }));
      // ghostgate_client_connections (the gateway's own count of open client connections), if this build has it.
      const gauge = /^ghostgate_client_connections /m.test(m) ? promValue(m, 'ghostgate_client_connections') : NaN;
      const ups = await g.json<Record<string, { draining?: number; streams?: number }>>('/-/upstreams').then((x) => x.body, () => ({} as Record<string, { draining?: number; streams?: number }>));
      left = { clientConns: socketsOnPort(g.proc.pid, port), clientConnsGauge: gauge, proxyStreams: proxy.openStreams, modelInFlight: ms.inFlight, inflightGauge: promValue(m, 'ghostgate_inflight_requests'), upstreamDraining: ups.local?.draining ?? NaN, upstreamStreams: ups.local?.streams ?? NaN };
      if (!(left.upstreamDraining > 0) && !(left.upstreamStreams > 0) && (left.clientConns === 0 || Number.isNaN(left.clientConns)) && !(left.clientConnsGauge > 0) && left.proxyStreams === 0 && left.inflightGauge === 0 && !(left.modelInFlight > 0)) break;
      if (Date.now() > settleUntil) break;
      await sleep(200);
    }
    await sleep(1000);
    const end = { ...withoutClients(procUsage(g.proc.pid), socketsOnPort(g.proc.pid, port)), ...(g.proc.alive ? await memory(g, memOut) : { heapUsedBytes: NaN, heapTotalBytes: NaN, externalBytes: NaN, liveBytes: NaN, arrayBuffersBytes: NaN }), at: Date.now() };
    clearInterval(rssTimer);
    const upstreams = g.proc.alive ? (await g.json<Record<string, unknown>>('/-/upstreams')).body : {};
    const metrics = g.proc.alive ? await g.metrics() : '';

    // --- figures
    const outcomes: Record<string, Record<Outcome, number>> = {};
    const noFault: string[] = [];
    const noFaultByAttack: Record<string, number> = {};
    const bump = (m: Record<string, number>, k: string): void => { m[k] = (m[k] ?? 0) + 1; };
    const truncated: string[] = [];
    for (const r of records) {
      const o = classify(r, proxy.hit, windows);
      const by = (outcomes[r.protocol] ??= { ok: 0, cancelled: 0, 'failed (fault)': 0, 'failed (no fault)': 0, 'clean-but-truncated': 0 });
      by[o]++;
      const what = `${r.id} status ${r.status}${r.error ? ` ${r.error}` : ''}${r.rstCode ? ` rst ${r.rstCode}` : ''}${r.errorEvent ? ' (error event)' : ''}, ${r.tokens} tokens, at ${((r.startEpoch - t0) / 1000).toFixed(1)} s for ${r.durationMs.toFixed(0)} ms, during attack ${attackAt(r.startEpoch)}`;
      if (o === 'failed (no fault)') bump(noFaultByAttack, attackAt(r.startEpoch));
      if (o === 'failed (no fault)' && noFault.length < 20) {
        // Where its time went: arrival at the fault proxy, the model's head, its end there (ms after it was sent).
        const tr = proxy.trace.get(r.id);
        const rel = (x: number | undefined): string => (x === undefined || x < 0 ? '—' : (x - r.startEpoch).toFixed(0));
        noFault.push(`${what}; at the upstream: ${tr ? `arrived +${rel(tr.at)} ms (${tr.queuedBehind} streams open there, upstream session #${tr.upSession}), model head +${rel(tr.modelHead)} ms, ended +${rel(tr.end)} ms (${tr.how})` : 'never arrived'}`);
      }
      if (o === 'clean-but-truncated' && truncated.length < 20) truncated.push(what);
    }
    const sum = (o: Outcome): number => Object.values(outcomes).reduce((n, by) => n + by[o], 0);
    const within = (a: number, b: number): boolean => Number.isFinite(a) && Number.isFinite(b) && Math.abs(b - a) <= 0.1 * a;
    const checks = [
      { name: 'gateway process alive at the end', pass: g.proc.alive, value: g.proc.alive ? 'yes' : `exited ${g.proc.exitCode}` },
      { name: 'well-behaved failures not hit by a fault', pass: sum('failed (no fault)') === 0, value: String(sum('failed (no fault)')) },
      { name: 'clean-but-truncated responses', pass: sum('clean-but-truncated') === 0, value: String(sum('clean-but-truncated')) },
      // Grown by at most 10%: the baseline is taken under load (requests in flight hold memory), the end idle, so less is no leak.
      { name: 'gateway live memory after a full GC (V8 heap used + external), baseline → end grown ≤ 10%', pass: Number.isFinite(start.liveBytes) && end.liveBytes <= 1.1 * start.liveBytes, value: `${(start.liveBytes / 2 ** 20).toFixed(1)} → ${(end.liveBytes / 2 ** 20).toFixed(1)} MB` },
      { name: 'gateway fds (besides client connections) start → end within 10%', pass: within(start.fds, end.fds), value: `${start.fds} → ${end.fds}` },
      { name: 'client connections left open on the gateway (sockets / gauge)', pass: left.clientConns === 0 && !(left.clientConnsGauge > 0), value: `${left.clientConns} / ${Number.isNaN(left.clientConnsGauge) ? 'no gauge' : left.clientConnsGauge}` },
      { name: 'upstream streams left open (at the upstream / in-flight gauge / gateway upstream streams)', pass: left.proxyStreams === 0 && left.inflightGauge === 0 && !(left.modelInFlight > 0) && !(left.upstreamStreams > 0), value: `${left.proxyStreams} / ${left.inflightGauge} / ${left.upstreamStreams} (model in flight ${left.modelInFlight})` },
      { name: 'upstream sessions left draining 10 s after the load', pass: !(left.upstreamDraining > 0), value: String(left.upstreamDraining) },
    ];
    const out: string[] = [];
    out.push(`ghostgate soak: ${((Date.now() - t0) / 1000).toFixed(0)} s, ${records.length} well-behaved requests (${OPT.users} HTTP/2 + ${OPT.h1Users} HTTP/1.1 typing users, 45% cancelled)`);
    out.push('');
    out.push('requests by outcome      ok   cancelled   failed (fault)   failed (no fault)   clean-but-truncated');
    for (const [p, by] of Object.entries(outcomes)) out.push(`  ${p === 'h2' ? 'HTTP/2  ' : 'HTTP/1.1'}            ${String(by.ok).padStart(6)}  ${String(by.cancelled).padStart(10)}  ${String(by['failed (fault)']).padStart(15)}  ${String(by['failed (no fault)']).padStart(18)}  ${String(by['clean-but-truncated']).padStart(20)}`);
    if (Object.keys(noFaultByAttack).length) out.push(`  failed (no fault) by the attack running when they were sent: ${JSON.stringify(noFaultByAttack)}`);
    for (const x of noFault) out.push(`    failed, no fault: ${x}`);
    for (const x of truncated) out.push(`    clean but truncated: ${x}`);
    out.push('');
    out.push(`upstream faults (${windows.length}): ${faultLog.join('; ') || 'none'}`);
    out.push(`  fault proxy: ${proxy.counts.streams} streams, ${proxy.hit.size} request ids touched by a fault, ${proxy.counts.resetByFault} reset, ${proxy.counts.cutNoError} cut with RST(NO_ERROR), ${proxy.counts.refused} refused, ${proxy.counts.goaways} GOAWAYs`);
    if (hostileStats) {
      out.push('hostile client:');
      for (const [name, a] of Object.entries(hostileStats.attacks)) out.push(`  ${name.padEnd(12)} ×${a.runs}: ${a.opened} opened; ${JSON.stringify(a.answers)}; ${a.note}`);
      out.push(`  one-write (HEADERS+DATA+RST in one write): ${oneWriteReached} of ${hostileStats.oneWriteSent} reached the model (issue 10.2: 0)`);
    }
    out.push('');
    const mb = (n: number): string => (n / 2 ** 20).toFixed(1);
    out.push(`gateway RSS ${mb(users0.rssBytes)} MB (users only, before the first attack) → ${mb(start.rssBytes)} MB (baseline, after one rotation, at ${((start.at - t0) / 1000).toFixed(0)} s) → ${mb(end.rssBytes)} MB (end, at ${((end.at - t0) / 1000).toFixed(0)} s); RSS is a high-water mark, shown, not a target (bench/README.md, *Memory*); after a full GC: V8 heap used ${mb(start.heapUsedBytes)} → ${mb(end.heapUsedBytes)} MB (V8 heap reserved ${mb(start.heapTotalBytes)} → ${mb(end.heapTotalBytes)} MB), external ${mb(start.externalBytes)} → ${mb(end.externalBytes)} MB (arrayBuffers ${mb(start.arrayBuffersBytes)} → ${mb(end.arrayBuffersBytes)} MB); fds besides client connections ${start.fds} → ${end.fds} (with them: ${start.fdsAll} → ${end.fdsAll})`);
    out.push(`  RSS every 10 s (s: MB), highest ${Math.max(...rssSeries.map((x) => x[1]))} MB: ${rssSeries.map(([at, v]) => `${at}: ${v}`).join(', ')}`);
    out.push(`left open at the end: client connections ${left.clientConns} (ghostgate_client_connections ${Number.isNaN(left.clientConnsGauge) ? '—' : left.clientConnsGauge}); upstream streams at the fault proxy ${left.proxyStreams}, in the model server ${left.modelInFlight}; ghostgate_inflight_requests ${left.inflightGauge}; upstream sessions at the fault proxy ${proxy.sessions}, draining in the gateway ${left.upstreamDraining} with ${left.upstreamStreams} streams open (10 s after the load)`);
    out.push(`admin /_ping every 0.5 s: ${ping.probes} probes, ${ping.failed} unanswered within 5 s, slowest ${ping.maxMs.toFixed(0)} ms`);
    out.push(`/-/upstreams: ${JSON.stringify(upstreams)}`);
    out.push(`gateway: requests by outcome ${JSON.stringify(outcomesFromProm(metrics))}; cancelled before forward ${promValue(metrics, 'ghostgate_cancelled_before_forward_total')}; upstream retries ${promValue(metrics, 'ghostgate_upstream_retries_total')}; client connections ${promValue(metrics, 'ghostgate_client_connections_total')}`);
    out.push('');
    if (!g.proc.alive) out.push(`the gateway exited (code ${g.proc.exitCode}, signal ${g.proc.signal}) at ${((gatewayExitAt - t0) / 1000).toFixed(1)} s; its stderr ends:\n${g.proc.stderrTail.slice(-3000)}`, '');
    for (const c of checks) out.push(`${c.pass ? 'PASS' : 'FAIL'}  ${c.name}: ${c.value}`);
    const failed = checks.filter((c) => !c.pass).length;
    out.push(`targets: ${checks.length - failed}/${checks.length} PASS`);
    process.stdout.write(out.join('\n') + '\n');
    if (argv.json) writeFileSync(argv.json, JSON.stringify({ options: OPT, checks, outcomes, windows, proxy: proxy.counts, hostile: hostileStats, oneWriteReached, users0, start, end, rssSeries, left, upstreams, adminPing: ping, failedNoFault: noFault, failedNoFaultByAttack: noFaultByAttack, truncated }, null, 2));
    return failed === 0 ? 0 : 1;
  } finally {
    await cleanup();
  }
}

/**
 * The gateway's live memory: a full GC forced through bench/mem-hook.mjs (SIGUSR2), then V8 heap
 * used and external memory (Buffers, ArrayBuffers, which V8 tracks) after it; `liveBytes` is
 * their sum. What a leak grows, unlike RSS (see bench/README.md, *Memory*).
 */
async function memory(g: GatewayProc, file: string): Promise<{ heapUsedBytes: number; heapTotalBytes: number; externalBytes: number; arrayBuffersBytes: number; liveBytes: number }> {
  rmSync(file, { force: true });
  process.kill(g.proc.pid, 'SIGUSR2');
  for (let i = 0; i < 200; i++) {
    await sleep(50);
    try {
      const a = (JSON.parse(readFileSync(file, 'utf8')) as { after: { heapUsed: number; heapTotal: number; external: number; arrayBuffers: number } }).after;
      return { heapUsedBytes: a.heapUsed * 2 ** 20, heapTotalBytes: a.heapTotal * 2 ** 20, externalBytes: a.external * 2 ** 20, arrayBuffersBytes: a.arrayBuffers * 2 ** 20, liveBytes: (a.heapUsed + a.external) * 2 ** 20 };
    } catch { /* not written yet */ }
  }
  return { heapUsedBytes: NaN, heapTotalBytes: NaN, externalBytes: NaN, arrayBuffersBytes: NaN, liveBytes: NaN };
}

function withoutClients(u: { rssBytes: number; fds: number }, clientConns: number): { rssBytes: number; fds: number; fdsAll: number } {
  return { rssBytes: u.rssBytes, fds: u.fds - (Number.isFinite(clientConns) ? clientConns : 0), fdsAll: u.fds };
}

function outcomesFromProm(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith('ghostgate_requests_total{')) continue;
    const o = /outcome="([^"]*)"/.exec(line)?.[1] ?? '';
    out[o] = (out[o] ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return out;
}

main().then((code) => process.exit(code), (e: unknown) => {
  process.stderr.write(`soak failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(2);
});
