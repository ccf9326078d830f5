/**
 * `ghostgate start --workers N`: a primary process and N workers (node:cluster).
 *
 * - **Listeners.** Each worker runs a whole gateway and binds the data-plane ports itself with
 *   `SO_REUSEPORT` (`listen({reusePort: true})`, Node ≥ 23.1 on Linux; in a cluster worker it
 *   bypasses the primary): every worker owns a listening socket on the same port and the kernel
 *   spreads new connections over them. The first worker binds the configured port (0 picks one);
 *   the others, and every replacement, bind the port it got. Chosen over node:cluster's default
 *   (the primary accepts and passes each connection to a worker in turn) because there a
 *   connection handed to a worker that had just been SIGKILLed hung for good: measured here, the
 *   first request after `kill -9` waited until curl's own 5 s timeout (the primary never closed
 *   that handle). With reusePort the dead worker's socket closes with it and new connections go
 *   to the live ones; the primary is off the accept path entirely. Spreading is by connection
 *   (a hash), as it was with round-robin: editors and HAProxy keep HTTP/2 connections for minutes.
 * - **Admin plane** is the primary's own listener (core/cluster/admin.ts): `/_ping` and
 *   `/metrics` aggregate every worker, `POST /-/reload` validates once here and fans out,
 *   `/-/config` reports each worker's version, anything else runs on one worker's admin app.
 * - **Config snapshot.** The primary alone reads the config files: once per start or reload
 *   (a recording ConfigReader, core/config/load.ts). It validates what it read and sends
 *   those texts (a snapshot) with a version number of its own to every worker, which loads from the
 *   snapshot, never from disk. So a file edited after the primary read it (an editor's save in
 *   several writes) never reaches a worker unvalidated, and every worker runs the same texts.
 * - **Reload** (file watch, SIGHUP, `POST /-/reload`): the primary loads and fully validates the
 *   config (as `ghostgate validate` does); an invalid one never reaches a worker. Then every
 *   worker reloads from the snapshot; one that cannot keeps its running config and says so in the
 *   answer. The snapshot becomes the running one unless every worker refused it.
 * - **Crash**: a worker that exits unasked is replaced in its slot (back-off when it keeps dying
 *   young; the fifth young death in a row ends the gateway, exit 1), and the replacement loads the
 *   running snapshot: the config its siblings run, with their version, whatever is on disk now
 *   (an edit not reloaded, or one a reload refused), or the config a reload brought meanwhile.
 *   A worker whose IPC channel closes while it still runs is ended and replaced the same way.
 *   **SIGTERM** drains every worker (each: health fails, drain delay, grace), then exits.
 * - **Dev key**: the primary makes the dev signing key and API key and hands them to every
 *   worker, so a token minted by one verifies on all.
 *
 * Why one file over 250 lines: worker slots, replacement back-off, reload fan-out and drain all
 * act on the same table of workers.
 */
import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import path from 'node:path';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { builtinPlugins } from '../../plugins/index.ts';
import { generateApiKey } from '../auth/index.ts';
import { loadConfig, recordingReader } from '../config/load.ts';
import type { LoadedConfig } from '../config/load.ts';
import { ConfigWatcher } from '../config/watch.ts';
import { ConfigErrors, GatewayError } from '../errors.ts';
import type { ReloadResult } from '../gateway.ts';
import { listenError, makeLogger } from '../gateway.ts';
import { GatewayMetrics } from '../metrics.ts';
import { silentLogger } from '../plugin-context.ts';
import { buildRuntime } from '../runtime.ts';
import { readAdminCredential } from '../server/admin.ts';
import type { PluginDefinition } from '../types.ts';
import { createClusterAdmin } from './admin.ts';
import type { BannerInfo, ClusterMessage, InitMessage, StartedMessage, ValidatedConfig } from './ipc.ts';
import { isClusterMessage, Rpc } from './ipc.ts';
import { Coalesced } from '../coalesce.ts';

