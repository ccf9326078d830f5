/**
 * The gateway: loads config, builds the runtime, runs the listeners, reloads, shuts down.
 *
 *   const gw = await Gateway.start({ configFile: 'gateway.config.yaml' });
 *   ...
 *   await gw.close();
 *
 * Why one file over 250 lines: start-up, reload and shutdown order the same listeners, runtime and
 * pools; each is short, but their ordering (all-or-exit start, drain then grace then destroy) is
 * easiest to check in one place.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { builtinPlugins } from '../plugins/index.ts';
import { isLoopback, loadConfig } from './config/load.ts';
import type { ConfigReader, LoadedConfig } from './config/load.ts';
import type { GatewayConfig } from './config/model.ts';
import { ConfigWatcher } from './config/watch.ts';
import { ConfigErrors, GatewayError } from './errors.ts';
import { HealthMonitor } from './health.ts';
import { HealthProbe } from './health-probe.ts';
import { createLogger } from './logger.ts';
import { GatewayMetrics } from './metrics.ts';
import { buildRuntime, Runtime } from './runtime.ts';
import { secretReader } from './secrets.ts';
import { openStore, STORE_KEY } from './store/index.ts';
import { createAdminServer, readAdminCredential } from './server/admin.ts';
import { dataPlanePlugin, registerDataPlane } from './server/data-plane.ts';
import { copilotPlugin } from './copilot/routes.ts';
import { passthroughPlugin } from './server/passthrough.ts';
import { BodyBudget } from './server/body-budget.ts';
import { ClientInflight } from './server/client-sessions.ts';
import { installStreamGuards } from './server/stream-guard.ts';
import type { GatewayState } from './server/data-plane.ts';
import { createDataPlaneServers } from './server/listeners.ts';
import { installFastLane, installFastLaneHttp1 } from './server/fast-lane.ts';
import type { Http2SecureServer, Http2Server, Http2Session } from 'node:http2';
import type { DataPlaneServers } from './server/listeners.ts';
import type { PluginDefinition } from './types.ts';
import { Coalesced } from './coalesce.ts';
import { applyRuntimePatches } from './runtime-patches.ts';

export interface GatewayOptions {
  configFile: string;
  env?: NodeJS.ProcessEnv;
  /** Extra plugins (besides the built-ins), e.g. an operator's own. */
  plugins?: ReadonlyArray<PluginDefinition<unknown>>;
  /** Override listener ports (tests use 0). */
  listen?: {
    port?: number; tlsPort?: number; adminPort?: number; host?: string;
    /**
     * Bind the data-plane ports with SO_REUSEPORT (cluster workers: each binds its own socket on
     * the same port and the kernel spreads new connections; see core/cluster/primary.ts).
     */
    reusePort?: boolean;
  };
  /** Override `reload.watch`. */
  watch?: boolean;
  /**
   * Bind the admin plane's port (default true). A cluster worker builds its admin app without a
   * listener: the primary serves the admin port and runs requests on it through `adminInject`.
   */
  adminListen?: boolean;
  /** Pino logger options override, e.g. `{ level: 'silent' }` in tests; or a stream to write JSON lines to. */
  logger?: { level?: string; stream?: NodeJS.WritableStream };
  /** Set by a cluster worker: how many processes share the data plane (deployment caps are split). */
  workers?: number;
  /**
   * Where the config's files come from, asked at start and on every reload. Set by a cluster
   * worker: the snapshot its primary validated, and the primary's version for it (the same on
   * every worker; core/cluster/worker.ts). Default: the disk, versions numbered by this process.
   */
  configSource?: () => { reader: ConfigReader; version: number };
  /**
   * Apply core/runtime-patches.ts to this process once the config is loaded, before anything
   * starts (unless `server.keepAsyncResourceProperty`). Set by a cluster worker; `ghostgate start`
   * applies them itself. Default false: an embedder's process keeps Node as it is.
   */
  runtimePatches?: boolean;
}

export interface ReloadResult {
  ok: boolean;
  trigger: string;
  at: string;
  version: number;
  /** Nothing changed on disk. */
  unchanged?: boolean;
  /** Settings that changed but apply only after a restart. */
  restartRequired?: string[];
  error?: { code: string; message: string };
  errors?: Array<{ code: string; message: string; file?: string; line?: number; column?: number }>;
}

export interface Addresses { cleartext: string; tls?: string; admin?: string; port: number; tlsPort?: number; adminPort?: number }

