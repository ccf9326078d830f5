/**
 * What one policy costs the client: 50 typing users through two gateways that differ only in
 * that policy, alternating phases in one run; TTFB p50/p99 both ways.
 *
 *   --scenario mirror  `mirror: {percent: 100}` to a shadow model 10× slower than the primary
 *                      (target: primary TTFB p99 +0.5 ms at most); also reports the shadow copies
 *   --scenario auth    the `auth` step verifying a signed token on every request
 *                      (target: TTFB p50 +0.1 ms at most)
 *
 *   node bench/policy-cost.ts --scenario mirror|auth [--users 50] [--rounds 3] [--seconds 8]
 */
import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { startBundledModel } from '../core/bundled-model.ts';

const { values } = parseArgs({ options: { scenario: { type: 'string', default: 'mirror' }, users: { type: 'string', default: '50' }, rounds: { type: 'string', default: '3' }, seconds: { type: 'string', default: '8' } } });
const SCENARIO = values.scenario === 'auth' ? 'auth' : 'mirror';
const USERS = Number(values.users), ROUNDS = Number(values.rounds), SECONDS = Number(values.seconds);
const root = path.resolve(import.meta.dirname, '..');

const primary = await startBundledModel({ host: '127.0.0.1', port: 0, ttftMs: 50, tokenMs: 5, tokens: 16 });
const shadow = await startBundledModel({ host: '127.0.0.1', port: 0, ttftMs: 500, tokenMs: 50, tokens: 16 });

// Minting on the admin plane with real signing keys needs the admin credential.
const ADMIN_SECRET = randomBytes(32).toString('base64url');
const keyDir = mkdtempSync(path.join(os.tmpdir(), 'gg-cost-key-'));
writeFileSync(path.join(keyDir, 'k.pem'), generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));

function gateway(on: boolean): Promise<{ proc: ChildProcess; url: string; admin: string }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gg-cost-'));
  mkdirSync(path.join(dir, 'policies'));
  const auth = `auth:\n  signingKeys: [{ kid: b, alg: EdDSA, privateKey: { file: ${path.join(keyDir, 'k.pem')} }, active: true }]\n`;
  writeFileSync(path.join(dir, 'g.yaml'), `listen: { port: 0 }\nadmin: { port: 0, credential: { env: GG_COST_ADMIN } }\nupstreams:\n  primary: { url: "${primary.url}" }\n  shadow: { url: "${shadow.url}" }\nmodels:\n  ghost-small: { upstream: primary }\npolicies: [policies/*.yaml]\nreload: { watch: false }\nlogging: { level: warn }\n${auth}`);
  const step = SCENARIO === 'mirror' ? '  - use: mirror\n    params: { upstream: shadow, percent: 100, maxConcurrent: 256 }\n' : '  - use: auth\n';
  writeFileSync(path.join(dir, 'policies/p.yaml'), on ? `name: p\nsteps:\n${step}` : 'name: p\nsteps: []\n');
  const proc = spawn(process.execPath, [path.join(root, 'bin/ghostgate.ts'), 'start', '--config', path.join(dir, 'g.yaml')], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, GG_COST_ADMIN: ADMIN_SECRET } });
  return new Promise((resolve) => {
    const rl = createInterface({ input: proc.stdout! });
    let url = '';
    rl.on('line', (l) => {
      const d = /data plane\s+(\S+)/.exec(l); if (d) url = d[1]!;
      const a = /admin\s+(\S+)/.exec(l); if (a) resolve({ proc, url, admin: a[1]! });
    });
  });
}

async function phase(url: string): Promise<number[]> {
  const ttfb: number[] = [];
  const end = performance.now() + SECONDS * 1000;
  const body = JSON.stringify({ model: 'ghost-small', prompt: 'def fib(n):\n' + '  # ctx\n'.repeat(100), stream: true });
  await Promise.all(Array.from({ length: USERS }, async () => {
    const s = http2.connect(url);
    await new Promise((r) => s.once('connect', r));
    while (performance.now() < end) {
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 180));
      await new Promise<void>((resolve) => {
        const t0 = performance.now();
        const st = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', authorization: bearer });
        st.end(body);
        let first = true;
        st.on('data', () => { if (first) { first = false; ttfb.push(performance.now() - t0); } });
        st.on('close', () => resolve());
      });
    }
    s.close();
  }));
  return ttfb;
}

const pct = (xs: number[], p: number): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]!; };
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const off = await gateway(false);
const on = await gateway(true);
// Both sides get the same Authorization header (the gateway without the auth step ignores it).
const minted = await (await fetch(`${on.admin}/-/token`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_SECRET}` }, body: JSON.stringify({ sub: 'bench', ttlSeconds: 3600 }) })).json() as { token: string };
const bearer = `Bearer ${minted.token}`;
const res = { off: { p50: [] as number[], p99: [] as number[], n: 0 }, on: { p50: [] as number[], p99: [] as number[], n: 0 } };
for (let r = 0; r < ROUNDS; r++) {
  for (const [k, g] of [['off', off], ['on', on]] as const) {
    const t = await phase(g.url);
    res[k].p50.push(pct(t, 0.5)); res[k].p99.push(pct(t, 0.99)); res[k].n += t.length;
    process.stderr.write(`round ${r + 1} ${SCENARIO} ${k}: ${t.length} req, ttfb p50 ${pct(t, 0.5).toFixed(2)} p99 ${pct(t, 0.99).toFixed(2)} ms\n`);
  }
}
const metrics = await (await fetch(`${on.admin}/metrics`)).text();
const outcomes = [...metrics.matchAll(/^ghostgate_mirror_requests_total\{side="shadow",upstream="shadow",outcome="(\w+)"\} (\d+)/gm)].map((m) => `${m[1]}=${m[2]}`).join(' ');
const d50 = med(res.on.p50) - med(res.off.p50);
const d99 = med(res.on.p99) - med(res.off.p99);
const sign = (x: number): string => `${x >= 0 ? '+' : ''}${x.toFixed(2)} ms`;
console.log(`${SCENARIO === 'mirror' ? 'mirror 100% to a 10x slower shadow' : 'auth step (signed token verified per request)'}, ${USERS} users, ${ROUNDS} rounds x ${SECONDS} s (medians of rounds)`);
console.log(`  TTFB p50: ${med(res.off.p50).toFixed(2)} ms without, ${med(res.on.p50).toFixed(2)} ms with: ${sign(d50)}${SCENARIO === 'auth' ? ` (target <= 0.1 ms: ${d50 <= 0.1 ? 'PASS' : 'FAIL'})` : ''}`);
console.log(`  TTFB p99: ${med(res.off.p99).toFixed(2)} ms without, ${med(res.on.p99).toFixed(2)} ms with: ${sign(d99)}${SCENARIO === 'mirror' ? ` (target <= 0.5 ms: ${d99 <= 0.5 ? 'PASS' : 'FAIL'})` : ''}`);
if (SCENARIO === 'mirror') console.log(`  shadow copies: ${outcomes || '(none)'}`);
for (const g of [off, on]) g.proc.kill('SIGTERM');
await Promise.all([primary.stop(), shadow.stop()]);
process.exit(0);
