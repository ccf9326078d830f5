/**
 * A cluster worker: one whole gateway (data plane, runtime, upstream pools) that binds the
 * data-plane ports with SO_REUSEPORT beside its siblings, whose admin plane has no listener of its own
 * (the primary serves the admin port and asks each worker over IPC), and which never reads the
 * config files itself: it loads the snapshot the primary read and validated, sent with `init` and
 * with each `reload`, so every worker (a replacement too) runs the texts that were validated,
 * whatever is on disk by then. Secret files and external plugin modules are still read here
 * (see ConfigReader in core/config/load.ts for why).
 *
 * Life: wait for the primary's `init` (slot, config snapshot, the shared dev credentials), start,
 * report `ready` or `failed`, serve the primary's calls. SIGTERM drains like a single process
 * (shutdown.drainDelayMs, then shutdown.graceMs). If the primary dies, node:cluster ends the
 * worker at once when its IPC channel closes (requests in flight are cut): no orphan keeps
 * serving (test/cluster/lifecycle.test.ts).
 */
import { useSharedDevCredentials } from '../auth/keys.ts';
import { ConfigErrors, GatewayError } from '../errors.ts';
import { snapshotReader } from '../config/load.ts';
import type { ConfigReader } from '../config/load.ts';
import { Gateway } from '../gateway.ts';
import { installFaultHandlers, registerFaultMetrics } from '../process-faults.ts';
import type { BannerInfo, ClusterMessage, InitMessage, WorkerHealth } from './ipc.ts';
import { isClusterMessage, serveCalls } from './ipc.ts';

const send = (m: ClusterMessage): void => { process.send?.(m); };

export async function runWorker(): Promise<void> {
  const init = await new Promise<InitMessage>((resolve) => {
    const on = (m: unknown): void => {
      if (isClusterMessage(m) && m.t === 'init') { process.off('message', on); resolve(m); }
    };
    process.on('message', on);
  });
  useSharedDevCredentials(init.dev);
  applyTestEnv(init.slot);
  testDisconnectHook();
  // The primary reloads every worker; a SIGHUP sent to the whole process group must not make
  // this worker reload on its own (unvalidated, out of step with the others).
  process.on('SIGHUP', () => { /* the primary handles it */ });
  // The config to load next: the gateway asks at start and on each reload.
  let config = init.config;
  const configSource = (): { reader: ConfigReader; version: number } => ({ reader: snapshotReader(config.snapshot), version: config.version });
  let gw: Gateway;
  try {
    gw = await Gateway.start({ configFile: init.configFile, workers: init.workers, watch: false, adminListen: false, listen: { ...init.listen, reusePort: true }, configSource, runtimePatches: true });
  } catch (e) {
    const err = e instanceof ConfigErrors ? e.errors[0]! : e instanceof GatewayError ? e : undefined;
    const message = e instanceof ConfigErrors ? e.errors.map((x) => x.describe()).join('; ') : e instanceof Error ? e.message : String(e);
    // Exit 1 once the message is out. (Not by closing the channel with exitCode 1: node:cluster
    // ends a worker whose channel closes with exit 0, whatever exitCode says.)
    const failed: ClusterMessage = { t: 'failed', code: err?.code ?? 'GW_ERR_SERVER_INTERNAL', message, exitCode: 1 };
    if (process.send) process.send(failed, () => process.exit(failed.exitCode));
    else process.exit(failed.exitCode);
    return;
  }
  registerFaultMetrics(gw.metrics.registry);
  installFaultHandlers(gw.log, gw.runtime.config.server.onUnhandledRejection);
  const health = (): WorkerHealth => {
    const s = gw.health.status();
    gw.metrics.healthy.set(s.healthy ? 1 : 0);
    return { ...s, configVersion: gw.runtime.version };
  };
  process.on('message', serveCalls({
    inject: (req) => gw.adminInject(req),
    reload: (args) => { config = args.config; return gw.reload(args.trigger); },
    metrics: async () => { health(); return gw.metrics.registry.getMetricsAsJSON() as Promise<unknown[]>; },
    health: async () => health(),
    info: async () => ({ version: gw.runtime.version, fingerprint: gw.runtime.loaded.fingerprint, loadedAt: gw.runtime.loadedAt.toISOString(), lastReload: gw.lastReload }),
  }, send));
  let closing: Promise<void> | undefined;
  const stop = (why: string): void => {
    closing ??= (async () => {
      gw.log.info({ slot: init.slot, why }, 'worker shutting down: finishing in-flight requests');
      await gw.close();
      process.disconnect?.();
    })();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  const a = gw.addresses!;
  send({ t: 'ready', addresses: { cleartext: a.cleartext, tls: a.tls, port: a.port, tlsPort: a.tlsPort }, banner: await bannerInfo(gw) });
}

/** What the start-up banner shows about a running gateway (a dev token only in dev mode). */
export async function bannerInfo(gw: Gateway): Promise<BannerInfo> {
  const rt = gw.runtime;
  const info: BannerInfo = {
    version: rt.version,
    model0: rt.config.defaultModel ?? Object.keys(rt.config.models)[0]!,
    upstreams: [...rt.upstreams.values()].map((u) => `${u.name}=${u.config.url} (${u.config.protocol})`).join(', '),
  };
  // A token and an API key are printed in dev mode only (auth.dev: true): the log stream of a
  // real deployment must never carry a credential.
  if (rt.auth && (rt.config.auth as { dev?: boolean }).dev === true) {
    try { info.devToken = (await rt.auth.mint({ sub: 'dev' }, 3600)).token; } catch { /* no signing key for dev tokens */ }
    if (rt.auth.devApiKey) info.devApiKey = rt.auth.devApiKey;
  }
  return info;
}

/**
 * Test-only fault injection: `GHOSTGATE_TEST_WORKER_ENV='{"2":{"X":null}}'` removes X from
 * worker 2's environment (a string sets it), so a test can make one worker fail a reload the
 * primary validated (a config that reads `${X}`). Honoured only in a test run (`GHOSTGATE_TEST_RUN`).
 */
function applyTestEnv(slot: number): void {
  const spec = process.env.GHOSTGATE_TEST_WORKER_ENV;
  if (!spec || !process.env.GHOSTGATE_TEST_RUN) return;
  const forSlot = (JSON.parse(spec) as Record<string, Record<string, string | null>>)[String(slot)] ?? {};
  for (const [k, v] of Object.entries(forSlot)) { if (v === null) delete process.env[k]; else process.env[k] = v; }
}

/**
 * Test-only fault injection: with `GHOSTGATE_TEST_DISCONNECT_ON_SIGUSR2` set (for one slot, through
 * GHOSTGATE_TEST_WORKER_ENV), SIGUSR2 closes this worker's IPC channel and keeps the process
 * alive and serving: the state between a worker's channel closing and its exit, held open, so a
 * test can see what the primary does with it. (node:cluster ends a worker whose channel closes
 * unasked at once: its 'disconnect' listener is removed first.) Honoured only in a test run.
 */
function testDisconnectHook(): void {
  if (!process.env.GHOSTGATE_TEST_DISCONNECT_ON_SIGUSR2 || !process.env.GHOSTGATE_TEST_RUN) return;
  process.on('SIGUSR2', () => {
    process.removeAllListeners('disconnect');
    process.disconnect?.();
    process.stdout.write(`test hook: worker ${process.pid} closed its IPC channel\n`);
  });
}
