/**
 * Starts the bundled model server as a child process (a real separate process, so its CPU is
 * not the gateway's) and waits for its `{"event":"listening"}` line.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { packageFile } from './gateway.ts';
import type { ModelServerConfig } from './config/model.ts';

export interface BundledModel { child: ChildProcess; port: number; url: string; stop(): Promise<void> }

/**
 * Start it; resolves once it listens. If it exits first, rejects with an Error whose `code` is the
 * errno it reported (EADDRINUSE...), its stderr kept out of ours (the caller says it in one line).
 */
export function startBundledModel(c: Pick<ModelServerConfig, 'host' | 'port' | 'ttftMs' | 'tokenMs' | 'tokens'>, extraArgs: string[] = []): Promise<BundledModel> {
  const args = [packageFile('model-server/main.ts'), '--host', c.host, '--port', String(c.port), '--ttft-ms', String(c.ttftMs), '--token-ms', String(c.tokenMs), '--tokens', String(c.tokens), ...extraArgs];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const keep = (b: Buffer): void => { if (stderr.length < 8192) stderr += b.toString(); };
  child.stderr!.on('data', keep);
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    const onExit = (code: number | null): void => {
      const errno = /\b(EADDRINUSE|EACCES|EADDRNOTAVAIL|ENOTFOUND)\b/.exec(stderr)?.[1];
      const last = stderr.trim().split('\n').at(-1) ?? '';
      reject(Object.assign(new Error(`bundled model server exited (code ${code}) before listening${last ? `: ${last}` : ''}`), { code: errno }));
    };
    child.once('exit', onExit);
    rl.once('line', (line) => {
      child.off('exit', onExit);
      // Listening: from now on its stderr is ours.
      child.stderr!.off('data', keep);
      child.stderr!.pipe(process.stderr);
      try {
        const ev = JSON.parse(line) as { event: string; port: number; host: string };
        const stop = (): Promise<void> => new Promise((r) => { if (child.exitCode !== null) return r(); child.once('exit', () => r()); child.kill('SIGTERM'); });
        resolve({ child, port: ev.port, url: `http://${ev.host}:${ev.port}`, stop });
      } catch (e) { reject(e); }
    });
  });
}
