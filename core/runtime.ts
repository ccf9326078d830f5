/**
 * Layer three: the compiled, immutable runtime. Built whole, aside from the running one; the
 * server swaps a single reference. In-flight requests keep the runtime they started with; a
 * retired runtime closes what only it held once its last request ends.
 *
 * Over 250 lines on purpose: `buildRuntime` builds every part of one config (upstreams, models
 * and deployments, auth, copilot, steps, pipelines) and reports every problem of all of them in
 * one ConfigErrors, so they are built in one function that collects errors as it goes.
 */
import { createHash } from 'node:crypto';
import type { Registry } from 'prom-client';
import { compileAuth } from './auth/index.ts';
import { createStep, loadExternalPlugins } from './plugin-loader.ts';
import type { AuthService } from './auth/index.ts';
import { compileCondition, ConditionError } from './conditions.ts';
import type { GatewayConfig, PolicyConfig, SecretRef } from './config/model.ts';
import type { LoadedConfig, LoadedPolicy } from './config/load.ts';
import { paramsAjv, validateInto, validatorFor } from './config/validate.ts';
import { ConfigErrors, GatewayError } from './errors.ts';
import type { GatewayMetrics } from './metrics.ts';
import { CompiledPipeline, MAX_STEPS } from './pipeline.ts';
import type { CompiledStep } from './pipeline.ts';
import { createPluginContext } from './plugin-context.ts';
import { checkEnv, runClosers, standInAuth, standInClient } from './step-check.ts';
import type { Declared, StepEnv } from './step-check.ts';
import { secretReader } from './secrets.ts';
import type { Logger, PluginDefinition, Step } from './types.ts';
import { createUpstream } from './upstream/client.ts';
import { DeploymentSet } from './upstream/deployments.ts';
import type { ManagedUpstream } from './upstream/client.ts';
import { compileCopilot } from './copilot/config.ts';
import { compilePassthrough } from './server/passthrough-table.ts';
import type { PassthroughTarget } from './server/passthrough-table.ts';
import type { CompiledCopilot } from './copilot/config.ts';
import { ROUTES } from './request/routes.ts';
import type { RoutePath } from './request/routes.ts';


// The route table lives with the request path (core/request/routes.ts).
export { ROUTES } from './request/routes.ts';
export type { RoutePath } from './request/routes.ts';

/** The auth service as the runtime holds it (core/auth). */
export type AuthServiceLike = AuthService;

export interface RuntimeDeps {
  log: Logger;
  metrics: GatewayMetrics;
  plugins: ReadonlyArray<PluginDefinition<unknown>>;
  /** Plugin state that outlives reloads. */
  sharedStore: Map<string, unknown>;
  env?: NodeJS.ProcessEnv;
  /** Open upstream connections now (false for `validate` and `explain`). */
  warm: boolean;
  /** Processes serving the data plane (`--workers N`); each takes its share of deployment caps. */
  workers?: number;
  /**
   * The runtime's version, when someone else numbers configs (a cluster worker: the primary's
   * number for the snapshot, the same on every worker). Default: this process's next number.
   */
  version?: number;
}

/** What the runtime needs of a running request: a way to end it with a code (e.g. shutdown). */
export interface Cancellable { cancel(code: 'GW_ERR_SERVER_SHUTTING_DOWN'): void }

export interface ModelRoute {
  readonly model: string;
  /** With deployments: the preferred deployment's (a request's route until one is picked). */
  readonly upstream: string;
  readonly upstreamModel: string;
  /** The model's deployments with failover (core/upstream/deployments.ts); absent for a single `upstream`. */
  readonly deployments?: DeploymentSet;
}

let nextVersion = 1;

export class Runtime {
  readonly version: number;
  readonly loadedAt = new Date();
  readonly loaded: LoadedConfig;
  readonly config: GatewayConfig;
  readonly upstreams: ReadonlyMap<string, ManagedUpstream>;
  /** Model name or alias → logical route. */
  readonly models: ReadonlyMap<string, ModelRoute>;
  readonly auth: AuthServiceLike | undefined;
  /** The Copilot front door (core/copilot), when `copilot.enabled`. */
  readonly copilot: CompiledCopilot | undefined;
  /** `passthrough:` entries by path, with their upstream's address and credential (core/server/passthrough.ts). */
  readonly passthrough: ReadonlyMap<string, PassthroughTarget>;
  readonly metricsRegistry: Registry;
  /** Requests currently running on this runtime (shutdown cuts them at its deadline). */
  readonly live = new Set<Cancellable>();
  #pipelines: Map<string, CompiledPipeline>;
  #closers: Array<() => void | Promise<void>>;
  #retiring: (() => void) | undefined;

