/**
 * Checking a policy's steps without a runtime to run them on: each step's plugin is created (so
 * its own param checks run, e.g. traffic-split's "unknown upstream") against stand-ins for what
 * the runtime would hand it, and dropped. `validate` does this when the main config is broken,
 * and the runtime for the steps of a disabled policy, so enabling it later cannot fail.
 *
 * The stand-ins never serve a request: an upstream client that refuses, an auth service that
 * verifies nothing, a store and metrics registry of their own, closers run right after.
 */
import { Registry } from 'prom-client';
import { GatewayError } from './errors.ts';
import type { LoadedPolicy } from './config/load.ts';
import { silentLogger } from './plugin-context.ts';
import type { AuthRuntime, Logger, UpstreamClient } from './types.ts';

export interface ModelDefault { model: string; upstream: string; upstreamModel: string }

/** What a step's plugin is created with (core/runtime.ts buildStep). */
export interface StepEnv {
  log: Logger;
  registry: Registry;
  sharedStore: Map<string, unknown>;
  clients: ReadonlyMap<string, UpstreamClient>;
  modelDefaults: ReadonlyMap<string, ModelDefault>;
  auth: AuthRuntime | undefined;
  closers: Array<() => void | Promise<void>>;
}

/**
 * What the main config declares, for steps to refer to. A field left undefined is not known (the
 * main file did not read that far): then every name a policy's steps mention counts as declared,
 * so a broken main file adds no "unknown upstream" of its own and the steps' other checks still run.
 */
export interface Declared {
  upstreams?: readonly string[];
  models?: ReadonlyMap<string, ModelDefault>;
  /** Whether the config has an `auth:` section. */
  auth?: boolean;
}

const isMapping = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** What the main file's value (schema-valid or not) declares, as far as it reads. */
export function declaredIn(main: unknown): Declared {
  if (!isMapping(main)) return {};
  const d: { upstreams?: string[]; models?: Map<string, ModelDefault>; auth: boolean } = { auth: main.auth !== undefined };
  if (isMapping(main.upstreams)) d.upstreams = Object.keys(main.upstreams);
  if (isMapping(main.models)) {
    d.models = new Map();
    for (const [name, m] of Object.entries(main.models)) {
      const o = isMapping(m) ? m : {};
      const first = Array.isArray(o.deployments) && isMapping(o.deployments[0]) ? o.deployments[0].upstream : undefined;
      const upstream = typeof o.upstream === 'string' ? o.upstream : typeof first === 'string' ? first : '';
      const route = { model: name, upstream, upstreamModel: typeof o.upstreamModel === 'string' ? o.upstreamModel : name };
      d.models.set(name, route);
      if (Array.isArray(o.aliases)) for (const a of o.aliases) if (typeof a === 'string') d.models.set(a, route);
    }
  }
  return d;
}

/** An environment to create a policy's steps in and drop them; run `env.closers` when done. */
export function checkEnv(declared: Declared, lp: LoadedPolicy): StepEnv {
  const mentioned = declared.upstreams && declared.models ? [] : [...stringsIn(lp.policy.steps)];
  const upstreams = declared.upstreams ?? mentioned;
  return {
    log: silentLogger,
    registry: new Registry(),
    sharedStore: new Map(),
    clients: new Map(upstreams.map((n) => [n, standInClient(n)])),
    modelDefaults: declared.models ?? new Map(mentioned.map((s) => [s, { model: s, upstream: s, upstreamModel: s }])),
    auth: declared.auth === false ? undefined : standInAuth,
    closers: [],
  };
}

/** An upstream client for an upstream that is declared but has none (never called). */
export function standInClient(name: string): UpstreamClient {
  return { name, send: () => Promise.reject(new GatewayError('GW_ERR_UPSTREAM_UNAVAILABLE', [name])) };
}

/** The auth service a step sees when the config has an `auth:` section that did not compile. */
export const standInAuth: AuthRuntime = {
  verify() { throw new GatewayError('GW_ERR_AUTH_INVALID_SIGNATURE', []); },
  isRevoked: () => true,
  reject: (code) => new GatewayError(code, []),
};

/** Run closers, ignoring their failures. */
export async function runClosers(closers: ReadonlyArray<() => void | Promise<void>>): Promise<void> {
  await Promise.allSettled(closers.map((c) => Promise.resolve().then(c)));
}

/** Every string (keys too) in a value. */
function stringsIn(v: unknown, out = new Set<string>()): Set<string> {
  if (typeof v === 'string') out.add(v);
  else if (Array.isArray(v)) for (const x of v) stringsIn(x, out);
  else if (isMapping(v)) for (const [k, x] of Object.entries(v)) { out.add(k); stringsIn(x, out); }
  return out;
}