export class Gateway implements GatewayState {
  runtime: Runtime;
  readonly metrics: GatewayMetrics;
  readonly health: HealthMonitor;
  readonly log: FastifyBaseLogger;
  closing = false;
  readonly clientInflight = new ClientInflight();
  readonly bodyBudget = new BodyBudget();
  readonly lanes = { fast: 0, fastify: 0 };
  lastReload: ReloadResult | undefined;
  addresses: Addresses | undefined;
  /** SHA-256 of `admin.credential` (re-read on every reload), or undefined when none is set. */
  adminCredential: Buffer | undefined;
  readonly #opts: GatewayOptions;
  /** The listeners this gateway owns; undefined when embedded in someone else's Fastify app. */
  readonly #servers: DataPlaneServers | undefined;
  readonly #admin: FastifyInstance | undefined;
  readonly #sharedStore: Map<string, unknown>;
  readonly #plugins: ReadonlyArray<PluginDefinition<unknown>>;
  #watcher: ConfigWatcher | undefined;
  readonly #reloads = new Coalesced<ReloadResult>((trigger) => this.#reload(trigger), (trigger) => void this.reload(trigger));
  #tlsMaterial: { key: string; cert: string } | undefined;
  #closeStore: () => Promise<void> = async () => {};
  #closed: Promise<void> | undefined;
  /** Probes the default model while the instance is voted out (health.probe). */
  readonly #probe: HealthProbe;
  /** Runtimes swapped out by a reload whose requests have not all ended yet. */
  readonly #retiring = new Set<Promise<void>>();
  readonly #draining = new Set<Runtime>();

  private constructor(opts: GatewayOptions, runtime: Runtime, metrics: GatewayMetrics, log: FastifyBaseLogger, servers: DataPlaneServers | undefined, sharedStore: Map<string, unknown>, plugins: ReadonlyArray<PluginDefinition<unknown>>) {
    this.#opts = opts;
    this.runtime = runtime;
    this.metrics = metrics;
    this.log = log;
    this.health = new HealthMonitor(runtime.config.health);
    this.#probe = new HealthProbe(this);
    this.#probe.configure();
    this.#servers = servers;
    this.#sharedStore = sharedStore;
    this.#plugins = plugins;
    this.#admin = servers && runtime.config.admin.enabled ? createAdminServer(this, log) : undefined;
    metrics.configVersion.set(runtime.version);
  }

