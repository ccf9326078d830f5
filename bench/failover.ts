/**
 * The failover bench (#9.1 targets): a gateway in front of two real model servers as deployments.
 *
 *   node bench/failover.ts [--requests 400] [--seconds 8] [--users 16] [--json FILE]
 *
 * 1. Cost of a failover before the first byte. Deployment A answers every request at once with a
 *    503 (`--fail-status 503`); B serves. Measured sequentially on one HTTP/2 session each, in
 *    interleaved rounds: the time to first byte of the model `code` (A first, then B) through the
 *    gateway, of the model `only-b` (B alone) through the same gateway, and A's own refusal
 *    straight from A (no gateway). What a failover adds = TTFB(code) − TTFB(only-b) − A's
 *    refusal (medians). Target ≤ 1 ms. Ejection is off for `code`, so every request tries A.
 * 2. One of two deployments killed (SIGKILL) under typing load with cancels: client-visible
 *    errors among requests whose response had not started from the killed one (target 0; the
 *    model servers name themselves in `x-model-server`); those that had (no failover possible) are counted apart, and must end
 *    with an error, never cleanly.
 *
 * Everything it starts is stopped at the end. Exit 1 when a target is missed.
 */
import http2 from 'node:http2';
import type { ClientHttp2Session } from 'node:http2';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { GatewayProc, freePort, gatewayDir, h2Connect, removeDir, sleep, startModel } from './harness.ts';

const { NGHTTP2_CANCEL } = http2.constants;
const { values: argv } = parseArgs({ args: process.argv.slice(2), options: { requests: { type: 'string' }, seconds: { type: 'string' }, users: { type: 'string' }, json: { type: 'string' } } });
const REQUESTS = Number(argv.requests ?? 400);
const SECONDS = Number(argv.seconds ?? 8);
const USERS = Number(argv.users ?? 16);
const log = (s: string): void => { process.stderr.write(s + '\n'); };

const MODEL = ['--ttft-ms', '20', '--token-ms', '2', '--tokens', '8'];

function config(port: number, admin: number, a: string, b: string): string {
  return `listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${admin} }
upstreams:
  a: { url: ${a}, protocol: h2c, pool: { size: 2 }, timeouts: { connectMs: 1000, firstByteMs: 10000 } }
  b: { url: ${b}, protocol: h2c, pool: { size: 2 }, timeouts: { connectMs: 1000, firstByteMs: 10000 } }
models:
  code:
    deployments: [{ upstream: a }, { upstream: b, priority: 1 }]
    failover: { ejection: { consecutiveFailures: 0, errorRate: 0 } }
  only-b: { upstream: b }
  pair:
    deployments: [{ upstream: a }, { upstream: b }]
defaultModel: only-b
policies: []
modelServer: { enabled: false }
reload: { watch: false }
logging: { level: error }
`;
}

/** ms from sending to the first body byte (and the status). */
function ttfb(s: ClientHttp2Session, model: string): Promise<{ ms: number; status: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let status = 0;
    let ms = -1;
    const st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' });
    st.on('response', (h) => { status = Number(h[':status']); });
    st.on('data', () => { if (ms < 0) ms = performance.now() - t0; });
    st.on('error', reject);
    st.on('close', () => resolve({ ms, status }));
    st.end(JSON.stringify({ model, prompt: 'x', stream: true }));
  });
}
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] ?? NaN; };

