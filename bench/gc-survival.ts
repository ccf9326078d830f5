/**
 * What survives V8's young-generation GC (scavenges) in a server under closed-loop load, and what
 * the scavenges cost: `npx node bench/gc-survival.ts [--requests 100000] [--rounds 3] [--sites]`.
 *
 * Why: the gateway's TTFB p99 tail (+10 ms over direct in `npm run bench`) and a sixth of its
 * CPU are young-generation GC. A scavenge costs in proportion to what survives it, and a request
 * path should leave little alive. This measures, with `--trace-gc-nvp` in each server process:
 *   - node-h1:  a plain `http.createServer` answering like the model server (SSE head, a chunk, end)
 *   - node-h2:  the same on `http2.createServer` (the raw 'stream' API, no compat layer)
 *   - node-h2-client: Node's HTTP/2 client alone, one request at a time on one session, against
 *               node-h2's server; here the client process is the one measured
 *   - model:    the bundled model server (model-server/main.ts, Node http2), as the bench runs it
 *   - relay:    bench/null-proxy.ts (Node's http2 relaying each stream, nothing else) before the model
 *   - gateway:  ghostgate (`start`, no policies) in front of the model server, HTTP/2 clients
 *   - gateway:keep: the same with `server.keepAsyncResourceProperty: true` (Node's own
 *               AsyncResource.prototype.bind, without core/runtime-patches.ts)
 *   - gateway:semi=N: with `--semi N,...`, one gateway per `server.semiSpaceMb` value (0 = Node's
 *               default young generation; docs/operations.md#young-generation-v8-semi-space)
 * The client is this process (HTTP/2: 4 sessions × 16 streams; HTTP/1.1: 16 keep-alive sockets);
 * it also reports requests per second and, over HTTP/2, the time to response headers (p50, p99:
 * under closed-loop load that is queueing plus the server's pauses).
 * Per subject: bytes allocated per request, the share of young-generation allocation still alive
 * at a scavenge ("survived"), the share promoted to the old generation, and per 100,000 requests
 * the scavenges, their pauses (p50, p99, max, total) and mark-compacts. Medians of rounds.
 * `--sites`: then two more phases of `--requests` each under V8's sampling heap profiler
 * (bench/gc-sites-hook.mjs), and the allocation sites whose objects outlived a scavenge
 * (bench/gc-sites.ts; `--by top|ours|chain`).
 *
 * Finding (see bench/README.md, "GC"): Node's HTTP/2 keeps 10–25% of what a request allocates
 * alive across scavenges, nearly all of it then promoted (and collected only by mark-compact);
 * its client does so even with one request at a time. HTTP/1.1 keeps well under 1%. The gateway,
 * an HTTP/2 server and an HTTP/2 client at once, inherits both sides: its survivors are, by
 * allocation site, Node's stream objects and what hangs off them.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { h1ClosedLoop, h2ClosedLoop } from './closed-loop.ts';
import { readProfiles, siteReport } from './gc-sites.ts';
import type { SiteKey } from './gc-sites.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const { values } = parseArgs({ options: {
  requests: { type: 'string', default: '100000' }, rounds: { type: 'string', default: '3' }, only: { type: 'string' },
  // More gateways, with their own Node flags: --variant 'big=--max-semi-space-size=64 --scavenger-max-new-space-capacity-mb=128'
  variant: { type: 'string', multiple: true, default: [] },
  // More gateways, one per server.semiSpaceMb value (0 = Node's default): --semi 0,4,8,16
  semi: { type: 'string' },
  // Also the allocation sites whose objects outlive scavenges (bench/gc-sites.ts), per subject and round.
  sites: { type: 'boolean', default: false },
  by: { type: 'string', default: 'chain' },
  // How node-h2-client uses each stream (SEQUENTIAL_CLIENT): resume, data, close, destroy, array.
  'client-mode': { type: 'string', default: 'resume' },
  // Node flags for node-h2-client's process, e.g. '--import ./bench/bind-hook.mjs'.
  'client-flags': { type: 'string', default: '' },
} });
const N = Number(values.requests);
const ROUNDS = Number(values.rounds);
const BODY = JSON.stringify({ model: 'ghost-small', prompt: 'def fib(n):', stream: true, max_tokens: 4 });

const PLAIN_SERVER = `
const proto = process.argv[1];
const onEnd = (write) => write();
const sse = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' };
if (proto === 'h2') {
  const s = require('node:http2').createServer();
  s.on('stream', (st) => { st.resume(); st.on('end', () => { st.respond({ ':status': 200, ...sse }); st.write('data: {"t":"a"}\\n\\n'); st.end('data: [DONE]\\n\\n'); }); });
  s.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: s.address().port })));
} else {
  const s = require('node:http').createServer((q, r) => { q.resume(); q.on('end', () => { r.writeHead(200, sse); r.write('data: {"t":"a"}\\n\\n'); r.end('data: [DONE]\\n\\n'); }); });
  s.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: s.address().port })));
}`;

/**
 * Sequential POSTs on one HTTP/2 session, for ever; prints {"done":n} every 1000 requests. Mode
 * (argv[2]): resume (read by resume()), data (a 'data' listener), close / destroy (stream.close()
 * or destroy() at 'end'), array (headers as a raw array instead of an object).
 */