const WORKER_MAIN = path.join(import.meta.dirname, 'worker-main.ts');
/** How long a worker may take to start (load, warm pools, listen). */
const START_TIMEOUT_MS = 60_000;
/**
 * A worker that exits before it was ready, or this soon after, died young (see Primary#onExit).
 * Counted from ready, not from the fork: how long a start takes depends on the machine's load.
 * Test-only: GHOSTGATE_TEST_YOUNG_MS sets it (test/cluster/crash-loop.test.ts: 1 ms, so only a
 * start that failed counts, however long it took).
 */
const YOUNG_MS = Number(process.env.GHOSTGATE_TEST_YOUNG_MS) || 10_000;
/** Young deaths in a row of one slot after which the primary gives up and exits 1. */
const YOUNG_EXITS_MAX = 5;
/** How long a reload may take in a worker before the primary reports it unanswered. */
const RELOAD_TIMEOUT_MS = 60_000;

export interface WorkerSlot {
  slot: number;
  worker: Worker;
  rpc: Rpc;
  ready: boolean;
  /** The version of the config it runs (sent with `init`, then each reload it took). */
  version: number;
  /** Why it could not start, as it reported (it then closes its channel and exits). */
  failure?: string;
  /** When it became ready (Date.now()); undefined while it starts. */
  readyAt?: number;
}

/** One worker's part of a reload answer. */
export interface WorkerReload { slot: number; pid: number | undefined; ok: boolean; version?: number; unchanged?: boolean; restartRequired?: string[]; error?: { code: string; message: string } }

/** A reload answer in a cluster: the single-process shape plus each worker's result. */
export interface ClusterReloadResult extends ReloadResult { workers: WorkerReload[] }

export interface PrimaryOptions {
  configFile: string;
  workers: number;
  /** Override `reload.watch`. */
  watch?: boolean;
  /** Node arguments for each worker (default: the primary's own, node:cluster's default). */
  workerExecArgv?: string[];
}

