/**
 * Run `ghostgate start` as a real child process (for tests that need signals: SIGTERM, exit
 * codes), in front of a real bundled model server process.
 *
 *   const g = await startGatewayProcess(t, { modelArgs: ['--ttft-ms', '0'], extraConfig: 'shutdown: { graceMs: 500 }' });
 *   ... g.url, g.tlsUrl, g.adminUrl ...
 *   g.child.kill('SIGTERM'); await g.exited;
 *
 * Both processes are killed by `t.teardown` if they are still running.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnModelServer } from '../model-server/fixtures/spawn.ts';
import type { SpawnedModelServer } from '../model-server/fixtures/spawn.ts';
import { START_MS } from './h2.ts';
import { NODE_BIN, ROOT, spawnTracked, stopTracked } from './proc.ts';

const CLI = path.join(ROOT, 'bin/ghostgate.ts');

export interface GatewayProcessOptions {
  modelArgs?: string[];
  /** Replace the `listen:` line (ports must be 0). */
  listenYaml?: string;
  extraConfig?: string;
  /** Files (e.g. TLS key and certificate) by relative path. */
  files?: Record<string, string>;
  /** Run the gateway with this open-file limit (`ulimit -n`). */
  openFileLimit?: number;
  /** Prepare the config's folder before the gateway starts (e.g. symlinks); gets its path. */
  setup?: (dir: string) => void;
  /** More `ghostgate start` arguments, e.g. `['--workers', '2']`. */
  args?: string[];
  /** Extra environment for the gateway process. */
  env?: NodeJS.ProcessEnv;
  /** Skip the default `reload: { watch: false }` line (the test sets its own). */
  noReloadLine?: boolean;
  /** Replace the `upstreams:`/`models:` block (default: upstream `local` → the model server, model ghost-small). */
  upstreamsYaml?: (model: SpawnedModelServer) => string;
}

export interface GatewayProcess {
  child: ChildProcess;
  /** The temp folder holding gateway.config.yaml. */
  dir: string;
  configFile: string;
  model: SpawnedModelServer;
  url: string;
  tlsUrl: string | undefined;
  adminUrl: string;
  /** Everything the process wrote to stdout (banner, JSON log lines). */
  stdout(): string;
  /** Everything the process wrote to stderr. */
  stderr(): string;
  /** Resolves with the exit code (or signal name) when the process ends. */
  exited: Promise<number | string | null>;
}

interface Teardown { teardown(fn: () => unknown): void }

export async function startGatewayProcess(t: Teardown, o: GatewayProcessOptions = {}): Promise<GatewayProcess> {
  const model = await spawnModelServer(o.modelArgs ?? ['--ttft-ms', '20', '--token-ms', '2', '--tokens', '8']);
  t.teardown(() => model.stop());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-proc-'));
  mkdirSync(path.join(dir, 'policies'));
  for (const [rel, text] of Object.entries(o.files ?? {})) {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeFileSync(path.join(dir, rel), text);
  }
  o.setup?.(dir);
  const configFile = path.join(dir, 'gateway.config.yaml');
  writeFileSync(configFile, [
    o.listenYaml ?? 'listen: { host: 127.0.0.1, port: 0 }',
    'admin: { host: 127.0.0.1, port: 0 }',
    o.upstreamsYaml ? o.upstreamsYaml(model) : [
      'upstreams:',
      `  local: { url: ${model.url}, protocol: h2c, pool: { size: 2 }, forwardHeaders: [user-agent, x-ttft-ms, x-token-ms, x-tokens, x-headers-after-ttft] }`,
      'models:',
      '  ghost-small: { upstream: local }',
    ].join('\n'),
    'defaultModel: ghost-small',
    'policies: [policies/*.yaml]',
    o.noReloadLine ? '' : 'reload: { watch: false }',
    'logging: { level: info }',
    o.extraConfig ?? '',
  ].join('\n') + '\n');
  const { child, exited, banner, stdout, stderr } = await spawnGatewayCli(t, ['--config', configFile, ...(o.args ?? [])], { env: o.env, openFileLimit: o.openFileLimit });
  const find = (re: RegExp): string | undefined => re.exec(banner)?.[1];
  return {
    child, model, exited, dir, configFile,
    url: find(/data plane\s+(http:\/\/\S+)/)!,
    tlsUrl: find(/data plane\s+(https:\/\/\S+)/),
    adminUrl: find(/admin\s+(http:\/\/\S+)/)!,
    stdout,
    stderr,
  };
}

/** A `ghostgate start` process whose banner has come. */
export interface GatewayCli {
  child: ChildProcess;
  /** Resolves with the exit code (or signal name) when the process ends. */
  exited: Promise<number | string | null>;
  /** stdout up to the banner's admin line. */
  banner: string;
  /** Everything the process wrote to stdout so far. */
  stdout(): string;
  /** Everything the process wrote to stderr so far. */
  stderr(): string;
}

/**
 * Spawn `ghostgate start <args>` (a tracked child, SIGKILLed by `t.teardown` if still running) and
 * wait for its banner to name the admin address (the last listener it prints). Rejects, with
 * `name` and the process's stderr, when it exits first or takes longer than `timeoutMs` (START_MS).
 * `root`: run the CLI of another checkout (benchmarks comparing two versions).
 */
export async function spawnGatewayCli(t: Teardown, args: string[], o: { env?: NodeJS.ProcessEnv; openFileLimit?: number; name?: string; timeoutMs?: number; root?: string } = {}): Promise<GatewayCli> {
  const name = o.name ?? 'gateway';
  const spawnOpts = { stdio: ['ignore', 'pipe', 'pipe'] as ('ignore' | 'pipe')[], ...(o.env ? { env: { ...process.env, ...o.env } } : {}) };
  const argv = [o.root === undefined ? CLI : path.join(o.root, 'bin/ghostgate.ts'), 'start', ...args];
  const child = o.openFileLimit === undefined
    ? spawnTracked(NODE_BIN, argv, spawnOpts)
    : spawnTracked('/bin/sh', ['-c', `ulimit -n ${o.openFileLimit} && exec "$0" "$@"`, NODE_BIN, ...argv], spawnOpts);
  const exited = new Promise<number | string | null>((resolve) => child.once('exit', (code, sig) => resolve(code ?? sig)));
  t.teardown(() => stopTracked(child, 0, 'SIGKILL'));
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => { err += d; });
  const banner = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start in time: ${err}`)), o.timeoutMs ?? START_MS);
    child.stdout!.on('data', (d: string) => {
      out += d;
      if (/^\s+admin\s+http:\/\/\S+/m.test(out)) { clearTimeout(timer); resolve(out); }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${name} exited (${code}): ${err}`)); });
  });
  return { child, exited, banner, stdout: () => out, stderr: () => err };
}