const SEQUENTIAL_CLIENT = `
const s = require('node:http2').connect(process.argv[1]);
const mode = process.argv[2];
const body = ${JSON.stringify(BODY)};
let n = 0;
const one = () => {
  const st = mode === 'array'
    ? s.request([':method', 'POST', ':path', '/v1/completions', 'content-type', 'application/json'])
    : s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' });
  if (mode === 'data') st.on('data', () => {}); else st.resume();
  if (mode === 'close') st.on('end', () => st.close());
  if (mode === 'destroy') st.on('end', () => st.destroy());
  st.on('close', () => { if (++n % 1000 === 0) console.log(JSON.stringify({ done: n })); one(); });
  st.end(body);
};
s.once('connect', one);`;

interface Proc { child: ChildProcess; out: string; exited: Promise<void>; sitesDir: string }

/** Every child still running: killed when this script ends, however it ends. */
const running = new Set<ChildProcess>();
process.on('exit', () => { for (const c of running) c.kill('SIGKILL'); });
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));

/** A server process; with `measured` and --sites it loads bench/gc-sites-hook.mjs. */
function start(args: string[], measured = true): Proc {
  const sitesDir = values.sites && measured ? mkdtempSync(path.join(os.tmpdir(), 'ghostgate-gc-sites-')) : '';
  const hook = sitesDir ? ['--import', path.join(ROOT, 'bench/gc-sites-hook.mjs')] : [];
  const child = spawn(process.execPath, [...hook, ...args], { cwd: ROOT, env: { ...process.env, GC_SITES_DIR: sitesDir }, stdio: ['ignore', 'pipe', 'inherit'] });
  running.add(child);
  const p: Proc = { child, out: '', sitesDir, exited: new Promise((r) => child.once('exit', () => { running.delete(child); r(); })) };
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => { p.out += d; });
  return p;
}