  constructor(init: {
    loaded: LoadedConfig; upstreams: Map<string, ManagedUpstream>; models: Map<string, ModelRoute>;
    pipelines: Map<string, CompiledPipeline>; closers: Array<() => void | Promise<void>>; auth: AuthServiceLike | undefined; registry: Registry;
    copilot?: CompiledCopilot; passthrough?: ReadonlyMap<string, PassthroughTarget>; version?: number;
  }) {
    this.version = init.version ?? nextVersion++;
    this.loaded = init.loaded;
    this.config = init.loaded.config;
    this.upstreams = init.upstreams;
    this.models = init.models;
    this.#pipelines = init.pipelines;
    this.#closers = init.closers;
    this.auth = init.auth;
    this.copilot = init.copilot;
    this.passthrough = init.passthrough ?? new Map();
    this.metricsRegistry = init.registry;
    // Pools are shared between runtimes whose settings for them are the same; each runtime holds
    // a reference until its own requests have ended.
    for (const u of this.upstreams.values()) u.retain();
  }

  /** The pipeline for a route and the model the client asked for (O(1)). */
  pipeline(route: RoutePath, model: string): CompiledPipeline {
    return this.#pipelines.get(route + '\0' + model) ?? this.#pipelines.get(route + '\0')!;
  }

  /** Requests currently running on this runtime. */
  get inflight(): number { return this.live.size; }

  enter(ex: Cancellable): void { this.live.add(ex); }
  leave(ex: Cancellable): void {
    if (this.live.delete(ex) && this.live.size === 0 && this.#retiring) this.#retiring();
  }

  /**
   * Stop using this runtime: once its in-flight requests end, close the upstreams the successor
   * does not reuse and run plugin cleanups.
   */
  retire(successor: Runtime | undefined): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#retiring = () => {
        this.#retiring = undefined;
        const work: Array<Promise<unknown>> = [];
        // A pool closes when the last runtime using it is done (not when the next one drops it:
        // an older runtime may still have streams on it).
        for (const u of this.upstreams.values()) work.push(u.release());
        for (const c of this.#closers) work.push(Promise.resolve().then(c).catch(() => {}));
        if (this.auth && this.auth !== successor?.auth) this.auth.close();
        void Promise.allSettled(work).then(() => resolve());
      };
      if (this.inflight === 0) this.#retiring();
    });
  }
}