async function main(): Promise<number> {
  const a = await startModel([...MODEL, '--fail-status', '503', '--name', 'a']);
  const b = await startModel([...MODEL, '--name', 'b']);
  const port = await freePort();
  const adminPort = await freePort();
  const files = gatewayDir(config(port, adminPort, a.url, b.url), {});
  let gw: GatewayProc | undefined;
  try {
    gw = await GatewayProc.start(files.configFile, port, adminPort);
    // --- 1. failover cost
    const viaGw = await h2Connect(gw.url);
    const toA = await h2Connect(a.url);
    const samples = { code: [] as number[], onlyB: [] as number[], aDirect: [] as number[] };
    for (let i = 0; i < 30; i++) { await ttfb(viaGw, 'code'); await ttfb(viaGw, 'only-b'); await ttfb(toA, 'x'); } // warm-up
    for (let i = 0; i < REQUESTS; i++) {
      const c = await ttfb(viaGw, 'code');
      const o = await ttfb(viaGw, 'only-b');
      const r = await ttfb(toA, 'x');
      if (c.status !== 200 || o.status !== 200 || r.status !== 503) throw new Error(`unexpected statuses ${c.status} ${o.status} ${r.status}`);
      samples.code.push(c.ms); samples.onlyB.push(o.ms); samples.aDirect.push(r.ms);
    }
    viaGw.close(); toA.close();
    const cost = { codeP50Ms: median(samples.code), onlyBP50Ms: median(samples.onlyB), aRefusalP50Ms: median(samples.aDirect) };
    const addedMs = cost.codeP50Ms - cost.onlyBP50Ms - cost.aRefusalP50Ms;
    log(`failover cost: TTFB via failover ${cost.codeP50Ms.toFixed(2)} ms, B alone ${cost.onlyBP50Ms.toFixed(2)} ms, A's refusal direct ${cost.aRefusalP50Ms.toFixed(2)} ms (p50 of ${REQUESTS})`);

    // --- 2. one of two deployments killed under typing load with cancels
    await fetch(`${a.url}/_fail?status=0`, { method: 'POST' });
    let killAt = Infinity;
    const end = performance.now() + SECONDS * 1000;
    const recs: Array<{ status: number; headersAt: number; done: boolean; cancelled: boolean; errorEnd: boolean; sentAt: number; text: string; from: string }> = [];
    let n = 0;
    const user = async (): Promise<void> => {
      const s = await h2Connect(gw!.url);
      while (performance.now() < end) {
        const i = n++;
        const rec = { status: 0, headersAt: Infinity, done: false, cancelled: false, errorEnd: false, sentAt: performance.now(), text: '', from: '' };
        await new Promise<void>((resolve) => {
          const st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' });
          const plan = i % 20 < 9 ? (i % 3 === 0 ? 'before' : 'mid') : 'none'; // 45% cancelled, a third before the first byte
          if (plan === 'before') setTimeout(() => { rec.cancelled = true; st.close(NGHTTP2_CANCEL); }, 5 + (i % 20));
          let text = '';
          st.setEncoding('utf8');
          st.on('response', (h) => { rec.status = Number(h[':status']); rec.headersAt = performance.now(); rec.from = String(h['x-model-server'] ?? ''); });
          st.on('data', (d: string) => { text += d; if (plan === 'mid' && !rec.cancelled) { rec.cancelled = true; st.close(NGHTTP2_CANCEL); } });
          st.on('error', () => { /* close */ });
          st.on('close', () => { rec.text = text.slice(0, 300); rec.done = text.trimEnd().endsWith('data: [DONE]'); rec.errorEnd = text.includes('event: error') || (st.rstCode ?? 0) !== 0; resolve(); });
          st.end(JSON.stringify({ model: 'pair', prompt: `p${i}`, stream: true }));
        });
        recs.push(rec);
        await sleep(10 + (i % 40));
      }
      s.close();
    };
    const users = Array.from({ length: USERS }, () => user());
    await sleep((SECONDS * 1000) / 3);
    killAt = performance.now();
    a.proc.kill('SIGKILL');
    await Promise.all(users);
    const failed = recs.filter((r) => !r.cancelled && !(r.status === 200 && r.done));
    // Its response had started from A (a byte reached the client): no failover is possible.
    const streamingAtKill = failed.filter((r) => r.status === 200 && r.from === 'a');
    const visible = failed.length - streamingAtKill.length;
    const cleanTruncated = streamingAtKill.filter((r) => !r.errorEnd).length;
    log(`killed A after ${(SECONDS / 3).toFixed(1)} s: ${recs.length} requests (${recs.filter((r) => r.cancelled).length} cancelled), ${visible} client-visible errors, ${streamingAtKill.length} were streaming from A when it died (${cleanTruncated} ended cleanly)`);
    for (const r of failed.filter((x) => !streamingAtKill.includes(x)).slice(0, 10)) log(`  failed: sent ${(r.sentAt - killAt).toFixed(0)} ms after the kill, status ${r.status}, headers ${(r.headersAt - killAt).toFixed(0)} ms after: ${r.text}`);
    const ups = await gw.json<Record<string, { deployments?: Array<{ logicalModel: string; failoversOut: number; state: string }> }>>('/-/upstreams');
    const aPair = ups.body.a?.deployments?.find((d) => d.logicalModel === 'pair');

    const checks = [
      { name: 'failover before first byte adds ≤ 1 ms beyond the failed attempt\'s own time (p50)', value: `${addedMs.toFixed(2)} ms`, pass: addedMs <= 1 },
      { name: 'one of two deployments killed under typing load: client errors (not already streaming from it)', value: String(visible), pass: visible === 0 },
      { name: 'requests streaming from it when it died that ended cleanly (truncated)', value: String(cleanTruncated), pass: cleanTruncated === 0 },
    ];
    const out = [
      `ghostgate failover bench (${REQUESTS} sequential requests per kind; ${USERS} typing users for ${SECONDS} s)`,
      `  TTFB p50: model with A (503 at once) then B ${cost.codeP50Ms.toFixed(2)} ms; B alone via the gateway ${cost.onlyBP50Ms.toFixed(2)} ms; A's refusal straight from A ${cost.aRefusalP50Ms.toFixed(2)} ms`,
      `  failover added: ${addedMs.toFixed(2)} ms`,
      `  kill: ${recs.length} requests, ${visible} client-visible errors, ${streamingAtKill.length} streaming from A at the kill; A ${aPair?.state ?? '?'}, ${aPair?.failoversOut ?? '?'} failovers out`,
      ...checks.map((c) => `${c.pass ? 'PASS' : 'FAIL'}  ${c.name}: ${c.value}`),
    ];
    process.stdout.write(out.join('\n') + '\n');
    if (argv.json) writeFileSync(argv.json, JSON.stringify({ cost, addedMs, kill: { requests: recs.length, visible, streamingAtKill: streamingAtKill.length, cleanTruncated }, checks }, null, 2));
    return checks.every((c) => c.pass) ? 0 : 1;
  } finally {
    await gw?.proc.stop();
    await a.proc.stop();
    await b.proc.stop();
    removeDir(files.dir);
  }
}

main().then((c) => process.exit(c), (e: unknown) => { process.stderr.write(`failover bench failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`); process.exit(2); });
