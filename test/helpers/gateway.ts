/**
 * Start a real gateway for a test: a temp folder with a gateway.config.yaml and policies, a real
 * bundled model server process as upstream, listeners on port 0.
 *
 *   const g = await startGateway(t, { policies: { 'p.yaml': 'name: p\nsteps: [...]' } });
 *   const s = await connect(g.url);  // real HTTP/2 over loopback
 *   ...
 * Everything is closed by `t.teardown`.
 */
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Gateway } from '../../core/gateway.ts';
import type { GatewayOptions } from '../../core/gateway.ts';
import { spawnModelServer } from '../model-server/fixtures/spawn.ts';
import type { SpawnedModelServer } from '../model-server/fixtures/spawn.ts';
import { destroyClientSessions, within } from './h2.ts';

export interface TestGatewayOptions {
  /** Replace the `listen:` line (e.g. to add `tls:`). */
  listenYaml?: string;
  /** Extra YAML appended to the generated gateway.config.yaml (e.g. `auth:` or more upstreams). */
  extraConfig?: string;
  /** Replace the whole `upstreams:`/`models:` block (default: one upstream "local" → the model server, model ghost-small). */
  upstreamsYaml?: (model: SpawnedModelServer) => string;
  /** Policy files by name (written to policies/). Default: none. */
  policies?: Record<string, string>;
  /** Other files (secrets, keys) by relative path. */
  files?: Record<string, string>;
  /** Args for the model server (e.g. ['--ttft-ms', '50']). */
  modelArgs?: string[];
  /** Do not start a model server (e.g. upstream-down tests). */
  noModel?: boolean;
  watch?: boolean;
  env?: NodeJS.ProcessEnv;
  gatewayOptions?: Partial<GatewayOptions>;
}

export interface TestGateway {
  gw: Gateway;
  url: string;
  adminUrl: string;
  dir: string;
  configFile: string;
  model: SpawnedModelServer | undefined;
  /** JSON log lines the gateway wrote. */
  logs: string[];
  /** Model server stats (`/_stats`). */
  modelStats(): Promise<ModelStats>;
  modelRequests(): Promise<Array<{ id: string; path: string; headers: Record<string, string>; body: Record<string, unknown> }>>;
  write(rel: string, text: string): void;
}

export interface ModelStats {
  requests: number; completed: number; aborted: number; inFlight: number; tokensSent: number; tokensAfterAbort: number;
  sessions: { opened: number; active: number; goawaysSent: number };
  aborts: Array<{ id: string; phase: string; abortedAtMs: number; tokensSent: number; rstCode: number | null; protocol: string }>;
}

interface Teardown { teardown(fn: () => unknown): void }

/** Longest a gateway may take to close in a teardown (2 s grace, pools retire within 10 s). */
const CLOSE_BOUND_MS = 30_000;

/**
 * `gw.close()`, bounded: a gateway that cannot close fails the test with that message, and the
 * test process ends soon after instead of hanging on its open handles until tap's 120 s timeout.
 */
async function boundedClose(gw: Gateway): Promise<void> {
  try {
    await within(`the gateway to close (gw.close() still pending after ${CLOSE_BOUND_MS / 1000} s)`, gw.close(2000), CLOSE_BOUND_MS);
  } catch (err) {
    setTimeout(() => process.exit(1), 5000).unref();
    throw err;
  }
}

export async function startGateway(t: Teardown, o: TestGatewayOptions = {}): Promise<TestGateway> {
  const model = o.noModel ? undefined : await spawnModelServer(o.modelArgs ?? ['--ttft-ms', '20', '--token-ms', '2', '--tokens', '8']);
  if (model) t.teardown(() => model.stop());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ghostgate-test-'));
  mkdirSync(path.join(dir, 'policies'), { recursive: true });
  const write = (rel: string, text: string): void => {
    const full = path.join(dir, rel);
    mkdirSync(path.dirname(full), { recursive: true });
    writeFileSync(full, text);
  };
  for (const [rel, text] of Object.entries(o.files ?? {})) write(rel, text);
  for (const [name, text] of Object.entries(o.policies ?? {})) write(path.join('policies', name), text);
  const upstreams = o.upstreamsYaml ? o.upstreamsYaml(model as SpawnedModelServer) : [
    'upstreams:',
    '  local:',
    `    url: ${model ? model.url : 'http://127.0.0.1:9'}`,
    '    protocol: h2c',
    '    pool: { size: 2 }',
    '    timeouts: { connectMs: 1000 }',
    '    forwardHeaders: [user-agent, x-fail-after-tokens, x-status, x-ttft-ms, x-token-ms, x-tokens, x-headers-after-ttft]',
    'models:',
    '  ghost-small: { upstream: local, aliases: [ghost] }',
  ].join('\n');
  const configFile = path.join(dir, 'gateway.config.yaml');
  write('gateway.config.yaml', [
    o.listenYaml ?? 'listen: { host: 127.0.0.1, port: 0 }',
    'admin: { host: 127.0.0.1, port: 0 }',
    upstreams,
    'defaultModel: ghost-small',
    'policies: [policies/*.yaml]',
    'reload: { debounceMs: 50 }',
    o.extraConfig ?? '',
  ].join('\n') + '\n');
  const logs: string[] = [];
  const stream = new Writable({ write(chunk, _enc, cb) { logs.push(...String(chunk).split('\n').filter(Boolean)); cb(); } });
  const gw = await Gateway.start({
    configFile, watch: o.watch ?? false, env: o.env, logger: { level: 'info', stream }, ...o.gatewayOptions,
  });
  const a = gw.addresses!;
  t.teardown(async () => {
    try {
      destroyClientSessions([a.port, a.tlsPort]);
      await boundedClose(gw);
    } finally {
      await model?.stop();
    }
  });
  const adminUrl = a.admin!;
  return {
    gw, url: a.cleartext, adminUrl, dir, configFile, model, logs, write,
    async modelStats() { return (await fetch(`${model!.url}/_stats`)).json() as Promise<ModelStats>; },
    async modelRequests() { return (await fetch(`${model!.url}/_requests`)).json() as Promise<never>; },
  };
}