async function waitFor<T>(what: string, fn: () => T | undefined, ms = 20_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const portIn = (p: Proc, re: RegExp): Promise<number> => waitFor('a port', () => { const m = p.out.match(re); return m ? Number(m[1]) : undefined; });

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Time to response headers of the measured phase's HTTP/2 requests (ms). */
let ttfb: number[] | undefined;
const h2Load = (url: string, n: number): Promise<void> => h2ClosedLoop(url, n, BODY, 64, 4, ttfb);
const h1Load = (url: string, n: number): Promise<void> => h1ClosedLoop(url, n, BODY, 16);

interface GcStats { reqPerSec: number; ttfbP50: number; ttfbP99: number; bytesPerRequest: number; scavenges: number; survivedPct: number; promotedPct: number; pauseP50: number; pauseP99: number; pauseMax: number; pauseTotal: number; markCompacts: number; mcPauseMax: number }

/**
 * The GCs logged by --trace-gc-nvp in `text`, over `requests` requests. Scavenges, pauses and
 * mark-compacts are per 100,000 requests; bytes allocated per request (every space) is what the
 * GCs report as allocated since the GC before them.
 */
function gcStats(text: string, requests: number): GcStats {
  const all = text.split('\n').filter((l) => l.includes(' gc='));
  const lines = all.filter((l) => l.includes(' gc=s '));
  const num = (l: string, k: string): number => Number(l.match(new RegExp(` ${k}=([\\d.]+)`))?.[1] ?? 0);
  const alloc = lines.reduce((a, l) => a + num(l, 'allocated'), 0);
  const per = 100_000 / requests;
  const pauses = lines.map((l) => num(l, 'pause')).sort((a, b) => a - b);
  const mc = text.split('\n').filter((l) => l.includes(' gc=mc ')).map((l) => num(l, 'pause'));
  return {
    reqPerSec: 0, ttfbP50: 0, ttfbP99: 0,
    bytesPerRequest: all.reduce((a, l) => a + num(l, 'allocated'), 0) / requests,
    pauseTotal: per * pauses.reduce((a, x) => a + x, 0),
    markCompacts: per * mc.length,
    mcPauseMax: Math.max(0, ...mc),
    scavenges: per * lines.length,
    survivedPct: alloc > 0 ? 100 * lines.reduce((a, l) => a + num(l, 'new_space_survived'), 0) / alloc : 0,
    promotedPct: alloc > 0 ? 100 * lines.reduce((a, l) => a + num(l, 'promoted'), 0) / alloc : 0,
    pauseP50: pauses[Math.floor(pauses.length / 2)] ?? 0,
    pauseP99: pauses[Math.min(pauses.length - 1, Math.floor(pauses.length * 0.99))] ?? 0,
    pauseMax: pauses[pauses.length - 1] ?? 0,
  };
}

/** A measured process; `load`, if set, replaces the bench's own client (the process makes its own requests). */
type Subject = { name: string; proto: 'h1' | 'h2'; run(): Promise<{ url: string; server: Proc; stop(): Promise<void>; load?: (n: number) => Promise<void> }> };

const GC = ['--trace-gc-nvp'];
const MODEL_ARGS = ['--ttft-ms', '0', '--token-ms', '0', '--tokens', '4'];

async function stopAll(...ps: Proc[]): Promise<void> {
  for (const p of ps) p.child.kill('SIGKILL');
  await Promise.all(ps.map((p) => p.exited));
}

const subjects: Subject[] = [
  ...(['h1', 'h2'] as const).map((proto): Subject => ({ name: `node-${proto}`, proto, async run() {
    const p = start([...GC, '-e', PLAIN_SERVER, proto]);
    const port = await portIn(p, /\{"port":(\d+)\}/);
    return { url: `http://127.0.0.1:${port}`, server: p, stop: () => stopAll(p) };
  } })),
  { name: 'model', proto: 'h2', async run() {
    const p = start([...GC, 'model-server/main.ts', '--port', '0', ...MODEL_ARGS]);
    const port = await portIn(p, /"event":"listening","port":(\d+)/);
    return { url: `http://127.0.0.1:${port}`, server: p, stop: () => stopAll(p) };
  } },
  // Node's HTTP/2 client alone: one session, one request at a time (no concurrency to keep
  // anything in flight), against the plain HTTP/2 server; the client process is the one measured.
  { name: 'node-h2-client', proto: 'h2', async run() {
    const srv = start(['-e', PLAIN_SERVER, 'h2'], false);
    const url = `http://127.0.0.1:${await portIn(srv, /\{"port":(\d+)\}/)}`;
    const c = start([...GC, ...values['client-flags'].split(' ').filter(Boolean), '-e', SEQUENTIAL_CLIENT, url, values['client-mode']]);
    const done = (): number => { const i = c.out.lastIndexOf('{"done":'); return i < 0 ? 0 : Number(c.out.slice(i + 8, c.out.indexOf('}', i))); };
    const load = async (n: number): Promise<void> => { const until = done() + n; await waitFor(`${n} requests`, () => done() >= until || undefined, 600_000); };
    return { url, server: c, stop: () => stopAll(c, srv), load };
  } },
  // The least HTTP/2 proxy on Node (bench/null-proxy.ts) in front of the model server: what the
  // gateway's two HTTP/2 sides cost before any of its own work.
  { name: 'relay', proto: 'h2', async run() {
    const m = start(['model-server/main.ts', '--port', '0', ...MODEL_ARGS], false);
    const modelPort = await portIn(m, /"event":"listening","port":(\d+)/);
    const p = start([...GC, 'bench/null-proxy.ts', '--port', String(await freePort()), '--upstream', `http://127.0.0.1:${modelPort}`]);
    const port = await portIn(p, /"event":"listening","port":(\d+)/);
    return { url: `http://127.0.0.1:${port}`, server: p, stop: () => stopAll(p, m) };
  } },
  // gateway:keep: with Node's own AsyncResource.prototype.bind (core/runtime-patches.ts not applied).
  ...[['gateway', '', ''], ['gateway:keep', '', 'server: { keepAsyncResourceProperty: true }'], ...values.variant.map((v) => [`gateway:${v.slice(0, v.indexOf('='))}`, v.slice(v.indexOf('=') + 1), '']),
    ...(values.semi?.split(',') ?? []).map((mb) => [`gateway:semi=${mb}`, '', `server: { semiSpaceMb: ${mb} }`])].map(([name, flags, yaml]): Subject => ({ name: name!, proto: 'h2', async run() {
    const m = start(['model-server/main.ts', '--port', '0', ...MODEL_ARGS], false);
    const modelPort = await portIn(m, /"event":"listening","port":(\d+)/);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-gc-'));
    const [port, admin] = [await freePort(), await freePort()];
    writeFileSync(path.join(dir, 'gateway.config.yaml'), [
      `listen: { host: 127.0.0.1, port: ${port} }`, `admin: { host: 127.0.0.1, port: ${admin} }`,
      `upstreams: { local: { url: 'http://127.0.0.1:${modelPort}', protocol: h2c, pool: { size: 2 } } }`,
      'models: { ghost-small: { upstream: local } }', 'defaultModel: ghost-small', 'policies: []',
      'modelServer: { enabled: false }', 'reload: { watch: false }', 'logging: { level: warn }', yaml!, '',
    ].join('\n'));
    const g = start([...GC, ...flags!.split(' ').filter(Boolean), 'bin/ghostgate.ts', 'start', '--config', path.join(dir, 'gateway.config.yaml')]);
    const until = Date.now() + 30_000;
    for (;;) {
      const up = await fetch(`http://127.0.0.1:${admin}/-/upstreams`).then((r) => r.json() as Promise<{ local?: { live: number } }>, () => undefined);
      if ((up?.local?.live ?? 0) >= 1) break;
      if (Date.now() > until) { await stopAll(g, m); throw new Error('the gateway did not start'); }
      await new Promise((r) => setTimeout(r, 50));
    }
    return { url: `http://127.0.0.1:${port}`, server: g, stop: () => stopAll(g, m) };
  } })),
];

/** --sites: the two heap-sampling phases (bench/gc-sites-hook.mjs), each `N` requests, then the table. */
async function sites(p: Proc, load: () => Promise<void>): Promise<string> {
  const step = async (want: string): Promise<void> => {
    const from = p.out.length;
    p.child.kill('SIGUSR2');
    await waitFor(`the heap sampling (${want})`, () => p.out.includes(`{"gcSites":"${want}"}`, from) || undefined, 60_000);
  };
  await step('all');
  await load();
  await step('survivors');
  await load();
  await step('done');
  const { all, survivors } = readProfiles(p.sitesDir);
  return `${siteReport(all, survivors, N, values.by as SiteKey)}\n(profiles in ${p.sitesDir})`;
}

const only = values.only?.split(',');
const results = new Map<string, GcStats[]>();
for (let round = 1; round <= ROUNDS; round++) {
  for (const s of subjects.filter((x) => !only || only.includes(x.name))) {
    const h = await s.run();
    try {
      const load = h.load !== undefined ? (_url: string, n: number) => h.load!(n) : s.proto === 'h2' ? h2Load : h1Load;
      await load(h.url, Math.min(N, 5000)); // warm-up: JIT, pools, a few scavenges
      const from = h.server.out.length;
      const t0 = performance.now();
      ttfb = [];
      await load(h.url, N);
      const reqPerSec = N / ((performance.now() - t0) / 1000);
      const times = ttfb.sort((a, b) => a - b);
      ttfb = undefined;
      await new Promise((r) => setTimeout(r, 100));
      const st = { ...gcStats(h.server.out.slice(from), N), reqPerSec, ttfbP50: times[Math.floor(times.length / 2)] ?? 0, ttfbP99: times[Math.floor(times.length * 0.99)] ?? 0 };
      (results.get(s.name) ?? results.set(s.name, []).get(s.name)!).push(st);
      console.log(`round ${round} ${s.name.padEnd(8)} ${st.reqPerSec.toFixed(0)} req/s, TTFB p50 ${st.ttfbP50.toFixed(1)} ms p99 ${st.ttfbP99.toFixed(1)} ms, ${(st.bytesPerRequest / 1024).toFixed(1)} KB/request, survived ${st.survivedPct.toFixed(1)}%, promoted ${st.promotedPct.toFixed(1)}%, per 100k requests: ${st.scavenges.toFixed(0)} scavenges, pause p50 ${st.pauseP50.toFixed(1)} ms, p99 ${st.pauseP99.toFixed(1)} ms, max ${st.pauseMax.toFixed(1)} ms, total ${st.pauseTotal.toFixed(0)} ms; ${st.markCompacts.toFixed(0)} mark-compacts (max ${st.mcPauseMax.toFixed(1)} ms)`);
      if (values.sites) console.log(await sites(h.server, () => load(h.url, N)));
    } finally {
      await h.stop();
    }
  }
}
const med = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]!; };
console.log(`\nmedians over ${ROUNDS} rounds of ${N} requests (bytes allocated per request; young-generation allocation alive at a scavenge, promoted; per 100,000 requests: scavenges, their pauses, mark-compacts):`);
for (const [name, xs] of results) {
  const m = (f: (x: GcStats) => number, d = 1): string => med(xs.map(f)).toFixed(d);
  console.log(`  ${name.padEnd(8)} ${m((x) => x.reqPerSec, 0).padStart(6)} req/s   TTFB p50 ${m((x) => x.ttfbP50).padStart(5)} ms p99 ${m((x) => x.ttfbP99).padStart(5)} ms   ${m((x) => x.bytesPerRequest / 1024).padStart(5)} KB/req   survived ${m((x) => x.survivedPct).padStart(5)}%   promoted ${m((x) => x.promotedPct).padStart(5)}%   ${m((x) => x.scavenges, 0).padStart(4)} scavenges   pause p50 ${m((x) => x.pauseP50).padStart(5)} ms   p99 ${m((x) => x.pauseP99).padStart(5)} ms   max ${m((x) => x.pauseMax).padStart(5)} ms   total ${m((x) => x.pauseTotal, 0).padStart(5)} ms   ${m((x) => x.markCompacts, 0)} mark-compacts (max ${m((x) => x.mcPauseMax)} ms)`);
}