/** Build a whole runtime from a loaded config. Throws ConfigErrors (all problems) on failure. */
export async function buildRuntime(loaded: LoadedConfig, deps: RuntimeDeps, previous?: Runtime): Promise<Runtime> {
  const { config } = loaded;
  const errors: GatewayError[] = [];
  const readSecret = secretReader(loaded.dir, deps.env);
  const src = loaded.source;

  // Upstreams: reuse the previous pool when nothing about it changed (warm connections survive).
  const upstreams = new Map<string, ManagedUpstream>();
  for (const [name, u] of Object.entries(config.upstreams)) {
    let credentialHash = '';
    try {
      if (u.credential) credentialHash = createHash('sha256').update(readSecret(u.credential.secret)).digest('hex');
      if (u.tls?.ca) credentialHash += createHash('sha256').update(readSecret(u.tls.ca)).digest('hex');
    } catch (e) {
      errors.push(located(e, src.locate(['upstreams', name, u.credential ? 'credential' : 'tls'])));
      continue;
    }
    const key = createHash('sha256').update(JSON.stringify(u)).update(credentialHash).digest('hex');
    const prev = previous?.upstreams.get(name);
    if (prev && prev.key === key) { upstreams.set(name, prev); continue; }
    try {
      upstreams.set(name, createUpstream(name, u, { log: deps.log, metrics: deps.metrics, readSecret }, key));
    } catch (e) {
      errors.push(located(e, src.locate(['upstreams', name])));
    }
  }

  const models = new Map<string, ModelRoute>();
  for (const [name, m] of Object.entries(config.models)) {
    // Deployments keep their state (in flight, ejection, counters) across a reload.
    const deployments = m.deployments ? new DeploymentSet(name, m.deployments, m.failover, previous?.models.get(name)?.deployments, Math.random, deps.workers) : undefined;
    const route: ModelRoute = deployments
      ? { model: name, upstream: deployments.list[0]!.config.upstream, upstreamModel: deployments.list[0]!.config.model, deployments }
      : { model: name, upstream: m.upstream, upstreamModel: m.upstreamModel ?? name };
    models.set(name, route);
    for (const a of m.aliases) models.set(a, route);
  }

  let auth: AuthServiceLike | undefined;
  if (config.auth) {
    try {
      auth = await compileAuth(config.auth, { configDir: loaded.dir, log: deps.log, metrics: deps.metrics.registry, readSecret: (r: SecretRef) => readSecret(r) }, previous?.auth);
    } catch (e) {
      if (e instanceof ConfigErrors) errors.push(...e.errors);
      else errors.push(located(e, src.locate(['auth'])));
    }
  }

  let copilot: CompiledCopilot | undefined;
  // (An auth section that failed to compile is reported once, above.)
  if (config.auth === undefined || auth !== undefined) {
    try {
      copilot = compileCopilot(config.copilot, config.auth);
    } catch (e) {
      errors.push(located(e, src.locate(['copilot'])));
    }
  }

  // Steps: one Step per policy step, shared by every pipeline it appears in.
  const closers: Array<() => void | Promise<void>> = [];
  // Plugins named in the config's `plugins:` list (outside plugins/) come after the built-ins.
  const external = await loadExternalPlugins(loaded, new Set(deps.plugins.map((p) => p.name)), errors);
  const byName = new Map([...deps.plugins, ...external].map((p) => [p.name, p]));
  // An upstream or auth section that failed above is still declared: steps naming it are not
  // told it is unknown (the runtime is not built, so the stand-ins never serve).
  const clients = new Map(Object.keys(config.upstreams).map((n) => [n, upstreams.get(n) ?? standInClient(n)]));
  const modelDefaults = new Map([...models].map(([k, v]) => [k, { model: v.model, upstream: v.upstream, upstreamModel: v.upstreamModel }]));
  const env: StepEnv = {
    log: deps.log, registry: deps.metrics.registry, sharedStore: deps.sharedStore, clients, modelDefaults, closers,
    auth: auth ?? (config.auth ? standInAuth : undefined),
  };
  type Built = { policy: PolicyConfig; file: string; steps: Array<Omit<CompiledStep, 'index'>> };
  const built: Built[] = [];
  for (const lp of loaded.policies) {
    if (!lp.policy.enabled) {
      // A disabled policy is still checked, its plugins' own checks too (so enabling it later
      // cannot fail), but created aside and dropped: it touches no shared state.
      await checkPolicySteps(lp, byName, errors, { upstreams: [...clients.keys()], models: modelDefaults, auth: config.auth !== undefined });
      continue;
    }
    const b: Built = { policy: lp.policy, file: lp.file, steps: [] };
    for (let i = 0; i < lp.policy.steps.length; i++) {
      const step = await buildStep(lp, i, byName, env, errors);
      if (step) b.steps.push(step);
    }
    built.push(b);
  }
  if (errors.length) {
    // Close what we opened for this attempt (not what we borrowed from `previous`).
    for (const [n, u] of upstreams) if (previous?.upstreams.get(n) !== u) void u.close();
    for (const c of closers) void Promise.resolve().then(c).catch(() => {});
    throw new ConfigErrors(errors);
  }

  // Pipelines per (route, requested model) — plus one per route for models no policy names.
  const pipelines = new Map<string, CompiledPipeline>();
  const modelKeys = ['', ...models.keys()];
  for (const route of ROUTES) {
    for (const model of modelKeys) {
      const steps: CompiledStep[] = [];
      for (const b of built) {
        const m = b.policy.match;
        if (m.paths && !m.paths.includes(route)) continue;
        if (m.models) {
          if (model === '') continue;
          const logical = models.get(model)!.model;
          if (!m.models.some((x) => models.get(x)?.model === logical)) continue;
        }
        for (const s of b.steps) steps.push({ ...s, index: steps.length });
      }
      if (steps.length > MAX_STEPS) {
        errors.push(new GatewayError('GW_ERR_CONFIG_INVALID', [`route ${route} with model "${model || '*'}" would run ${steps.length} steps; at most ${MAX_STEPS} are supported`], { location: { file: loaded.file } }));
        continue;
      }
      pipelines.set(route + '\0' + model, new CompiledPipeline(steps, deps.log, { stepTimeoutMs: config.server.stepTimeoutMs, failures: deps.metrics.pluginFailures }));
    }
  }

  if (errors.length) {
    for (const [n, u] of upstreams) if (previous?.upstreams.get(n) !== u) void u.close();
    for (const c of closers) void Promise.resolve().then(c).catch(() => {});
    throw new ConfigErrors(errors);
  }
  const passthrough = compilePassthrough(config, readSecret);
  const rt = new Runtime({ loaded, upstreams, models, pipelines, closers, auth, registry: deps.metrics.registry, copilot, passthrough, version: deps.version });
  if (deps.warm) await Promise.all([...upstreams.values()].filter((u) => u.config.pool.warm && previous?.upstreams.get(u.name) !== u).map((u) => u.warm()));
  return rt;
}

