/**
 * Run the real `ghostgate` CLI as a child process (on the pinned Node), in its own process group
 * so a teardown kills it and anything it spawned (the bundled model server), also when a test fails.
 *
 *   const p = startCli(t, ['start'], { GHOSTGATE_PORT: '0' });
 *   await p.waitFor(/ghostgate is running/);
 *   const code = await p.exited;
 */
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { spawnTracked } from '../helpers/proc.ts';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const NODE_BIN = path.join(ROOT, 'node_modules/.bin/node');
export const CLI = path.join(ROOT, 'bin/ghostgate.ts');

export interface CliProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Exit code (or the signal's name). */
  exited: Promise<number | string>;
  /** Resolves with the first match in stdout+stderr; rejects if the process exits first or after `ms`. */
  waitFor(re: RegExp, ms?: number): Promise<RegExpExecArray>;
  /** SIGTERM the group, SIGKILL after `ms`; resolves once it exited. */
  stop(ms?: number): Promise<number | string>;
}

interface Teardown { teardown(fn: () => unknown): void }

export function startCli(t: Teardown, args: string[], env: Record<string, string> = {}, opts: { cwd?: string; input?: string } = {}): CliProcess {
  const child = spawnTracked(NODE_BIN, [CLI, ...args], {
    cwd: opts.cwd ?? ROOT, env: { ...process.env, ...env }, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  if (opts.input !== undefined) child.stdin!.end(opts.input);
  let out = '';
  let err = '';
  const listeners = new Set<() => void>();
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; for (const l of listeners) l(); });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; for (const l of listeners) l(); });
  const exited = new Promise<number | string>((resolve) => child.once('close', (code, sig) => { for (const l of listeners) l(); resolve(code ?? sig ?? -1); }));
  const killGroup = (sig: NodeJS.Signals): void => { try { process.kill(-child.pid!, sig); } catch { /* gone */ } };
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      killGroup('SIGTERM');
      const timer = setTimeout(() => killGroup('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    // Whatever it spawned in its group (the bundled model server) goes too.
    killGroup('SIGKILL');
  });
  const p: CliProcess = {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor(re, ms = 60_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const m = re.exec(out + err);
          if (m) { done(); resolve(m); } else if (child.exitCode !== null || child.signalCode !== null) {
            done(); reject(new Error(`exited (${child.exitCode ?? child.signalCode}) before ${re}: stdout=${out} stderr=${err}`));
          }
        };
        const timer = setTimeout(() => { done(); reject(new Error(`no ${re} within ${ms} ms: stdout=${out} stderr=${err}`)); }, ms);
        const done = (): void => { clearTimeout(timer); listeners.delete(check); };
        listeners.add(check);
        check();
      });
    },
    async stop(ms = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      killGroup('SIGTERM');
      const timer = setTimeout(() => killGroup('SIGKILL'), ms);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
  return p;
}

/** A port nothing listens on right now (the kernel's pick; closed before returning). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address() as net.AddressInfo; s.close(() => resolve(port)); });
  });
}

/** Occupy a port on 127.0.0.1 for the test (closed by teardown). */
export async function takePort(t: Teardown): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen(0, '127.0.0.1', () => resolve()); });
  t.teardown(() => new Promise<void>((r) => s.close(() => r())));
  return (s.address() as net.AddressInfo).port;
}

/** True if nothing listens on the port (we can bind it). */
export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}
