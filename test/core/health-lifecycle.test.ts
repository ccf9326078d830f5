/**
 * Health: /_ping fails below the SLO and comes back above it (hysteresis). Lifecycle: the real
 * CLI starts, prints its banner, reloads on SIGHUP, and drains in-flight requests on SIGTERM.
 */
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { HealthMonitor } from '../../core/health.ts';
import { startGateway } from '../helpers/gateway.ts';
import { collect, connect, open, post, until } from '../helpers/h2.ts';
import { spawnModelServer } from '../model-server/fixtures/spawn.ts';
import { NODE_BIN, spawnTracked, stopTracked } from '../helpers/proc.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');

t.test('success rate vs SLO with hysteresis', async (t) => {
  const h = new HealthMonitor({ slo: 0.9, recoverAt: 0.95, windowSeconds: 10, minRequests: 10 });
  const now = 1_000_000;
  for (let i = 0; i < 5; i++) h.record(false, now);
  t.equal(h.status(now).healthy, true, 'too few requests to judge');
  for (let i = 0; i < 15; i++) h.record(true, now);
  t.equal(h.status(now).healthy, false, '15/20 = 75% < 90%: out');
  for (let i = 0; i < 60; i++) h.record(true, now + 1000);
  t.equal(h.status(now + 1000).successRate, 75 / 80);
  t.equal(h.status(now + 1000).healthy, false, '93.75% is above the SLO but below recoverAt: still out');
  for (let i = 0; i < 40; i++) h.record(true, now + 2000);
  t.equal(h.status(now + 2000).healthy, true, '115/120 = 95.8%: back in');
  t.equal(h.status(now + 20_000).requests, 0, 'old seconds leave the window');
});

t.test('voted out with too few requests to judge: stays out while the window holds a failure', async (t) => {
  const h = new HealthMonitor({ slo: 0.9, windowSeconds: 10, minRequests: 10 });
  const now = 1_000_000;
  for (let i = 0; i < 10; i++) h.record(false, now);
  t.equal(h.status(now).healthy, false, 'out');
  t.equal(h.votedOut(now), true, 'voted out (what the probe watches)');
  h.record(false, now + 11_000); // a failed probe after the users' failures left the window
  t.equal(h.status(now + 11_000).healthy, false, '1 request, 1 failure: stays out');
  h.record(true, now + 12_000);
  t.equal(h.status(now + 12_000).healthy, false, 'a success, but the failure is still in the window');
  t.equal(h.status(now + 21_500).healthy, true, 'the failure aged out, the success remains: back in');
  t.equal(h.votedOut(now + 21_500), false, 'back in: not voted out');
  for (let i = 0; i < 10; i++) h.record(false, now + 22_000);
  t.equal(h.votedOut(now + 22_000), true, 'out again');
  h.drain();
  t.equal(h.votedOut(now + 22_000), false, 'draining is not voted out: no probes while shutting down');
});

t.test('/_ping turns 503 when the upstream fails, and back to 200 when it recovers', async (t) => {
  const g = await startGateway(t, { extraConfig: 'health: { slo: 0.9, windowSeconds: 30, minRequests: 10 }' });
  const s = await connect(g.url);
  t.teardown(() => s.close());
  const ping = async (): Promise<{ status: number; body: { status: string; successRate: number } }> => {
    const r = await fetch(`${g.adminUrl}/_ping`);
    return { status: r.status, body: await r.json() as { status: string; successRate: number } };
  };
  t.equal((await ping()).status, 200);
  for (let i = 0; i < 10; i++) await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' }, { 'x-status': '503' });
  const bad = await ping();
  t.equal(bad.status, 503, 'voted out');
  t.equal(bad.body.status, 'unhealthy');
  for (let i = 0; i < 200; i++) await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' });
  const good = await ping();
  t.equal(good.status, 200, 'back in');
});

function tempConfig(modelUrl: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-cli-'));
  mkdirSync(path.join(dir, 'policies'));
  writeFileSync(path.join(dir, 'policies/p.yaml'), 'name: p\nsteps:\n  - use: set-headers\n    params: { response: { x-v: one } }\n');
  writeFileSync(path.join(dir, 'g.yaml'), `listen: { port: 0 }\nadmin: { port: 0 }\nupstreams:\n  local: { url: "${modelUrl}" }\nmodels:\n  ghost-small: { upstream: local }\nreload: { watch: false }\n`);
  return dir;
}

t.test('the CLI: banner, SIGHUP reload, SIGTERM drains in-flight requests', async (t) => {
  const model = await spawnModelServer(['--ttft-ms', '5', '--token-ms', '40', '--tokens', '20']);
  t.teardown(() => model.stop());
  const dir = tempConfig(model.url);
  const child = spawnTracked(NODE_BIN, [path.join(ROOT, 'bin/ghostgate.ts'), 'start', '--config', path.join(dir, 'g.yaml')], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => stopTracked(child, 0, 'SIGKILL'));
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  const url = (await until(() => /data plane\s+(http:\/\/\S+)/.exec(out)?.[1]));
  t.match(out, /Try a streamed completion:\n\s+curl --http2-prior-knowledge -N http:\/\/127\.0\.0\.1:\d+\/v1\/completions/);
  const s = await connect(url);
  t.teardown(() => s.close());
  t.equal((await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' })).headers['x-v'], 'one');
  writeFileSync(path.join(dir, 'policies/p.yaml'), 'name: p\nsteps:\n  - use: set-headers\n    params: { response: { x-v: two } }\n');
  child.kill('SIGHUP');
  await until(async () => (await post(s, '/v1/completions', { model: 'ghost-small', prompt: 'x' })).headers['x-v'] === 'two', undefined, 50);
  t.pass('SIGHUP reloaded the policy');
  // A long stream in flight, then SIGTERM: it must finish, and the process exit 0.
  const inflight = collect(open(s, '/v1/completions', { model: 'ghost-small', prompt: 'x', stream: true }));
  await until(async () => (await (await fetch(`${model.url}/_stats`)).json() as { inFlight: number }).inFlight === 1);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGTERM');
  const r = await inflight;
  t.equal(r.events.at(-1), '[DONE]', 'the in-flight stream completed during shutdown');
  const code = await exited;
  t.equal(code, 0, 'clean exit');
});
