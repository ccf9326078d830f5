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

export function startBundledModel(c: Pick<ModelServerConfig, 'host' | 'port' | 'ttftMs' | 'tokenMs' | 'tokens'>, extraArgs: string[] = []): Promise<BundledModel> {
  const args = [packageFile('model-server/main.ts'), '--host', c.host, '--port', String(c.port), '--ttft-ms', String(c.ttftMs), '--token-ms', String(c.tokenMs), '--tokens', String(c.tokens), ...extraArgs];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    const onExit = (code: number | null): void => reject(new Error(`bundled model server exited (code ${code}) before listening; is port ${c.port} free?`));
    child.once('exit', onExit);
    rl.once('line', (line) => {
      child.off('exit', onExit);
      try {
        const ev = JSON.parse(line) as { event: string; port: number; host: string };
        const stop = (): Promise<void> => new Promise((r) => { if (child.exitCode !== null) return r(); child.once('exit', () => r()); child.kill('SIGTERM'); });
        resolve({ child, port: ev.port, url: `http://${ev.host}:${ev.port}`, stop });
      } catch (e) { reject(e); }
    });
  });
}