export class Primary {
  readonly log: FastifyBaseLogger;
  readonly slots = new Map<number, WorkerSlot>();
  lastReload: ClusterReloadResult | undefined;
  /** SHA-256 of `admin.credential`, re-read on every validated reload. */
  adminCredential: Buffer | undefined;
  /** True once shutdown began: /_ping fails, crashed workers are not replaced. */
  draining = false;
  readonly restarts: { inc(): void; value: number } = { value: 0, inc() { this.value++; } };
  #loaded: LoadedConfig;
  /** The running config: what a new worker loads. */
  #config: ValidatedConfig;
  /** The version the next config with new texts gets. */
  #nextVersion = 2;
  readonly #opts: PrimaryOptions;
  readonly #dev: InitMessage['dev'];
  #admin: FastifyInstance | undefined;
  adminUrl: string | undefined;
  #watcher: ConfigWatcher | undefined;
  readonly #reloads = new Coalesced<ClusterReloadResult>((trigger) => this.#reload(trigger), (trigger) => void this.reload(trigger));
  #closed: Promise<void> | undefined;
  readonly #respawns = new Map<number, { delay: number; young: number; timer?: NodeJS.Timeout }>();
  #giveUp!: (e: GatewayError) => void;
  /** Resolves, once every worker has exited, when the primary gave up on a worker that kept dying young (see #onExit). */
  readonly gaveUp = new Promise<GatewayError>((resolve) => { this.#giveUp = resolve; });

  private constructor(opts: PrimaryOptions, loaded: LoadedConfig, config: ValidatedConfig, log: FastifyBaseLogger) {
    this.#opts = opts;
    this.#loaded = loaded;
    this.#config = config;
    this.log = log;
    const { privateKey } = generateKeyPairSync('ed25519');
    this.#dev = { kid: `dev-${randomBytes(4).toString('hex')}`, pem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, apiKey: generateApiKey() };
  }

  /** Validate, bind the admin plane, start every worker. Throws ConfigErrors or GatewayError. */
  static async start(opts: PrimaryOptions): Promise<Primary> {
    const { loaded, snapshot } = readConfig(opts.configFile);
    await validateFully(loaded);
    const log = makeLogger(loaded.config, {});
    const p = new Primary(opts, loaded, { version: 1, snapshot }, log);
    p.adminCredential = readAdminCredential(loaded);
    cluster.setupPrimary({ exec: WORKER_MAIN, args: [], execArgv: opts.workerExecArgv ?? process.execArgv });
    try {
      const c = loaded.config.admin;
      if (c.enabled) {
        p.#admin = createClusterAdmin(p);
        try {
          await p.#admin.listen({ host: c.host, port: c.port });
        } catch (e) {
          const envs = loaded.source.envNames(['admin', 'port']);
          throw listenError(e, 'admin plane', c.host, c.port, () => `admin.port${envs.length ? ` (env ${envs.join(', ')})` : ''} in ${loaded.file}`);
        }
        const port = (p.#admin.server.address() as { port: number }).port;
        p.adminUrl = `http://${c.host.includes(':') ? `[${c.host}]` : c.host}:${port}`;
      }
      // The first worker binds the configured ports (0 picks free ones); the rest join them.
      const first = await p.#fork(1);
      if (first.t === 'failed') throw new GatewayError(first.code as never, [], { message: first.message });
      p.#firstReady = first;
      p.#ports = { port: first.addresses.port, tlsPort: first.addresses.tlsPort };
      const rest = await Promise.all(Array.from({ length: opts.workers - 1 }, (_, i) => p.#fork(i + 2)));
      const failed = rest.find((s) => s.t === 'failed');
      if (failed && failed.t === 'failed') throw new GatewayError(failed.code as never, [], { message: failed.message });
    } catch (e) {
      await p.close(0);
      throw e;
    }
    p.#pointWatcher();
    return p;
  }

  #firstReady: Extract<StartedMessage, { t: 'ready' }> | undefined;
  /** The data-plane ports the first worker bound; every later worker binds these. */
  #ports: { port: number; tlsPort?: number } | undefined;
  /** The data-plane addresses and the banner facts of the first worker. */
  get started(): { addresses: Extract<StartedMessage, { t: 'ready' }>['addresses']; banner: BannerInfo } { return this.#firstReady!; }

  /** Workers that finished starting, in slot order. */
  ready(): WorkerSlot[] { return [...this.slots.values()].filter((s) => s.ready).sort((a, b) => a.slot - b.slot); }

  /** Fork a worker for `slot`; resolves with its first message (ready or failed). */
  #fork(slot: number): Promise<StartedMessage> {
    const worker = cluster.fork(testWorkerEnv(slot));
    // Every send names a callback: one to a worker whose channel has closed (it died, its exit not
    // seen yet) fails there and the call waiting on it fails at once (ipc.ts, Rpc).
    const s: WorkerSlot = { slot, worker, rpc: new Rpc(slot, (m, sent) => worker.send(m, sent)), ready: false, version: this.#config.version };
    // Any other 'error' a worker emits (a message node:cluster sends itself, a failed kill): an
    // 'error' event nobody hears is an uncaught exception that would end the primary, and with it
    // the whole gateway.
    worker.on('error', (e: Error) => this.log.warn({ slot, workerPid: worker.process.pid, err: e.message }, 'worker channel error'));
    // A channel that closes unasked (the worker died and its exit is not seen yet, or it is alive
    // and unreachable): its calls fail now, it stops counting as ready, and a worker still running
    // is ended, as node:cluster ends a worker whose channel closes, so it is replaced at its exit.
    worker.once('disconnect', () => {
      s.ready = false;
      s.rpc.close('its IPC channel closed');
      if (this.draining || s.failure || worker.isDead()) return;
      this.log.error({ slot, workerPid: worker.process.pid }, 'worker IPC channel closed; ending the worker');
      try { worker.process.kill('SIGKILL'); } catch { /* gone */ }
    });
    this.slots.set(slot, s);
    return new Promise<StartedMessage>((resolve) => {
      const timer = setTimeout(() => {
        s.failure = `did not start within ${START_TIMEOUT_MS} ms`;
        resolve({ t: 'failed', code: 'GW_ERR_CLUSTER_WORKER', message: `worker ${slot} did not start within ${START_TIMEOUT_MS} ms`, exitCode: 1 });
        worker.process.kill('SIGKILL');
      }, START_TIMEOUT_MS);
      worker.once('online', () => {
        s.version = this.#config.version;
        const init: InitMessage = { t: 'init', slot, workers: this.#opts.workers, configFile: this.#opts.configFile, config: this.#config, dev: this.#dev, ...(this.#ports ? { listen: this.#ports } : {}) };
        // A failed send: the channel closed, which 'disconnect' handles.
        worker.send(init, () => { /* see 'disconnect' */ });
      });
      worker.on('message', (m: unknown) => {
        if (!isClusterMessage(m)) return;
        if (s.rpc.receive(m)) return;
        if (m.t === 'ready') {
          clearTimeout(timer);
          // A reload that ran while it started did not ask it: it counts as ready once it runs
          // the config its siblings run.
          void this.#catchUp(s).then(() => {
            if (!worker.isConnected()) return;
            s.ready = true;
            s.readyAt = Date.now();
            this.log.info({ slot, workerPid: worker.process.pid, version: s.version }, 'worker ready');
            resolve(m);
          });
        } else if (m.t === 'failed') {
          clearTimeout(timer);
          s.failure = `${m.code}: ${m.message}`;
          this.log.error({ slot, workerPid: worker.process.pid, code: m.code, err: m.message }, 'worker could not start');
          resolve(m);
        }
      });
      worker.once('exit', (code, signal) => {
        clearTimeout(timer);
        s.rpc.close('it exited');
        if (this.slots.get(slot) === s) this.slots.delete(slot);
        resolve({ t: 'failed', code: 'GW_ERR_CLUSTER_WORKER', message: `worker ${slot} exited (${signal ?? code}) while starting`, exitCode: 1 });
        this.#onExit(s, code, signal);
      });
    });
  }

  /**
   * A worker ended: if nobody asked it to, replace it, with a back-off while it keeps dying young
   * (before it was ready, or within YOUNG_MS of it: 200 ms, doubling, at most 10 s). A worker that
   * never got ready died young however long its start took: on a loaded machine a start that
   * fails can take longer than YOUNG_MS, and it must still count towards giving up. The YOUNG_EXITS_MAX-th young
   * death in a row of one slot ends the primary: it drains the other workers and `gaveUp`
   * resolves with the reason (the CLI exits 1), so a supervisor sees a gateway that cannot keep
   * its workers running instead of one restarting them for ever.
   */
  #onExit(s: WorkerSlot, code: number | null, signal: string | null): void {
    if (this.draining) return;
    const r = this.#respawns.get(s.slot) ?? { delay: 0, young: 0 };
    const young = s.readyAt === undefined || Date.now() - s.readyAt <= YOUNG_MS;
    r.young = young ? r.young + 1 : 0;
    r.delay = young ? Math.min(Math.max(r.delay * 2, 200), 10_000) : 0;
    this.#respawns.set(s.slot, r);
    const why = s.failure ?? `exit ${signal ?? code}`;
    if (r.young >= YOUNG_EXITS_MAX) {
      const e = new GatewayError('GW_ERR_CLUSTER_WORKER', [], { message: `worker ${s.slot} ended ${r.young} times in a row before it was ready or within ${YOUNG_MS / 1000} s of it (last: ${why}); shutting down` });
      this.log.error({ slot: s.slot, workerPid: s.worker.process.pid, code, signal, youngExits: r.young, last: why }, 'worker keeps dying young; shutting down the gateway');
      void this.close().then(() => this.#giveUp(e));
      return;
    }
    this.restarts.inc();
    this.log.error({ slot: s.slot, workerPid: s.worker.process.pid, code, signal, restartInMs: r.delay }, 'worker exited unexpectedly; replacing it');
    r.timer = setTimeout(() => {
      r.timer = undefined;
      if (this.draining) return;
      void this.#fork(s.slot).then((m) => {
        if (m.t === 'ready') this.log.info({ slot: s.slot, workerPid: this.slots.get(s.slot)?.worker.process.pid }, 'worker replaced');
      });
    }, r.delay);
  }

  /** Start, stop or re-point the file watcher to match the running config (`reload.watch`). */
  #pointWatcher(): void {
    const l = this.#loaded;
    const on = this.#opts.watch ?? l.config.reload.watch;
    if (!on) { this.#watcher?.close(); this.#watcher = undefined; return; }
    this.#watcher ??= new ConfigWatcher(l.config.reload.debounceMs, () => { void this.reload('file change'); });
    const policyDirs = l.config.policies.map((p) => path.dirname(path.resolve(l.dir, p)));
    this.#watcher.update([l.file, ...l.policies.map((p) => p.file), ...l.watchFiles], policyDirs, l.config.reload.debounceMs);
  }

  /** Validate once, then reload every worker. Concurrent calls coalesce. */
  reload(trigger: string): Promise<ClusterReloadResult> {
    if (this.draining) {
      return Promise.resolve({ ok: false, trigger, at: new Date().toISOString(), version: this.#version(), workers: [], error: { code: 'GW_ERR_SERVER_SHUTTING_DOWN', message: 'Gateway is shutting down; reload ignored' } });
    }
    return this.#reloads.call(trigger);
  }

  #version(): number { return this.#config.version; }

  async #reload(trigger: string): Promise<ClusterReloadResult> {
    const at = new Date().toISOString();
    let loaded: LoadedConfig;
    let snapshot: ValidatedConfig['snapshot'];
    let credential: Buffer | undefined;
    try {
      ({ loaded, snapshot } = readConfig(this.#opts.configFile));
      credential = readAdminCredential(loaded);
      await validateFully(loaded);
    } catch (e) {
      const errs = e instanceof ConfigErrors ? e.errors : [e instanceof GatewayError ? e : new GatewayError('GW_ERR_CONFIG_INVALID', [e instanceof Error ? e.message : String(e)])];
      const r: ClusterReloadResult = {
        ok: false, trigger, at, version: this.#version(), workers: [],
        error: { code: errs[0]!.code, message: `config rejected; every worker keeps its running config: ${errs.map((x) => x.describe()).join('; ')}` },
        errors: errs.map((x) => ({ code: x.code, message: x.message, file: x.location?.file, line: x.location?.line, column: x.location?.column })),
      };
      this.lastReload = r;
      this.log.error({ trigger, errors: r.errors }, 'config reload rejected; no worker was asked to load it');
      return r;
    }
    // The same texts keep their version (a worker that missed them can still catch up).
    const config: ValidatedConfig = { version: loaded.fingerprint === this.#loaded.fingerprint ? this.#config.version : this.#nextVersion++, snapshot };
    const targets = this.ready();
    const results = await Promise.all(targets.map(async (s): Promise<WorkerReload> => {
      const pid = s.worker.process.pid;
      try {
        const r = await s.rpc.call('reload', { trigger, config }, RELOAD_TIMEOUT_MS);
        if (r.ok) s.version = config.version;
        return { slot: s.slot, pid, ok: r.ok, version: r.version, ...(r.unchanged ? { unchanged: true } : {}), ...(r.restartRequired ? { restartRequired: r.restartRequired } : {}), ...(r.error ? { error: r.error } : {}) };
      } catch (e) {
        return { slot: s.slot, pid, ok: false, error: (e instanceof GatewayError ? e : new GatewayError('GW_ERR_CLUSTER_WORKER', [s.slot, e instanceof Error ? e.message : String(e)])).toJSON().error };
      }
    }));
    const failed = results.filter((w) => !w.ok);
    if (results.length === 0 || failed.length < results.length) {
      // Running now (on a worker at least; or on none yet: then the next worker starts with it).
      this.#loaded = loaded;
      this.#config = config;
      this.adminCredential = credential;
      this.#pointWatcher();
      // A worker that became ready after the reload chose its targets runs the older config.
      for (const s of this.ready()) if (!targets.includes(s)) void this.#catchUp(s);
    }
    const versions = results.map((w) => w.version ?? 0);
    const r: ClusterReloadResult = {
      ok: failed.length === 0 && results.length > 0, trigger, at, version: versions.length ? Math.max(...versions) : this.#version(), workers: results,
      ...(results.some((w) => w.restartRequired) ? { restartRequired: [...new Set(results.flatMap((w) => w.restartRequired ?? []))] } : {}),
      ...(results.length > 0 && results.every((w) => w.unchanged) ? { unchanged: true } : {}),
    };
    if (results.length === 0) r.error = new GatewayError('GW_ERR_CLUSTER_NO_WORKER', ['reload']).toJSON().error;
    else if (failed.length) {
      r.error = { code: failed[0]!.error?.code ?? 'GW_ERR_CLUSTER_WORKER', message: `${failed.length} of ${results.length} workers kept their running config: ${failed.map((w) => `worker ${w.slot} (pid ${w.pid}) version ${w.version ?? '?'}: ${w.error?.message ?? 'failed'}`).join('; ')}` };
    }
    this.lastReload = r;
    if (r.ok) this.log.info({ trigger, workers: results.map((w) => ({ slot: w.slot, version: w.version })) }, 'config reloaded on every worker');
    else this.log.error({ trigger, workers: results }, 'config reload: not every worker took the new config');
    return r;
  }

  /**
   * Bring a worker to the running config if it runs another: one that started, or became ready,
   * while a reload ran (its `init` carried the config of the time). Again while the running config
   * moves on meanwhile; a worker that cannot load it keeps its own, and the log says why.
   */
  async #catchUp(s: WorkerSlot): Promise<void> {
    let tried: number | undefined;
    while (s.version !== this.#config.version && tried !== this.#config.version && !this.draining) {
      const config = this.#config;
      tried = config.version;
      try {
        const r = await s.rpc.call('reload', { trigger: 'catch-up', config }, RELOAD_TIMEOUT_MS);
        if (r.ok) s.version = config.version;
        else this.log.error({ slot: s.slot, workerPid: s.worker.process.pid, version: s.version, err: r.error }, 'worker could not load the running config; it keeps its own');
      } catch (e) {
        this.log.error({ slot: s.slot, workerPid: s.worker.process.pid, err: e instanceof Error ? e.message : String(e) }, 'worker did not take the running config');
        return;
      }
    }
  }

  /** Drain every worker (each runs its own drain delay and grace), then close the admin plane. */
  close(graceMs?: number): Promise<void> {
    return (this.#closed ??= this.#close(graceMs));
  }

  async #close(graceMs?: number): Promise<void> {
    this.draining = true;
    this.#watcher?.close();
    for (const r of this.#respawns.values()) clearTimeout(r.timer);
    const c = this.#loaded.config.shutdown;
    const bound = c.drainDelayMs + (graceMs ?? c.graceMs) + 15_000;
    const alive = [...this.slots.values()].filter((s) => !s.worker.isDead());
    const exits = alive.map((s) => new Promise<void>((r) => { if (s.worker.isDead()) r(); else s.worker.once('exit', () => r()); }));
    for (const s of alive) { try { s.worker.process.kill('SIGTERM'); } catch { /* gone */ } }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([Promise.all(exits).then(() => false), new Promise<boolean>((r) => { timer = setTimeout(() => r(true), bound); })]);
    clearTimeout(timer);
    if (timedOut) {
      this.log.error({ boundMs: bound }, 'workers did not exit in time; killing them');
      for (const s of alive) { try { s.worker.process.kill('SIGKILL'); } catch { /* gone */ } }
      await Promise.all(exits);
    }
    await this.#admin?.close();
  }
}

/**
 * Load everything a worker would load and build a runtime aside without opening connections
 * (as `ghostgate validate` does): plugins, params, conditions, secrets, auth.
 */
async function validateFully(loaded: LoadedConfig): Promise<void> {
  const rt = await buildRuntime(loaded, { log: silentLogger, metrics: new GatewayMetrics(undefined, { defaults: false }), plugins: builtinPlugins as ReadonlyArray<PluginDefinition<unknown>>, sharedStore: new Map(), warm: false });
  await rt.retire(undefined);
}

/** Load the config from disk, keeping the texts read: what the workers will load. */
function readConfig(file: string): { loaded: LoadedConfig; snapshot: ValidatedConfig['snapshot'] } {
  const reader = recordingReader();
  return { loaded: loadConfig(file, process.env, reader), snapshot: reader.snapshot };
}

/** The worker's environment: the primary's plus its slot. */
function testWorkerEnv(slot: number): NodeJS.ProcessEnv {
  return { GHOSTGATE_WORKER_SLOT: String(slot) };
}

export type { ClusterMessage };
