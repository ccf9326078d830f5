/**
 * Builds the `PluginContext` each step's `create` receives. The runtime builds one per step;
 * tests build them directly (`createPluginContext({...})`) to exercise a plugin without a server.
 */
import { Registry } from 'prom-client';
import { GatewayError } from './errors.ts';
import type { SourceLocation } from './errors.ts';
import type { AuthRuntime, Logger, PluginContext, UpstreamClient } from './types.ts';
import { STORE_KEY } from './store/types.ts';
import type { SharedStore } from './store/types.ts';

export interface PluginContextOptions {
  /** Plugin name (for `shared` keys). */
  plugin: string;
  where?: string;
  location?: SourceLocation;
  configDir?: string;
  log?: Logger;
  metrics?: Registry;
  upstreams?: ReadonlyMap<string, UpstreamClient>;
  models?: ReadonlyMap<string, { model: string; upstream: string; upstreamModel: string }>;
  auth?: AuthRuntime;
  /** Store that outlives reloads (the gateway passes one Map for its whole life). */
  sharedStore?: Map<string, unknown>;
  /** Receives cleanup functions. */
  closers?: Array<() => void | Promise<void>>;
  /** The shared store; default: the one the gateway keeps in `sharedStore` (none: in process). */
  store?: SharedStore;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {}, debug() {} };

export function createPluginContext(o: PluginContextOptions): PluginContext {
  const upstreams = o.upstreams ?? new Map<string, UpstreamClient>();
  const store = o.sharedStore ?? new Map<string, unknown>();
  const closers = o.closers ?? [];
  const where = o.where ?? o.plugin;
  const location: SourceLocation = o.location ?? { file: where };
  return {
    where,
    configDir: o.configDir ?? process.cwd(),
    log: o.log ?? silentLogger,
    metrics: o.metrics ?? new Registry(),
    upstreamNames: new Set(upstreams.keys()),
    models: o.models ?? new Map(),
    auth: o.auth,
    store: o.store ?? (store.get(STORE_KEY) as SharedStore | undefined),
    upstream(name) {
      const u = upstreams.get(name);
      if (!u) throw new GatewayError('GW_ERR_CONFIG_UNKNOWN_UPSTREAM', [name], { location });
      return u;
    },
    shared<T>(key: string, init: () => T): T {
      const k = `${o.plugin}:${key}`;
      if (!store.has(k)) store.set(k, init());
      return store.get(k) as T;
    },
    error(message, paramsPath) {
      return new GatewayError('GW_ERR_CONFIG_PLUGIN_PARAMS', [o.plugin, paramsPath ? `${paramsPath}: ${message}` : message], {
        location: { ...location, path: paramsPath ? `params.${paramsPath}` : location.path },
      });
    },
    onClose(fn) { closers.push(fn); },
  };
}

/** What a log line about a failing step names: its plugin and the file the plugin came from. */
export interface StepOrigin { readonly plugin: string; readonly file: string }
const origins = new WeakMap<object, StepOrigin>();
/** Remember where a Step came from (core/plugin-loader.ts `createStep`; read only on failure). */
export function recordStepOrigin(step: object, origin: StepOrigin): void { origins.set(step, origin); }
/** The plugin and file of a Step built by `createStep`, if it was. */
export function stepOrigin(step: object): StepOrigin | undefined { return origins.get(step); }

/** A value for a message: its type, and short primitives as they are. */
export function describe(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'number' || typeof v === 'boolean') return `the ${typeof v} ${String(v)}`;
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}