/**
 * Check a policy's steps without a runtime: plugin known, `when` compiles, params match the
 * plugin's schema, and the plugin's own checks at create time (core/step-check.ts), against what
 * the config declares. What `validate` can still say about policies when the main config is broken.
 */
export async function checkPolicySteps(lp: LoadedPolicy, plugins: ReadonlyArray<PluginDefinition<unknown>> | ReadonlyMap<string, PluginDefinition<unknown>>, errors: GatewayError[], declared: Declared = {}): Promise<void> {
  const byName = plugins instanceof Map ? plugins : new Map((plugins as ReadonlyArray<PluginDefinition<unknown>>).map((p) => [p.name, p]));
  const env = checkEnv(declared, lp);
  try {
    for (let i = 0; i < lp.policy.steps.length; i++) await buildStep(lp, i, byName, env, errors);
  } finally {
    await runClosers(env.closers);
  }
}

async function buildStep(
  lp: LoadedPolicy, i: number, byName: ReadonlyMap<string, PluginDefinition<unknown>>, env: StepEnv, errors: GatewayError[],
): Promise<Omit<CompiledStep, 'index'> | undefined> {
  const sc = lp.policy.steps[i]!;
  const at = ['steps', i];
  const loc = lp.source.locate(at);
  const where = `${lp.file}:${loc.line ?? 0}`;
  const plugin = byName.get(sc.use);
  if (!plugin) {
    errors.push(new GatewayError('GW_ERR_CONFIG_UNKNOWN_PLUGIN', [sc.use], {
      location: lp.source.locate([...at, 'use']),
      message: `Unknown plugin "${sc.use}" (known: ${[...byName.keys()].sort().join(', ')})`,
    }));
    return undefined;
  }
  let when;
  if (sc.when !== undefined) {
    try {
      when = compileCondition(sc.when);
    } catch (e) {
      errors.push(new GatewayError('GW_ERR_CONFIG_CONDITION', [e instanceof ConditionError ? e.message : String(e)], { location: lp.source.locate([...at, 'when']) }));
    }
  }
  const params = sc.params ?? {};
  if (!validateInto(validatorFor(paramsAjv, plugin.paramsSchema), params, lp.source, lp.file, errors, 'GW_ERR_CONFIG_PLUGIN_PARAMS', [...at, 'params'], [sc.use])) return undefined;
  let step: Step;
  try {
    const location = lp.source.locate([...at, 'params']);
    const ctx = createPluginContext({
      plugin: plugin.name, where, location, configDir: lp.source.file.replace(/\/[^/]*$/, ''),
      log: env.log, metrics: env.registry, upstreams: env.clients, models: env.modelDefaults,
      auth: env.auth, sharedStore: env.sharedStore, closers: env.closers,
    });
    step = await createStep(plugin, params, ctx, location);
  } catch (e) {
    errors.push(located(e, lp.source.locate([...at, 'params'])));
    return undefined;
  }
  if (when === undefined && sc.when !== undefined) return undefined;
  return { use: sc.use, name: sc.name ?? sc.use, where, policy: lp.policy.name, when, whenSource: sc.when, step };
}

/** Give an error a location if it has none. */
function located(e: unknown, location: { file: string; line?: number; column?: number; path?: string }): GatewayError {
  if (e instanceof GatewayError) {
    return e.location ? e : new GatewayError(e.code, [], { message: e.message, location, details: e.details });
  }
  return new GatewayError('GW_ERR_CONFIG_INVALID', [e instanceof Error ? e.message : String(e)], { location });
}