  /** Load, build, listen. Throws ConfigErrors when the config is invalid. */
  static async start(opts: GatewayOptions): Promise<Gateway> {
    const env = opts.env ?? process.env;
    const { loaded, version } = load(opts, env);
    const config = loaded.config;
    if (opts.runtimePatches) applyRuntimePatches(config.server);
    const adminCredential = readAdminCredential(loaded, env);
    const log = makeLogger(config, opts);
    if (config.admin.enabled && !isLoopback(config.admin.host) && !adminCredential) {
      log.warn({ host: config.admin.host }, 'admin plane on a non-loopback address without admin.credential (admin.insecureAllowNoCredential): anyone who reaches it can reload the config');
    }
    const metrics = new GatewayMetrics();
    const sharedStore = new Map<string, unknown>();
    const plugins = [...builtinPlugins, ...(opts.plugins ?? [])] as ReadonlyArray<PluginDefinition<unknown>>;
    // The shared store (store.redis) lives as long as the gateway; plugins find it in sharedStore.
    const opened = await openStore(config.store, secretReader(loaded.dir, env), log, metrics.registry);
    if (opened.store) sharedStore.set(STORE_KEY, opened.store);
    const runtime = await buildRuntime(loaded, { log, metrics, plugins, sharedStore, env, warm: true, workers: opts.workers, version }).catch(async (e: unknown) => { await opened.close(); throw e; });
    // From here on, anything that fails closes what already started: a gateway either runs
    // whole or not at all (no listener left bound, no warm upstream pool left open).
    let servers: DataPlaneServers | undefined;
    let gw: Gateway | undefined;
    try {
      let tls: { key: string; cert: string } | undefined;
      if (config.listen.tls) {
        const read = secretReader(loaded.dir, env);
        tls = { key: read(config.listen.tls.key), cert: read(config.listen.tls.cert) };
      }
      servers = createDataPlaneServers(config, log, metrics, tls);
      gw = new Gateway(opts, runtime, metrics, log, servers, sharedStore, plugins);
      gw.#tlsMaterial = tls;
      gw.#closeStore = opened.close;
      gw.adminCredential = adminCredential;
      await servers.cleartext.register(dataPlanePlugin, { gw });
      await servers.cleartext.register(copilotPlugin, { gw });
      await servers.cleartext.register(passthroughPlugin, { gw });
      installStreamGuards(servers.cleartext.server as unknown as Http2Server, gw);
      installFastLane(servers.cleartext.server as unknown as Http2Server, gw);
      if (servers.tls) {
        await servers.tls.register(dataPlanePlugin, { gw });
        await servers.tls.register(copilotPlugin, { gw });
        await servers.tls.register(passthroughPlugin, { gw });
        installStreamGuards(servers.tls.server as unknown as Http2SecureServer, gw);
        installFastLane(servers.tls.server as unknown as Http2SecureServer, gw);
      }
      for (const f of servers.http1) installFastLaneHttp1(f, gw);
      await gw.#listen();
    } catch (e) {
      const apps = [servers?.cleartext, servers?.tls, gw ? gw.#admin : undefined].filter((a): a is FastifyInstance => a !== undefined);
      await Promise.allSettled(apps.map((a) => a.close()));
      await runtime.retire(undefined);
      await opened.close();
      throw e;
    }
    gw.#startWatching();
    return gw;
  }

  /**
   * Serve inside an existing Fastify application instead of listening (core/fastify.ts is the
   * Fastify plugin around this): the completion and token routes go into an encapsulated child of
   * `app`, so its content-type parser and error handler apply to ghostgate's routes only. No
   * listener, fast lane, TLS port, admin plane or connection guard of its own: those belong to the
   * server, which is the application's. Reload through `reload()` or the file watcher.
   */
  static async embed(app: FastifyInstance, opts: GatewayOptions): Promise<Gateway> {
    const env = opts.env ?? process.env;
    const loaded = loadConfig(opts.configFile, env);
    const metrics = new GatewayMetrics();
    const sharedStore = new Map<string, unknown>();
    const plugins = [...builtinPlugins, ...(opts.plugins ?? [])] as ReadonlyArray<PluginDefinition<unknown>>;
    const opened = await openStore(loaded.config.store, secretReader(loaded.dir, env), app.log, metrics.registry);
    if (opened.store) sharedStore.set(STORE_KEY, opened.store);
    const runtime = await buildRuntime(loaded, { log: app.log, metrics, plugins, sharedStore, env, warm: true, workers: opts.workers }).catch(async (e: unknown) => { await opened.close(); throw e; });
    const gw = new Gateway(opts, runtime, metrics, app.log, undefined, sharedStore, plugins);
    gw.#closeStore = opened.close;
    await app.register(async (child) => { registerDataPlane(child, gw, { notFound: false }); });
    gw.#startWatching();
    return gw;
  }

  async #listen(): Promise<void> {
    if (!this.#servers) return;
    const c = this.runtime.config;
    const o = this.#opts.listen ?? {};
    const host = o.host ?? c.listen.host;
    const reusePort = o.reusePort === true;
    const port = await this.#bind(this.#servers.cleartext, 'data plane', host, o.port, c.listen.port, ['listen', 'port'], o.host ? undefined : ['listen', 'host'], reusePort);
    const a: Addresses = { cleartext: `http://${fmtHost(host)}:${port}`, port };
    if (this.#servers.tls && c.listen.tls) {
      const th = o.host ?? c.listen.tls.host;
      a.tlsPort = await this.#bind(this.#servers.tls, 'TLS data plane', th, o.tlsPort, c.listen.tls.port, ['listen', 'tls', 'port'], o.host ? undefined : ['listen', 'tls', 'host'], reusePort);
      a.tls = `https://${fmtHost(th)}:${a.tlsPort}`;
    }
    if (this.#admin && this.#opts.adminListen !== false) {
      a.adminPort = await this.#bind(this.#admin, 'admin plane', c.admin.host, o.adminPort, c.admin.port, ['admin', 'port'], ['admin', 'host']);
      a.admin = `http://${fmtHost(c.admin.host)}:${a.adminPort}`;
    }
    this.addresses = a;
  }

  /** Listen, or throw GW_ERR_SERVER_LISTEN naming the config key (and env var) that chose the address. */
  async #bind(app: FastifyInstance, what: string, host: string, override: number | undefined, port: number, portKey: string[], hostKey: string[] | undefined, reusePort = false): Promise<number> {
    const p = override ?? port;
    try {
      await app.listen({ host, port: p, ...(reusePort ? { reusePort } : {}) });
    } catch (e) {
      const src = this.runtime.loaded.source;
      const from = (key: string[] | undefined, isOverride: boolean): string => {
        if (!key || isOverride) return 'the caller\'s listen option';
        const envs = src.envNames(key);
        return `${key.join('.')}${envs.length ? ` (env ${envs.join(', ')})` : ''} in ${this.runtime.loaded.file}`;
      };
      throw listenError(e, what, host, p, (code) => (code === 'EADDRNOTAVAIL' ? from(hostKey, false) : from(portKey, override !== undefined)));
    }
    return (app.server.address() as AddressInfo).port;
  }

