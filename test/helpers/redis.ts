/**
 * A real `redis-server` for a test, on a free port, in a temp dir, with no persistence:
 *
 *   const r = await startRedis(t);          // undefined (and the test skipped) if not installed
 *   ... r.url ...
 *   r.kill();  await r.restart();           // SIGKILL, then a fresh server on the same port
 *
 * It runs under proc.ts's guard (a small Node parent, in its process group) so the parent watch
 * also covers it: a test killed by tap's timeout leaves no redis-server behind. `t.teardown` kills it.
 */
import { execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { killGroup, spawnTracked } from './proc.ts';

export interface TestRedis {
  url: string;
  port: number;
  /** SIGKILL the server (and its parent): no shutdown, connections just drop. */
  kill(): void;
  /** SIGSTOP / SIGCONT the server: connections stay open, nothing answers (a slow Redis). */
  pause(): void;
  resume(): void;
  /** Start a new server on the same port (empty: no persistence). */
  restart(): Promise<void>;
  /** Run one redis-cli command against it; returns its output. */
  cli(...args: string[]): string;
  /**
   * The rate-limit bucket whose key ends with `suffix` (keys hold NULs, which redis-cli cannot
   * pass): its tokens `k` (NaN: no key, a full bucket) and what each process holds of it, by
   * instance id.
   */
  bucket(suffix: string): { k: number; holders: Record<string, number> };
  /** How many EVALSHA the server has run so far (the gateway's scripts; `bucket` uses EVAL). */
  scriptCalls(): number;
}

/** HGETALL of the one key matching ARGV[1], found server-side. */
const FIND_HASH = "local ks = redis.call('KEYS', ARGV[1]) if #ks ~= 1 then return {} end return redis.call('HGETALL', ks[1])";

interface Skipper { skip(name: string, cb: () => void): unknown; teardown(fn: () => unknown): void }

/** Where redis-server is, or undefined. */
export function redisServerPath(): string | undefined {
  for (const p of ['/usr/bin/redis-server', '/usr/local/bin/redis-server']) if (existsSync(p)) return p;
  try { return execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim() || undefined; } catch { return undefined; }
}

const SKIP = 'redis-server is not installed (apt-get install redis-server; .ci/run does): the shared-store (store.redis) tests cannot run here';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); });
  });
}

/** Start redis-server, or skip the test (with a clear message) where it is not installed. */
export async function startRedis(t: Skipper, o: { password?: string } = {}): Promise<TestRedis | undefined> {
  const bin = redisServerPath();
  if (bin === undefined) { void t.skip(SKIP, () => {}); return undefined; }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-redis-'));
  let port = await freePort();
  let child: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    const c = spawnTracked(bin, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
      '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'warning', '--logfile', '',
      ...(o.password ? ['--requirepass', o.password] : [])],
    { stdio: ['ignore', 'pipe', 'pipe'] }, { node: false });
    child = c;
    let err = '';
    c.stderr!.on('data', (d: Buffer) => { err += String(d); });
    c.stdout!.on('data', (d: Buffer) => { err += String(d); });
    // Ready when it answers PING (redis-cli ships with redis-server), bounded.
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`redis-server exited (${c.exitCode ?? c.signalCode}): ${err}`);
      const ok = await new Promise<boolean>((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        s.once('connect', () => { s.write('PING\r\n'); });
        // With a password, -NOAUTH also says it is up.
        s.once('data', (d) => { s.destroy(); resolve(/^(\+PONG|-NOAUTH)/.test(String(d))); });
        s.once('error', () => resolve(false));
      });
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`redis-server did not answer on port ${port} within 15 s: ${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  // The free port may be taken between finding it and redis-server binding it (tests run in
  // parallel): then try another one.
  for (let attempt = 1; ; attempt++) {
    try { await start(); break; } catch (e) {
      if (attempt >= 3 || child?.exitCode === null) throw e;
      port = await freePort();
    }
  }
  t.teardown(() => { if (child) { killGroup(child, 'SIGCONT'); killGroup(child); } });
  const cli = (...args: string[]): string => execFileSync('redis-cli', ['-p', String(port), ...(o.password ? ['--no-auth-warning', '-a', o.password] : []), ...args], { encoding: 'utf8' });
  return {
    url: o.password ? `redis://:${o.password}@127.0.0.1:${port}` : `redis://127.0.0.1:${port}`,
    port,
    kill() { if (child) killGroup(child, 'SIGKILL'); },
    pause() { if (child) killGroup(child, 'SIGSTOP'); },
    resume() { if (child) killGroup(child, 'SIGCONT'); },
    restart: start,
    cli,
    bucket(suffix) {
      const lines = cli('EVAL', FIND_HASH, '0', `*${suffix}`).split('\n').filter((l) => l !== '');
      const out = { k: NaN, holders: {} as Record<string, number> };
      for (let i = 0; i + 1 < lines.length; i += 2) {
        if (lines[i] === 'k') out.k = Number(lines[i + 1]);
        else if (lines[i]!.startsWith('p:')) out.holders[lines[i]!.slice(2)] = Number(lines[i + 1]!.split(' ')[0]);
      }
      return out;
    },
    scriptCalls() { return Number(cli('INFO', 'commandstats').match(/cmdstat_evalsha:calls=(\d+)/)?.[1] ?? 0); },
  };
}