  /** Run one admin-plane request without a listener (cluster workers; see core/cluster). */
  async adminInject(req: { method: string; url: string; headers: Record<string, string | string[] | undefined>; payload?: string }): Promise<{ statusCode: number; headers: Record<string, string | string[] | number | undefined>; body: string }> {
    if (!this.#admin) throw new GatewayError('GW_ERR_REQ_NOT_FOUND', [req.method, req.url]);
    const r = await this.#admin.inject({ method: req.method as 'GET', url: req.url, headers: req.headers, ...(req.payload !== undefined ? { payload: req.payload } : {}) });
    return { statusCode: r.statusCode, headers: r.headers as Record<string, string | string[] | number | undefined>, body: r.body };
  }

  #startWatching(): void {
    this.#pointWatcher();
  }

  /** Start, stop or re-point the file watcher to match the running config (`reload.watch` is hot). */
  #pointWatcher(): void {
    const on = this.#opts.watch ?? this.runtime.config.reload.watch;
    if (!on) { this.#watcher?.close(); this.#watcher = undefined; return; }
    this.#watcher ??= new ConfigWatcher(this.runtime.config.reload.debounceMs, () => { void this.reload('file change'); });
    const l = this.runtime.loaded;
    const policyDirs = l.config.policies.map((p) => path.dirname(path.resolve(l.dir, p)));
    this.#watcher.update([l.file, ...l.policies.map((p) => p.file), ...l.watchFiles], policyDirs, l.config.reload.debounceMs);
  }

  /**
   * Load, validate and compile a whole new runtime aside, then swap it in. Anything invalid
   * keeps the running runtime and reports why. Concurrent calls coalesce.
   */
  reload(trigger: string): Promise<ReloadResult> {
    if (this.#closed) {
      const r = this.runtime;
      return Promise.resolve({ ok: false, trigger, at: new Date().toISOString(), version: r.version, error: { code: 'GW_ERR_SERVER_SHUTTING_DOWN', message: 'Gateway is shutting down; reload ignored' } });
    }
    return this.#reloads.call(trigger);
  }

  async #reload(trigger: string): Promise<ReloadResult> {
    const at = new Date().toISOString();
    const prev = this.runtime;
    try {
      const { loaded, version } = load(this.#opts, this.#opts.env ?? process.env);
      if (loaded.fingerprint === prev.loaded.fingerprint && (version === undefined || version === prev.version)) {
        // Still a success: after a rejected edit, restoring the running files must clear the error.
        const r: ReloadResult = { ok: true, trigger, at, version: prev.version, unchanged: true };
        this.lastReload = r;
        return r;
      }
      const restartRequired = restartOnly(prev.config, loaded.config);
      // A new certificate (rotation) applies to new TLS connections without a restart.
      let tls: { key: string; cert: string } | undefined;
      const t = loaded.config.listen.tls;
      if (t && this.#servers?.tls && !restartRequired.includes('listen')) {
        const read = secretReader(loaded.dir, this.#opts.env ?? process.env);
        tls = { key: read(t.key), cert: read(t.cert) };
      }
      const adminCredential = readAdminCredential(loaded, this.#opts.env ?? process.env);
      const next = await buildRuntime(loaded, {
        log: this.log, metrics: this.metrics, plugins: this.#plugins, sharedStore: this.#sharedStore, env: this.#opts.env, warm: true, workers: this.#opts.workers, version,
      }, prev);
      if (tls && (tls.key !== this.#tlsMaterial?.key || tls.cert !== this.#tlsMaterial?.cert)) {
        (this.#servers!.tls!.server as unknown as { setSecureContext(o: object): void }).setSecureContext({ key: tls.key, cert: tls.cert });
        this.#tlsMaterial = tls;
        this.log.info('TLS certificate reloaded');
      }
      this.runtime = next;
      this.adminCredential = adminCredential;
      this.health.configure(next.config.health);
      this.#probe.configure();
      this.metrics.configVersion.set(next.version);
      this.metrics.reloads.labels('ok').inc();
      this.#pointWatcher();
      this.#draining.add(prev);
      const retired = prev.retire(next).finally(() => { this.#draining.delete(prev); this.#retiring.delete(retired); });
      this.#retiring.add(retired);
      const r: ReloadResult = { ok: true, trigger, at, version: next.version, ...(restartRequired.length ? { restartRequired } : {}) };
      this.lastReload = r;
      this.log.info({ trigger, version: next.version, restartRequired }, 'config reloaded');
      if (restartRequired.length) this.log.warn({ restartRequired }, 'some changed settings apply only after a restart');
      return r;
    } catch (e) {
      const errs = e instanceof ConfigErrors ? e.errors : [e instanceof GatewayError ? e : new GatewayError('GW_ERR_CONFIG_INVALID', [e instanceof Error ? e.message : String(e)])];
      const r: ReloadResult = {
        ok: false, trigger, at, version: prev.version,
        error: { code: errs[0]!.code, message: `config rejected; still running version ${prev.version}: ${errs.map((x) => x.describe()).join('; ')}` },
        errors: errs.map((x) => ({ code: x.code, message: x.message, file: x.location?.file, line: x.location?.line, column: x.location?.column })),
      };
      this.lastReload = r;
      this.metrics.reloads.labels('rejected').inc();
      this.log.error({ trigger, errors: r.errors }, `config reload rejected; keeping version ${prev.version}`);
      return r;
    }
  }

  /**
   * Graceful shutdown: fail health, stop accepting, let in-flight requests finish (up to
   * `graceMs`), then close client sessions and upstream pools.
   */
  close(graceMs = this.runtime.config.shutdown.graceMs): Promise<void> {
    return (this.#closed ??= this.#close(graceMs));
  }

  async #close(graceMs: number): Promise<void> {
    this.health.drain();
    this.#probe.stop();
    this.#watcher?.close();
    // Let load balancers see /_ping fail before we stop taking requests.
    const delay = this.runtime.config.shutdown.drainDelayMs;
    if (delay > 0) {
      this.log.info({ drainDelayMs: delay }, 'draining: health check fails; still serving');
      await new Promise((r) => setTimeout(r, delay));
    }
    this.closing = true;
    await this.#reloads.running?.catch(() => undefined);
    const deadline = Date.now() + graceMs;
    const closeApp = (app: FastifyInstance | undefined): Promise<void> => (app ? app.close() : Promise.resolve());
    // Embedded (no servers of its own): the application closes its server; only requests wait.
    const servers = this.#servers;
    const sessions = servers?.sessions ?? new Set<Http2Session>();
    const http1 = servers?.http1 ?? [];
    // Stop new connections. HTTP/2: GOAWAY, streams in flight finish. HTTP/1.1: every response
    // from now on says `Connection: close`; a keep-alive connection (idle, or whose response went
    // out before the drain) is kept ~1 s to answer a request already on its way, then closed.
    const goaway = (): void => { for (const s of sessions) if (!s.closed) s.close(); };
    goaway();
    for (const f of http1) f.drain();
    const closing = Promise.all([closeApp(servers?.cleartext), closeApp(servers?.tls)]);
    // Requests in flight on every runtime: the current one and any a reload swapped out.
    const runtimes = (): Runtime[] => [this.runtime, ...this.#draining];
    const inflight = (): number => runtimes().reduce((n, r) => n + r.inflight, 0);
    // A session still open after GOAWAY has streams; an HTTP/1.1 connection still open, a response.
    const responding = (): boolean => sessions.size > 0 || http1.some((f) => f.size > 0);
    const sleep = (ms: number): Promise<unknown> => new Promise((r) => setTimeout(r, ms));
    while ((inflight() > 0 || responding()) && Date.now() < deadline) { await sleep(25); goaway(); }
    const left = inflight();
    if (left > 0) {
      // The deadline, on both protocols: what still runs is cut like a mid-stream failure (after
      // headers: an SSE error event, then RST_STREAM / the connection closed mid-chunk; before:
      // a coded 503), never a clean end.
      this.log.warn({ requests: left, graceMs }, 'shutdown grace period over: cutting the requests still in flight');
      for (const r of runtimes()) for (const ex of [...r.live]) ex.cancel('GW_ERR_SERVER_SHUTTING_DOWN');
      // Let those error events reach the wire; each response bounds its own wait to ~1 s.
      const until = Date.now() + 1500;
      while (responding() && Date.now() < until) await sleep(10);
    }
    for (const s of sessions) s.destroy();
    for (const f of http1) f.destroyAll();
    // What is still connected now (a client that stopped reading) is cut at the socket.
    servers?.gate.destroyAll();
    await closing;
    await closeApp(this.#admin);
    // Pools close once their runtimes are done; bounded, so shutdown always ends.
    await Promise.race([
      Promise.all([this.runtime.retire(undefined), ...this.#retiring]),
      new Promise((r) => setTimeout(r, 10_000).unref()),
    ]);
    await this.#closeStore();
  }
}

/** Settings read once at start (listeners, limits): changing them needs a restart. */
function restartOnly(a: GatewayConfig, b: GatewayConfig): string[] {
  const keys = ['admin', 'http2', 'limits', 'modelServer', 'logging', 'store'] as const;
  // The admin credential is re-read on every reload; the admin listener is not.
  const pick = (c: GatewayConfig, k: typeof keys[number]): string => JSON.stringify(k === 'admin' ? { ...c.admin, credential: undefined } : c[k]);
  const changed: string[] = keys.filter((k) => pick(a, k) !== pick(b, k));
  // server.fastLane is hot; the number of worker processes and Node's patches are fixed at start.
  if (a.server.workers !== b.server.workers) changed.push('server.workers');
  if (a.server.keepAsyncResourceProperty !== b.server.keepAsyncResourceProperty) changed.push('server.keepAsyncResourceProperty');
  if (a.server.onUnhandledRejection !== b.server.onUnhandledRejection) changed.push('server.onUnhandledRejection');
  if ((a.server.semiSpaceMb || 0) !== (b.server.semiSpaceMb || 0)) changed.push('server.semiSpaceMb');
  // The TLS certificate and key reload in place; addresses need a restart.
  const where = (c: GatewayConfig): string => JSON.stringify([c.listen.host, c.listen.port, c.listen.tls?.host, c.listen.tls?.port]);
  if (where(a) !== where(b)) changed.unshift('listen');
  // Passthrough routes are registered at start; an upstream's host and key apply at once.
  const routes = (c: GatewayConfig): string => JSON.stringify(c.passthrough.map((p) => [p.path, new URL(c.upstreams[p.upstream]?.url ?? 'http://x').pathname]));
  if (routes(a) !== routes(b)) changed.push('passthrough');
  return changed;
}

/** Why a listen failed, in words (the errno alone says little to a newcomer). */
const LISTEN_REASONS: Record<string, string> = {
  EADDRINUSE: 'the port is already in use',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  EADDRNOTAVAIL: 'the address is not one of this machine\'s',
  ENOTFOUND: 'the host name does not resolve',
};

/** A GW_ERR_SERVER_LISTEN for a failed listen: one line, naming where the address was configured. */
export function listenError(e: unknown, what: string, host: string, port: number, setBy: (errno: string | undefined) => string): GatewayError {
  const errno = (e as NodeJS.ErrnoException | undefined)?.code;
  const reason = (errno && LISTEN_REASONS[errno]) ?? (e instanceof Error ? e.message : String(e));
  return new GatewayError('GW_ERR_SERVER_LISTEN', [`${fmtHost(host)}:${port}`, what, reason, setBy(errno)]);
}

function fmtHost(h: string): string { return h.includes(':') ? `[${h}]` : h; }

export function makeLogger(config: GatewayConfig, opts: Pick<GatewayOptions, 'logger'>): FastifyBaseLogger {
  return createLogger({ level: opts.logger?.level ?? config.logging.level, ...(opts.logger?.stream ? { stream: opts.logger.stream } : {}) });
}

/** Read a file relative to the package (the embedded default config). */
export const PACKAGE_ROOT = path.resolve(import.meta.dirname, '..');
export function packageFile(rel: string): string { return path.join(PACKAGE_ROOT, rel); }
export function readPackageJson(): { version: string } { return JSON.parse(readFileSync(packageFile('package.json'), 'utf8')) as { version: string }; }

/** The config from the disk, or from `opts.configSource` with its version (a cluster worker's snapshot). */
function load(opts: GatewayOptions, env: NodeJS.ProcessEnv): { loaded: LoadedConfig; version: number | undefined } {
  const src = opts.configSource?.();
  return { loaded: loadConfig(opts.configFile, env, src?.reader), version: src?.version };
}
